package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net/http/httptrace"
	"strings"
	"sync"
	"time"
)

// fanoutScenario: S receivers, each its own user and device, sit in one
// room long-polling /sync; one sender sends N messages into the room, one
// after another and a little apart. It measures how long each message takes
// to reach each receiver: from just before its send request is issued until
// the receiver has read the /sync response that holds its event_id. This is
// the notifier and incremental-sync path a chat client lives on.
type fanoutScenario struct {
	fanoutParams
	pollTimeout time.Duration
	via         string // more entry points of the deployment, comma-separated
}

// fanoutParams are what every fanout scenario (fanout, fanout-ws,
// federation) is made of; each sets its own flag defaults.
type fanoutParams struct {
	receivers int
	messages  int
	interval  time.Duration
	drain     time.Duration
}

func (p *fanoutParams) check() error {
	if p.receivers < 1 || p.receivers > 10_000 {
		return errors.New("-s must be between 1 and 10000")
	}
	if p.messages < 1 || p.messages > 100_000 {
		return errors.New("-n must be between 1 and 100000")
	}
	if p.interval < 0 || p.interval > time.Minute {
		return errors.New("-interval must be between 0 and 1m")
	}
	if p.drain <= 0 {
		return errors.New("-drain must be positive")
	}
	return nil
}

// checkPollTimeout is the long-poll scenarios' -poll-timeout check.
func checkPollTimeout(d time.Duration) error {
	if d <= 0 || d > maxPollTimeout {
		return fmt.Errorf("-poll-timeout must be positive and at most %v", maxPollTimeout)
	}
	return nil
}

func (s *fanoutScenario) addFlags(fs *flag.FlagSet) {
	fs.IntVar(&s.receivers, "s", 50, "receivers, each a separate user long-polling /sync")
	fs.IntVar(&s.messages, "n", 100, "messages the sender sends, one after another")
	fs.DurationVar(&s.interval, "interval", 15*time.Millisecond,
		"time from the start of one send to the start of the next (later if a send takes longer)")
	fs.DurationVar(&s.pollTimeout, "poll-timeout", 30*time.Second, "the timeout parameter of each long-poll /sync")
	fs.DurationVar(&s.drain, "drain", 10*time.Second,
		"after the last send, how long to wait for deliveries still outstanding")
	fs.StringVar(&s.via, "via", "",
		"more entry points of the same deployment (comma-separated URLs): receiver i long-polls through entry i mod n")
}

func (s *fanoutScenario) check() error {
	if err := s.fanoutParams.check(); err != nil {
		return err
	}
	if s.via != "" {
		for _, u := range strings.Split(s.via, ",") {
			if err := checkBaseURL("-via", u); err != nil {
				return err
			}
		}
	}
	return checkPollTimeout(s.pollTimeout)
}

// One long-poll per receiver and the sender's connection.
func (s *fanoutScenario) conns() int { return s.receivers + 1 }

type fanoutReport struct {
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
	// this run returned (a send that failed on the client but was stored).
	Duplicates       int `json:"duplicates"`
	Unexpected       int `json:"unexpected"`
	LimitedResponses int `json:"limited_responses"` // timelines with limited: true (events skipped)
	Polls            int `json:"polls"`             // /sync responses in the measured phase
	PollErrors       int `json:"poll_errors"`
	// Seconds is from the first send to the last delivery.
	Seconds float64 `json:"seconds"`
	// Delivery latency over every (message, receiver) pair.
	latencyStats
	// AllReceivers is, per message, the time until the last receiver had it
	// (over the messages every receiver got).
	AllReceivers latencyStats `json:"all_receivers"`
	// Send is the latency of the sends themselves (until the event_id).
	Send       latencyStats `json:"send"`
	FirstError string       `json:"first_error,omitempty"`
}

func (r *fanoutReport) human() string {
	var b strings.Builder
	fmt.Fprintf(&b, "fanout: 1 sender, %d messages %s apart, to %d receivers long-polling /sync\n",
		r.Messages, time.Duration(r.IntervalMS*float64(time.Millisecond)), r.Receivers)
	fmt.Fprintf(&b, "  sent       %d ok, %d errors; send latency %s\n", r.Sent, r.SendErrors, r.Send)
	fmt.Fprintf(&b, "  delivered  %d of %d (%d missing, %d duplicates, %d unexpected, %d limited timelines) in %s\n",
		r.Deliveries, r.Expected, r.Missing, r.Duplicates, r.Unexpected, r.LimitedResponses, fmtSeconds(r.Seconds))
	fmt.Fprintf(&b, "  polls      %d responses, %d errors\n", r.Polls, r.PollErrors)
	fmt.Fprintf(&b, "  delivery   %s\n", r.latencyStats)
	fmt.Fprintf(&b, "  to all     %s\n", r.AllReceivers)
	if r.FirstError != "" {
		fmt.Fprintf(&b, "  first error: %s\n", r.FirstError)
	}
	return b.String()
}

// fanoutReceiver is what one receiver saw.
type fanoutReceiver struct {
	seenEvents
	polls    int
	errors   int
	firstErr error
}

// errPollsStopped ends the long-polls once the measured phase is over.
var errPollsStopped = errors.New("measured phase over")

func (s *fanoutScenario) run(ctx context.Context, e *env) (report, error) {
	sender, receivers, roomID, err := fanoutSetup(ctx, e, s.receivers, "fanout")
	if err != nil {
		return nil, err
	}
	// Each receiver starts from its own initial sync, made once everyone
	// has joined, so the long-polls start with nothing to report.
	e.logf("setup: %d initial syncs", len(receivers))
	since, err := initialSyncs(ctx, e.c, receivers, func(i int, r *syncResponse) error {
		if _, ok := r.Rooms.Join[roomID]; !ok {
			return fmt.Errorf("the initial sync of %s does not list the room %s it joined", receivers[i].UserID, roomID)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("setup: %w", err)
	}

	// The long-polls, spread over the entry points (the sender and the
	// initial syncs use -hs: a since token is good on every process).
	clients := []*client{e.c}
	if s.via != "" {
		for _, u := range strings.Split(s.via, ",") {
			clients = append(clients, newClient(u, e.c.timeout, s.conns(), e.logf))
		}
	}
	pollCtx, stopPolls := context.WithCancelCause(ctx)
	defer stopPolls(errPollsStopped)
	recv := make([]*fanoutReceiver, s.receivers)
	notify := make(chan struct{}, 1) // a receiver got room events
	started := make(chan struct{}, s.receivers)
	// Each response either carries news or comes at the end of a
	// -poll-timeout, and the sender makes at most N pieces of news.
	maxPolls := 4*s.messages + 100
	var wg sync.WaitGroup
	for i := range recv {
		r := &fanoutReceiver{seenEvents: seenEvents{seen: make(map[string]time.Time, s.messages)}}
		recv[i] = r
		wg.Go(func() {
			var once sync.Once
			first := httptrace.WithClientTrace(pollCtx, &httptrace.ClientTrace{
				WroteRequest: func(httptrace.WroteRequestInfo) { once.Do(func() { started <- struct{}{} }) },
			})
			pollReceiver(pollCtx, first, clients[i%len(clients)], receivers[i].AccessToken, roomID, since[i], "", s.pollTimeout, maxPolls, r, stopPolls, notify)
		})
	}
	awaitPollsSent(pollCtx, e, started, s.receivers, 30*time.Second, stopPolls)
	// Let the server take them up before the first message.
	sleepCtx(pollCtx, 200*time.Millisecond)
	if pollCtx.Err() != nil {
		stopPolls(errPollsStopped)
		wg.Wait()
		return nil, context.Cause(pollCtx)
	}

	e.logf("measuring: %d messages, %v apart, to %d receivers", s.messages, s.interval, s.receivers)
	ps := sendPaced(pollCtx, e, sender.AccessToken, roomID, "fanout", s.messages, s.interval)
	if ps.fatal {
		stopPolls(ps.firstErr)
	}
	sendStart, ids, sendLat, sendErrors, firstErr, t0 := ps.start, ps.ids, ps.lat, ps.errors, ps.firstErr, ps.t0

	// Wait for the deliveries still on their way.
	awaitDeliveries(pollCtx, e, recv, ids, notify, s.drain)
	stopPolls(errPollsStopped)
	wg.Wait()
	if cause := context.Cause(pollCtx); !errors.Is(cause, errPollsStopped) {
		return nil, fmt.Errorf("measured phase stopped: %w", cause)
	}

	rep := &fanoutReport{
		Scenario: "fanout", HS: e.hs, Receivers: s.receivers, Messages: s.messages,
		IntervalMS: ms(s.interval), Sent: len(sendLat), SendErrors: sendErrors,
		Expected: len(sendLat) * s.receivers, Send: summarize(sendLat),
	}
	tl := newDeliveryTally(ids, sendStart)
	for _, r := range recv {
		rep.Duplicates += r.dups
		rep.LimitedResponses += r.limited
		rep.Polls += r.polls
		rep.PollErrors += r.errors
		if firstErr == nil && r.firstErr != nil {
			firstErr = r.firstErr
		}
		tl.add(r.seen)
	}
	rep.Duplicates += tl.duplicates
	rep.Missing, rep.Unexpected = tl.missing, tl.unexpected
	rep.Deliveries, rep.latencyStats, rep.AllReceivers, rep.Seconds = tl.result(s.receivers, t0)
	var failed error
	if firstErr != nil {
		rep.FirstError = firstErr.Error()
		failed = fmt.Errorf("%d sends and %d polls failed; the first: %w", sendErrors, rep.PollErrors, firstErr)
	}
	if rep.Missing > 0 || rep.Duplicates > 0 || rep.Deliveries != s.messages*s.receivers {
		failed = errors.Join(failed, fmt.Errorf("%d of %d deliveries arrived (%d missing, %d duplicates)",
			rep.Deliveries, s.messages*s.receivers, rep.Missing, rep.Duplicates))
	}
	return rep, failed
}

// pollReceiver is one receiver of the long-poll fanout scenarios: long-poll
// /sync from since (with filter, if not ""), again at once after each
// response, noting when each m.room.message event in the room arrived,
// until ctx ends or maxPolls responses. The first request goes out with
// firstCtx (which carries its trace). A fatal error stops the run.
func pollReceiver(ctx, firstCtx context.Context, c *client, token, roomID, since, filter string, timeout time.Duration,
	maxPolls int, r *fanoutReceiver, stop context.CancelCauseFunc, notify chan<- struct{}) {
	fail := func(err error) {
		r.mu.Lock()
		defer r.mu.Unlock()
		r.errors++
		if r.firstErr == nil {
			r.firstErr = fmt.Errorf("sync: %w", err)
		}
	}
	rctx := firstCtx
	for range maxPolls {
		var resp syncResponse
		err := syncFiltered(rctx, c, token, since, filter, timeout, &resp)
		at := time.Now()
		rctx = ctx
		if ctx.Err() != nil {
			return
		}
		if err == nil && resp.NextBatch == "" {
			err = errors.New("GET /sync: response has no next_batch")
		}
		if err != nil {
			fail(err)
			if isFatal(err) {
				stop(fmt.Errorf("sync: %w", err))
				return
			}
			sleepCtx(ctx, 100*time.Millisecond)
			continue
		}
		since = resp.NextBatch
		jr, ok := resp.Rooms.Join[roomID]
		r.mu.Lock()
		r.polls++
		if ok {
			r.record(jr, at)
		}
		r.mu.Unlock()
		if ok {
			select {
			case notify <- struct{}{}:
			default:
			}
		}
	}
	fail(fmt.Errorf("still polling after %d responses", maxPolls))
}
