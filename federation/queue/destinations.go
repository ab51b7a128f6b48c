package queue

import (
	"context"
	"fmt"
	"sort"
	"time"

	"github.com/matrix-org/gomatrixserverlib/spec"
)

// Health is what sending to a destination has come to since this server
// started, for the admin API's federation destinations.
type Health struct {
	Destination spec.ServerName
	// FailureTS is when the current run of failures began (0: none).
	FailureTS int64
	// RetryLastTS is the last failed attempt; RetryInterval the wait
	// before the next one (both 0 when sends succeed).
	RetryLastTS   int64
	RetryInterval time.Duration
	// LastSuccessTS is the last delivered transaction (0: none yet).
	LastSuccessTS int64
}

func (q *Queue) healthOf(dest spec.ServerName) *Health {
	h := q.health[dest]
	if h == nil {
		h = &Health{Destination: dest}
		q.health[dest] = h
	}
	return h
}

func (q *Queue) noteSent(dest spec.ServerName) {
	q.mu.Lock()
	defer q.mu.Unlock()
	h := q.healthOf(dest)
	h.FailureTS, h.RetryLastTS, h.RetryInterval = 0, 0, 0
	h.LastSuccessTS = time.Now().UnixMilli()
}

func (q *Queue) noteFailed(dest spec.ServerName, retryIn time.Duration) {
	q.mu.Lock()
	defer q.mu.Unlock()
	h := q.healthOf(dest)
	now := time.Now().UnixMilli()
	if h.FailureTS == 0 {
		h.FailureTS = now
	}
	h.RetryLastTS, h.RetryInterval = now, retryIn
}

// Destinations lists every destination sent to since start-up or with
// something queued, by name.
func (q *Queue) Destinations(ctx context.Context) ([]Health, error) {
	queued, err := queuedDestinations(ctx, q.db)
	if err != nil {
		return nil, fmt.Errorf("federation destinations: %w", err)
	}
	q.mu.Lock()
	out := make([]Health, 0, len(q.health)+len(queued))
	for _, h := range q.health {
		out = append(out, *h)
	}
	for _, d := range queued {
		if _, ok := q.health[d]; !ok && d != q.cfg.Origin {
			out = append(out, Health{Destination: d})
		}
	}
	q.mu.Unlock()
	sort.Slice(out, func(i, j int) bool { return out[i].Destination < out[j].Destination })
	return out, nil
}

// ResetBackoff ends a destination's backoff: a waiting retry goes now and
// the failures are forgotten. It reports whether the destination was
// backing off.
func (q *Queue) ResetBackoff(dest spec.ServerName) bool {
	q.mu.Lock()
	h := q.health[dest]
	backingOff := h != nil && h.FailureTS != 0
	if backingOff {
		h.FailureTS, h.RetryLastTS, h.RetryInterval = 0, 0, 0
	}
	q.mu.Unlock()
	if backingOff {
		q.Wake(dest)
	}
	return backingOff
}
