package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coder/websocket"
)

// fanoutWSScenario is fanout over Tessera's sync stream (docs/websocket.md)
// instead of long-polled /sync: S receivers, each its own user and device,
// each holding one WebSocket to the stream; one sender sends N messages
// into their room over HTTP. It measures, for every (message, receiver)
// pair, the time from just before the send request is issued until the
// receiver has read the stream message that holds the event.
//
// The stream is a Tessera extension, so this scenario runs against Tessera
// only; the HTTP fanout scenario is the one to compare servers with.
type fanoutWSScenario struct {
	fanoutParams
}

// streamPath is the sync stream's endpoint; the subprotocol is m.json.
const streamPath = "/_matrix/client/unstable/org.tessera.stream"

func (s *fanoutWSScenario) addFlags(fs *flag.FlagSet) {
	fs.IntVar(&s.receivers, "s", 50, "receivers, each a separate user holding one sync stream WebSocket")
	fs.IntVar(&s.messages, "n", 100, "messages the sender sends, one after another")
	fs.DurationVar(&s.interval, "interval", 15*time.Millisecond,
		"time from the start of one send to the start of the next (later if a send takes longer)")
	fs.DurationVar(&s.drain, "drain", 10*time.Second,
		"after the last send, how long to wait for deliveries still outstanding")
}

// The WebSockets are hijacked connections, outside the pool; the pool
// serves setup and the sender.
func (s *fanoutWSScenario) conns() int { return joinParallel + 1 }

type fanoutWSReport struct {
	Scenario   string  `json:"scenario"`
	HS         string  `json:"hs"`
	Receivers  int     `json:"receivers"`
	Messages   int     `json:"messages"` // planned
	IntervalMS float64 `json:"interval_ms"`
	Sent       int     `json:"sent"` // sends answered with an event_id
	SendErrors int     `json:"send_errors"`
	// Expected is sent × receivers; Deliveries the (message, receiver)
	// pairs that arrived; Missing the ones that did not within -drain.
	Expected   int `json:"expected"`
	Deliveries int `json:"deliveries"`
	Missing    int `json:"missing"`
	// Duplicates are events a receiver was given more than once;
	// Unexpected are m.room.message events in the room that no send of
	// this run returned.
	Duplicates       int `json:"duplicates"`
	Unexpected       int `json:"unexpected"`
	LimitedResponses int `json:"limited_responses"` // timelines with limited: true (events skipped)
	StreamMessages   int `json:"stream_messages"`   // sync messages in the measured phase
	StreamErrors     int `json:"stream_errors"`     // streams that ended early
	// ConnectMS is the latency of connecting a stream until its first
	// message (the initial sync) has been read.
	Connect latencyStats `json:"connect"`
	// Seconds is from the first send to the last delivery.
	Seconds float64 `json:"seconds"`
	// Delivery latency over every (message, receiver) pair.
	latencyStats
	// AllReceivers is, per message, the time until the last receiver had
	// it (over the messages every receiver got).
	AllReceivers latencyStats `json:"all_receivers"`
	// Send is the latency of the sends themselves (until the event_id).
	Send       latencyStats `json:"send"`
	FirstError string       `json:"first_error,omitempty"`
}

func (r *fanoutWSReport) human() string {
	var b strings.Builder
	fmt.Fprintf(&b, "fanout-ws: 1 sender, %d messages %s apart, to %d receivers on the sync stream (WebSocket)\n",
		r.Messages, time.Duration(r.IntervalMS*float64(time.Millisecond)), r.Receivers)
	fmt.Fprintf(&b, "  connect    %s\n", r.Connect)
	fmt.Fprintf(&b, "  sent       %d ok, %d errors; send latency %s\n", r.Sent, r.SendErrors, r.Send)
	fmt.Fprintf(&b, "  delivered  %d of %d (%d missing, %d duplicates, %d unexpected, %d limited timelines) in %s\n",
		r.Deliveries, r.Expected, r.Missing, r.Duplicates, r.Unexpected, r.LimitedResponses, fmtSeconds(r.Seconds))
	fmt.Fprintf(&b, "  stream     %d messages, %d streams ended early\n", r.StreamMessages, r.StreamErrors)
	fmt.Fprintf(&b, "  delivery   %s\n", r.latencyStats)
	fmt.Fprintf(&b, "  to all     %s\n", r.AllReceivers)
	if r.FirstError != "" {
		fmt.Fprintf(&b, "  first error: %s\n", r.FirstError)
	}
	return b.String()
}

// wsReceiver is one receiver's stream and what it saw.
type wsReceiver struct {
	conn *websocket.Conn

	seenEvents
	messages int
	failed   bool
	firstErr error
}

// wsMessage is the part of a stream message the scenario reads: a sync
// response (next_batch set) or the answer to a request (ignored).
type wsMessage struct {
	NextBatch string `json:"next_batch"`
	Rooms     struct {
		Join map[string]syncJoinedRoom `json:"join"`
	} `json:"rooms"`
	ToDevice struct {
		Events []json.RawMessage `json:"events"`
	} `json:"to_device"`
}

// dialStream opens the sync stream for token and reads its first message.
func dialStream(ctx context.Context, e *env, token string) (*websocket.Conn, *wsMessage, error) {
	u, err := url.Parse(e.hs + streamPath)
	if err != nil {
		return nil, nil, err
	}
	u.Scheme = map[string]string{"http": "ws", "https": "wss"}[u.Scheme]
	dctx, cancel := context.WithTimeout(ctx, e.c.timeout)
	defer cancel()
	c, resp, err := websocket.Dial(dctx, u.String(), &websocket.DialOptions{
		HTTPClient:   e.c.hc,
		HTTPHeader:   http.Header{"Authorization": {"Bearer " + token}, "User-Agent": {"tessera-load"}},
		Subprotocols: []string{"m.json"},
	})
	if err != nil {
		if resp != nil && resp.StatusCode != http.StatusSwitchingProtocols {
			me := &matrixError{Method: http.MethodGet, Path: streamPath, Status: resp.StatusCode}
			if resp.Body != nil {
				_ = json.NewDecoder(resp.Body).Decode(me)
			}
			return nil, nil, me
		}
		return nil, nil, fmt.Errorf("GET %s: %w", streamPath, err)
	}
	c.SetReadLimit(maxResponseBytes)
	// The first read has the request timeout too; the context is cleared
	// once it returns, so it does not close the stream later.
	rctx, rcancel := context.WithTimeout(ctx, e.c.timeout)
	defer rcancel()
	_, data, err := c.Read(rctx)
	if err != nil {
		c.CloseNow()
		return nil, nil, fmt.Errorf("%s: first message: %w", streamPath, err)
	}
	var m wsMessage
	if err := json.Unmarshal(data, &m); err != nil || m.NextBatch == "" {
		c.CloseNow()
		return nil, nil, fmt.Errorf("%s: the first message is not a sync response: %.200s", streamPath, data)
	}
	return c, &m, nil
}

func (s *fanoutWSScenario) run(ctx context.Context, e *env) (report, error) {
	sender, receivers, roomID, err := fanoutSetup(ctx, e, s.receivers, "fanout-ws")
	if err != nil {
		return nil, err
	}

	// Each receiver connects once everyone has joined; its first message
	// is its initial sync, so the stream then has nothing to report.
	e.logf("setup: connecting %d streams", len(receivers))
	recv := make([]*wsReceiver, s.receivers)
	defer func() {
		for _, r := range recv {
			if r != nil {
				r.conn.CloseNow()
			}
		}
	}()
	connectLat := make([]time.Duration, s.receivers)
	err = forEach(ctx, len(receivers), syncParallel, func(ctx context.Context, i int) error {
		start := time.Now()
		c, first, err := dialStream(ctx, e, receivers[i].AccessToken)
		if err != nil {
			return err
		}
		connectLat[i] = time.Since(start)
		recv[i] = &wsReceiver{conn: c, seenEvents: seenEvents{seen: make(map[string]time.Time, s.messages)}}
		if _, ok := first.Rooms.Join[roomID]; !ok {
			return fmt.Errorf("the first stream message of %s does not list the room %s it joined", receivers[i].UserID, roomID)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("setup: %w", err)
	}

	var stopping atomic.Bool         // the measured phase is over: streams end
	notify := make(chan struct{}, 1) // a receiver got room events
	var wg sync.WaitGroup
	for _, r := range recv {
		wg.Go(func() { s.read(ctx, r, roomID, &stopping, notify) })
	}
	// Let the server settle into its waits before the first message.
	sleepCtx(ctx, 200*time.Millisecond)

	e.logf("measuring: %d messages, %v apart, to %d streams", s.messages, s.interval, s.receivers)
	ps := sendPaced(ctx, e, sender.AccessToken, roomID, "fanout-ws", s.messages, s.interval)
	sendStart, ids, sendLat, sendErrors, firstErr, t0 := ps.start, ps.ids, ps.lat, ps.errors, ps.firstErr, ps.t0

	// Wait for the deliveries still on their way.
	complete := func() bool {
		for _, r := range recv {
			r.mu.Lock()
			failed := r.failed
			done := true
			for _, id := range ids {
				if _, ok := r.seen[id]; !ok && id != "" {
					done = false
					break
				}
			}
			r.mu.Unlock()
			if !done && !failed {
				return false
			}
		}
		return true
	}
	drain := time.NewTimer(s.drain)
wait:
	for !complete() {
		select {
		case <-notify:
		case <-drain.C:
			e.logf("measuring: -drain of %v passed with deliveries missing", s.drain)
			break wait
		case <-ctx.Done():
			break wait
		}
	}
	drain.Stop()
	stopping.Store(true)
	var closing sync.WaitGroup
	for _, r := range recv {
		closing.Go(func() { r.conn.Close(websocket.StatusNormalClosure, "") })
	}
	closing.Wait()
	wg.Wait()
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("measured phase stopped: %w", context.Cause(ctx))
	}

	rep := &fanoutWSReport{
		Scenario: "fanout-ws", HS: e.hs, Receivers: s.receivers, Messages: s.messages,
		IntervalMS: ms(s.interval), Sent: len(sendLat), SendErrors: sendErrors,
		Expected: len(sendLat) * s.receivers, Send: summarize(sendLat), Connect: summarize(connectLat),
	}
	tl := newDeliveryTally(ids, sendStart)
	for _, r := range recv {
		rep.Duplicates += r.dups
		rep.LimitedResponses += r.limited
		rep.StreamMessages += r.messages
		if r.failed {
			rep.StreamErrors++
			if firstErr == nil {
				firstErr = r.firstErr
			}
		}
		tl.add(r.seen)
	}
	rep.Duplicates += tl.duplicates
	rep.Missing, rep.Unexpected = tl.missing, tl.unexpected
	rep.Deliveries, rep.latencyStats, rep.AllReceivers, rep.Seconds = tl.result(s.receivers, t0)
	var failed error
	if firstErr != nil {
		rep.FirstError = firstErr.Error()
		failed = fmt.Errorf("%d sends failed and %d streams ended early; the first error: %w", sendErrors, rep.StreamErrors, firstErr)
	}
	if rep.Missing > 0 || rep.Duplicates > 0 || rep.Deliveries != s.messages*s.receivers {
		failed = errors.Join(failed, fmt.Errorf("%d of %d deliveries arrived (%d missing, %d duplicates)",
			rep.Deliveries, s.messages*s.receivers, rep.Missing, rep.Duplicates))
	}
	return rep, failed
}

// read is one receiver: it reads stream messages until ctx ends, noting
// when each m.room.message event in the room arrived. A message with
// to-device events (none are expected here) is acknowledged, as the
// protocol asks, so the stream goes on.
func (s *fanoutWSScenario) read(ctx context.Context, r *wsReceiver, roomID string, stopping *atomic.Bool, notify chan<- struct{}) {
	for {
		// ctx is the whole run's (its deadline drops the connection); the
		// measured phase ends with a close handshake instead.
		_, data, err := r.conn.Read(ctx)
		at := time.Now()
		if err != nil {
			if !stopping.Load() && ctx.Err() == nil {
				r.mu.Lock()
				r.failed = true
				r.firstErr = fmt.Errorf("stream: %w", err)
				r.mu.Unlock()
				select {
				case notify <- struct{}{}:
				default:
				}
			}
			return
		}
		var m wsMessage
		if err := json.Unmarshal(data, &m); err != nil || m.NextBatch == "" {
			continue // an answer to the ack, or not for us
		}
		jr, ok := m.Rooms.Join[roomID]
		r.mu.Lock()
		r.messages++
		if ok {
			r.record(jr, at)
		}
		r.mu.Unlock()
		if len(m.ToDevice.Events) > 0 {
			ack, _ := json.Marshal(map[string]any{"id": "ack", "method": "ack", "params": map[string]string{"next_batch": m.NextBatch}})
			if err := r.conn.Write(ctx, websocket.MessageText, ack); err != nil {
				continue // the read fails next
			}
		}
		if ok {
			select {
			case notify <- struct{}{}:
			default:
			}
		}
	}
}
