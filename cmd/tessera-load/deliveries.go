package main

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"time"
)

// deliveryTally follows, across the receivers of a fan-out, when each sent message
// reached each receiver. fanout and fanout-ws share it.
type deliveryTally struct {
	ids       []string    // event ID of message i; "" if its send failed
	sendStart []time.Time // when message i's send began
	sent      map[string]int
	lat       []time.Duration // one per (message, receiver) delivery
	toAll     []time.Duration // per message: until the last receiver had it
	gotAll    []int           // per message: receivers that had it
	last      time.Time       // the last delivery

	duplicates, missing, unexpected int
}

func newDeliveryTally(ids []string, sendStart []time.Time) *deliveryTally {
	t := &deliveryTally{
		ids: ids, sendStart: sendStart, sent: make(map[string]int, len(ids)),
		toAll: make([]time.Duration, len(ids)), gotAll: make([]int, len(ids)),
	}
	for i, id := range ids {
		if id == "" {
			continue
		}
		if _, dup := t.sent[id]; dup {
			t.duplicates++ // the server gave two sends one event ID
		}
		t.sent[id] = i
	}
	return t
}

// add counts one receiver's deliveries: event ID -> when it arrived.
func (t *deliveryTally) add(seen map[string]time.Time) {
	for i, id := range t.ids {
		if id == "" {
			continue
		}
		at, ok := seen[id]
		if !ok {
			t.missing++
			continue
		}
		d := at.Sub(t.sendStart[i])
		t.lat = append(t.lat, d)
		t.toAll[i] = max(t.toAll[i], d)
		t.gotAll[i]++
		if at.After(t.last) {
			t.last = at
		}
	}
	for id := range seen {
		if _, ok := t.sent[id]; !ok {
			t.unexpected++
		}
	}
}

// result is the delivery count, the per-delivery latencies, the latencies
// until every receiver had a message, and the seconds from t0 to the last
// delivery (0 if none).
func (t *deliveryTally) result(receivers int, t0 time.Time) (int, latencyStats, latencyStats, float64) {
	var all []time.Duration
	for i, n := range t.gotAll {
		if n == receivers {
			all = append(all, t.toAll[i])
		}
	}
	var secs float64
	if !t.last.IsZero() {
		secs = seconds(t.last.Sub(t0))
	}
	return len(t.lat), summarize(t.lat), summarize(all), secs
}

// fanoutSetup registers a sender and n receivers, has the sender create a
// public room named for the scenario, and has every receiver join it.
func fanoutSetup(ctx context.Context, e *env, n int, scenario string) (user, []user, string, error) {
	names := []string{"sender"}
	for i := range n {
		names = append(names, fmt.Sprintf("recv%d", i))
	}
	e.logf("setup: registering %d users", len(names))
	users, err := e.users.registerAll(ctx, names)
	if err != nil {
		return user{}, nil, "", fmt.Errorf("setup: %w", err)
	}
	sender, receivers := users[0], users[1:]
	var roomID string
	err = e.c.retry429(ctx, "createRoom", func() (err error) {
		roomID, err = createRoom(ctx, e.c, sender.AccessToken, map[string]any{
			"preset": "public_chat", "name": "tessera-load " + scenario + " " + e.runID,
		})
		return err
	})
	if err != nil {
		return user{}, nil, "", fmt.Errorf("setup: %w", err)
	}
	e.logf("setup: %d receivers joining %s", len(receivers), roomID)
	err = forEach(ctx, len(receivers), joinParallel, func(ctx context.Context, i int) error {
		return e.c.retry429(ctx, "join", func() error {
			return joinRoom(ctx, e.c, receivers[i].AccessToken, roomID)
		})
	})
	if err != nil {
		return user{}, nil, "", fmt.Errorf("setup: %w", err)
	}
	return sender, receivers, roomID, nil
}

// pacedSends is what the measured phase of a fan-out scenario sent: the
// start and event ID of each message (zero where a send failed), the
// latency of each successful send, and the failures.
type pacedSends struct {
	t0       time.Time
	start    []time.Time
	ids      []string
	lat      []time.Duration
	errors   int
	firstErr error
	fatal    bool // the run cannot go on (firstErr says why)
}

// sendPaced sends n text messages into roomID, message i at t0 + i×interval
// (or when the send before it returns, if that is later), until ctx ends
// or a fatal error. name ("fanout", "fanout-ws") marks the bodies and
// transaction IDs.
func sendPaced(ctx context.Context, e *env, token, roomID, name string, n int, interval time.Duration) *pacedSends {
	ps := &pacedSends{start: make([]time.Time, n), ids: make([]string, n), t0: time.Now()}
	for i := range n {
		if !sleepCtx(ctx, time.Until(ps.t0.Add(time.Duration(i)*interval))) {
			break
		}
		txnID := fmt.Sprintf("%s.%s.%d", e.runID, strings.ReplaceAll(name, "-", ""), i)
		body := fmt.Sprintf("tessera-load %s: %s message %d", e.runID, name, i)
		start := time.Now()
		id, err := sendText(ctx, e.c, token, roomID, txnID, body)
		if err != nil {
			if ctx.Err() != nil {
				break
			}
			ps.errors++
			if ps.firstErr == nil {
				ps.firstErr = fmt.Errorf("send: %w", err)
			}
			if isFatal(err) {
				ps.fatal = true
				break
			}
			continue
		}
		ps.lat = append(ps.lat, time.Since(start))
		ps.start[i], ps.ids[i] = start, id
	}
	return ps
}

// seenEvents is what one fan-out receiver has seen: when each message
// event first arrived, repeats, and limited timelines. Its owner holds mu.
type seenEvents struct {
	mu      sync.Mutex
	seen    map[string]time.Time // event ID -> when the response carrying it was read
	dups    int
	limited int
}

// record notes the room's timeline of one response read at at. The
// caller holds mu.
func (r *seenEvents) record(jr syncJoinedRoom, at time.Time) {
	r.recordTimeline(jr.Timeline.Events, jr.Timeline.Limited, at)
}

// recordTimeline notes a room's timeline events (and whether the timeline
// was limited) of one response read at at. The caller holds mu.
func (r *seenEvents) recordTimeline(events []syncEvent, limited bool, at time.Time) {
	if limited {
		r.limited++
	}
	for _, ev := range events {
		if ev.Type != "m.room.message" {
			continue
		}
		if _, dup := r.seen[ev.EventID]; dup {
			r.dups++
		} else {
			r.seen[ev.EventID] = at
		}
	}
}

// awaitDeliveries waits until every receiver has seen every sent event
// (ids; "" for a failed send), drain has passed since the call, or ctx
// ends. notify is signalled whenever a receiver gets room events.
func awaitDeliveries(ctx context.Context, e *env, recv []*fanoutReceiver, ids []string, notify <-chan struct{}, drain time.Duration) {
	complete := func() bool {
		for _, r := range recv {
			r.mu.Lock()
			for _, id := range ids {
				if _, ok := r.seen[id]; !ok && id != "" {
					r.mu.Unlock()
					return false
				}
			}
			r.mu.Unlock()
		}
		return true
	}
	timer := time.NewTimer(drain)
	defer timer.Stop()
	for !complete() {
		select {
		case <-notify:
		case <-timer.C:
			e.logf("measuring: -drain of %v passed with deliveries missing", drain)
			return
		case <-ctx.Done():
			return
		}
	}
}

// awaitPollsSent waits until n long-polls have been written (one signal
// each on started), stopping the polls if that takes longer than within.
func awaitPollsSent(ctx context.Context, e *env, started <-chan struct{}, n int, within time.Duration, stopPolls context.CancelCauseFunc) {
	e.logf("setup: waiting for %d long-polls to be sent", n)
	timer := time.NewTimer(within)
	defer timer.Stop()
	for i := 0; i < n; i++ {
		select {
		case <-started:
		case <-timer.C:
			stopPolls(fmt.Errorf("setup: only %d of %d long-polls were sent within %s", i, n, within))
		case <-ctx.Done():
		}
		if ctx.Err() != nil {
			return
		}
	}
}
