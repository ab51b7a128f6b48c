package main

import (
	"context"
	"errors"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// What send counts for failure runs (docs/scaling.md): per entry point and
// per room.

// entryTally counts one entry point's requests.
type entryTally struct {
	answered  atomic.Int64 // requests it answered, with any status
	failovers atomic.Int64 // requests it did not answer, handed to the next entry
}

type entryReport struct {
	URL       string `json:"url"`
	Answered  int64  `json:"answered"`
	Failovers int64  `json:"failovers"`
}

// roomTally is what happened to one room's sends; its senders share it.
type roomTally struct {
	mu        sync.Mutex
	successes []time.Time
	errors    map[string]int // by status ("502"), or "timeout", or "conn" (no entry answered)
	retries   int
	gaveUp    int
}

func (r *roomTally) succeeded(at time.Time) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.successes = append(r.successes, at)
}

func (r *roomTally) failed(key string, retry, gaveUp bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.errors == nil {
		r.errors = map[string]int{}
	}
	r.errors[key]++
	if retry {
		r.retries++
	}
	if gaveUp {
		r.gaveUp++
	}
}

// roomReport is one room's figures. The longest gap is the longest time in
// the measured phase (from its start, between acknowledgements, to its end)
// in which no send into the room was acknowledged: the room's outage.
type roomReport struct {
	RoomID         string         `json:"room_id"`
	CreatedVia     int            `json:"created_via"` // index of the entry point: -hs is 0, then -via
	Acknowledged   int            `json:"acknowledged"`
	Errors         map[string]int `json:"errors"`
	Retries        int            `json:"retries"`
	Unacknowledged int            `json:"unacknowledged"`
	LongestGapMS   float64        `json:"longest_gap_ms"`
	GapFromUnixMS  int64          `json:"gap_from_unix_ms"`
	GapToUnixMS    int64          `json:"gap_to_unix_ms"`
	// With -verify.
	Lost       int `json:"lost"`
	Duplicated int `json:"duplicated"`
}

func (r *roomTally) report(roomID string, via int, start, end time.Time) roomReport {
	r.mu.Lock()
	defer r.mu.Unlock()
	rr := roomReport{
		RoomID: roomID, CreatedVia: via, Acknowledged: len(r.successes), Errors: map[string]int{},
		Retries: r.retries, Unacknowledged: r.gaveUp,
	}
	for k, v := range r.errors {
		rr.Errors[k] = v
	}
	times := append([]time.Time{start}, r.successes...)
	slices.SortFunc(times, func(a, b time.Time) int { return a.Compare(b) })
	times = append(times, end)
	var gap time.Duration
	for i := 1; i < len(times); i++ {
		if d := times[i].Sub(times[i-1]); d > gap {
			gap = d
			rr.GapFromUnixMS, rr.GapToUnixMS = times[i-1].UnixMilli(), times[i].UnixMilli()
		}
	}
	rr.LongestGapMS = ms(gap)
	return rr
}

// errorKey is how an error is counted in a room's errors.
func errorKey(err error) string {
	var me *matrixError
	switch {
	case errors.As(err, &me):
		return strconv.Itoa(me.Status)
	case errors.Is(err, context.DeadlineExceeded):
		return "timeout"
	default:
		return "conn"
	}
}

// sendOne sends one message through entry and, with -retry-for, retries it
// with the same transaction ID until it is acknowledged or -retry-for has
// passed, as a client does after a 502 or a timeout. A request that an
// entry point does not answer at all (connection refused or reset) goes to
// the next entry at once, as a load balancer hands it to the next backend:
// with the same transaction ID that is safe even if the first got as far as
// the room. It returns the event ID, or the last error.
func (s *sendScenario) sendOne(ctx context.Context, clients []*client, entries []entryTally, room *roomTally,
	token, roomID string, entry int, txnID, body string, t *tally) (string, error) {
	deadline := time.Now().Add(s.retryFor)
	unanswered := 0 // entries in a row that did not answer
	for {
		id, err := sendText(ctx, clients[entry], token, roomID, txnID, body)
		if err == nil {
			entries[entry].answered.Add(1)
			room.succeeded(time.Now())
			return id, nil
		}
		if ctx.Err() != nil {
			return "", err
		}
		var me *matrixError
		key := errorKey(err)
		if errors.As(err, &me) {
			entries[entry].answered.Add(1)
		} else if key == "conn" && unanswered < len(clients)-1 {
			entries[entry].failovers.Add(1)
			unanswered++
			entry = (entry + 1) % len(clients)
			continue
		}
		unanswered = 0
		t.errors++
		if t.firstErr == nil {
			t.firstErr = err
		}
		if isFatal(err) {
			room.failed(key, false, true)
			t.fatal = err
			return "", err
		}
		if s.retryFor == 0 || !time.Now().Before(deadline) {
			room.failed(key, false, true)
			return "", err
		}
		room.failed(key, true, false)
		timer := time.NewTimer(s.retryWait)
		select {
		case <-timer.C:
		case <-ctx.Done():
			timer.Stop()
			return "", err
		}
	}
}

// verifyBodies pages through the room and checks that each acknowledged
// send's message is there exactly once, under the event ID it was
// acknowledged with. It finds the messages by body, which is unique per
// send: a retry that made a second event shows as a duplicate, which
// checking event IDs alone cannot see.
func verifyBodies(ctx context.Context, e *env, reader user, roomID string, sends []sent) (*verifyResult, error) {
	count := make(map[string]int, len(sends))
	acked := make(map[string]string, len(sends))
	for _, s := range sends {
		count[s.body] = 0
		if s.eventID != "" {
			acked[s.body] = s.eventID
		}
	}
	withAckedID := map[string]bool{}
	// Each page holds at least one event, and the room holds little besides
	// what was sent, so this bound is never reached by a working server.
	maxPages := len(sends) + 1000
	pages, _, err := pageBackwards(ctx, e.c, reader.AccessToken, roomID, verifyPageLimit, maxPages, func(ev event) {
		if ev.Type != "m.room.message" {
			return
		}
		n, ok := count[ev.Content.Body]
		if !ok {
			return
		}
		count[ev.Content.Body] = n + 1
		if id, ok := acked[ev.Content.Body]; ok && id == ev.EventID {
			withAckedID[ev.Content.Body] = true
		}
	})
	if err != nil {
		return nil, err
	}
	v := &verifyResult{Pages: pages}
	for _, s := range sends {
		n := count[s.body]
		switch {
		case s.eventID == "" && n > 0:
			v.UnacknowledgedFound++
		case s.eventID != "" && n == 0:
			v.Missing++
		case s.eventID != "" && !withAckedID[s.body]:
			v.WrongID++
		}
		if n > 1 {
			v.Duplicates += n - 1
		}
	}
	v.OK = v.Missing == 0 && v.Duplicates == 0 && v.WrongID == 0
	return v, nil
}
