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

// ssFanoutScenario is fanout over simplified sliding sync: S clients, each
// its own user and device on its own sliding sync connection (one list of
// its rooms, long-polled with pos and timeout), sit in one room; one sender
// sends N messages into it, one after another and a little apart. It
// measures, for every (message, client) pair, the time from just before the
// send request is issued until the client has read the sliding sync
// response that holds its event_id, as fanout does for /sync.
type ssFanoutScenario struct {
	fanoutParams
	pollTimeout time.Duration
}

// ssFanoutTimelineLimit is the clients' list's timeline_limit: a client
// that falls more than this many messages behind gets a limited timeline,
// as with /sync's default filter.
const ssFanoutTimelineLimit = 10

func (s *ssFanoutScenario) addFlags(fs *flag.FlagSet) {
	fs.IntVar(&s.receivers, "clients", 50, "clients, each a separate user on its own sliding sync connection")
	fs.IntVar(&s.messages, "n", 100, "messages the sender sends, one after another")
	fs.DurationVar(&s.interval, "interval", 15*time.Millisecond,
		"time from the start of one send to the start of the next (later if a send takes longer)")
	fs.DurationVar(&s.pollTimeout, "poll-timeout", 30*time.Second, "the timeout parameter of each long-poll")
	fs.DurationVar(&s.drain, "drain", 10*time.Second,
		"after the last send, how long to wait for deliveries still outstanding")
}

func (s *ssFanoutScenario) check() error {
	if s.receivers < 1 || s.receivers > 10_000 {
		return errors.New("-clients must be between 1 and 10000")
	}
	if err := s.fanoutParams.check(); err != nil {
		return err
	}
	return checkPollTimeout(s.pollTimeout)
}

// One long-poll per client and the sender's connection.
func (s *ssFanoutScenario) conns() int { return s.receivers + 1 }

type ssFanoutReport struct {
	Scenario   string  `json:"scenario"`
	HS         string  `json:"hs"`
	Clients    int     `json:"clients"`
	Messages   int     `json:"messages"` // planned
	IntervalMS float64 `json:"interval_ms"`
	Sent       int     `json:"sent"` // sends answered with an event_id
	SendErrors int     `json:"send_errors"`
	// Expected is sent × clients; Deliveries the (message, client) pairs
	// that arrived; Missing the ones that did not within -drain.
	Expected   int `json:"expected"`
	Deliveries int `json:"deliveries"`
	Missing    int `json:"missing"`
	// Duplicates are events a client was given more than once;
	// Unexpected are m.room.message events in the room that no send of
	// this run returned.
	Duplicates       int `json:"duplicates"`
	Unexpected       int `json:"unexpected"`
	LimitedResponses int `json:"limited_responses"` // timelines with limited: true (events skipped)
	Polls            int `json:"polls"`             // responses in the measured phase
	PollErrors       int `json:"poll_errors"`
	// PosResets are M_UNKNOWN_POS answers, after which the client started
	// its connection again without pos (each is also a poll error).
	PosResets int `json:"pos_resets"`
	// Seconds is from the first send to the last delivery.
	Seconds float64 `json:"seconds"`
	// Delivery latency over every (message, client) pair.
	latencyStats
	// AllClients is, per message, the time until the last client had it
	// (over the messages every client got).
	AllClients latencyStats `json:"all_clients"`
	// Send is the latency of the sends themselves (until the event_id).
	Send       latencyStats `json:"send"`
	FirstError string       `json:"first_error,omitempty"`
}

func (r *ssFanoutReport) human() string {
	var b strings.Builder
	fmt.Fprintf(&b, "ss-fanout: 1 sender, %d messages %s apart, to %d clients long-polling sliding sync\n",
		r.Messages, time.Duration(r.IntervalMS*float64(time.Millisecond)), r.Clients)
	fmt.Fprintf(&b, "  sent       %d ok, %d errors; send latency %s\n", r.Sent, r.SendErrors, r.Send)
	fmt.Fprintf(&b, "  delivered  %d of %d (%d missing, %d duplicates, %d unexpected, %d limited timelines) in %s\n",
		r.Deliveries, r.Expected, r.Missing, r.Duplicates, r.Unexpected, r.LimitedResponses, fmtSeconds(r.Seconds))
	fmt.Fprintf(&b, "  polls      %d responses, %d errors (%d unknown pos)\n", r.Polls, r.PollErrors, r.PosResets)
	fmt.Fprintf(&b, "  delivery   %s\n", r.latencyStats)
	fmt.Fprintf(&b, "  to all     %s\n", r.AllClients)
	if r.FirstError != "" {
		fmt.Fprintf(&b, "  first error: %s\n", r.FirstError)
	}
	return b.String()
}

// ssClient is one client's connection: its request and pos.
type ssClient struct {
	token string
	req   *ssRequest
	pos   string
}

// ssFanoutReceiver is what one client saw.
type ssFanoutReceiver struct {
	fanoutReceiver
	posResets int
}

func (s *ssFanoutScenario) run(ctx context.Context, e *env) (report, error) {
	sender, users, roomID, err := fanoutSetup(ctx, e, s.receivers, "ss-fanout")
	if err != nil {
		return nil, err
	}
	// Each client opens its connection once everyone has joined, so the
	// long-polls start with nothing to report.
	e.logf("setup: %d sliding sync connections", len(users))
	clients := make([]*ssClient, len(users))
	err = forEach(ctx, len(users), syncParallel, func(ctx context.Context, i int) error {
		c := &ssClient{token: users[i].AccessToken, req: &ssRequest{
			ConnID: "tessera-load-" + e.runID,
			Lists:  ssAllRooms(ssInitialRange, ssFanoutTimelineLimit),
		}}
		clients[i] = c
		var resp ssResponse
		err := e.c.retry429(ctx, "sliding sync", func() error {
			return slidingSync(ctx, e.c, c.token, "", 0, c.req, &resp)
		})
		if err != nil {
			return err
		}
		if resp.Pos == "" {
			return fmt.Errorf("POST %s: response has no pos", slidingSyncPath)
		}
		if _, ok := resp.Rooms[roomID]; !ok {
			return fmt.Errorf("the first sliding sync response of %s does not hold the room %s it joined", users[i].UserID, roomID)
		}
		c.pos = resp.Pos
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("setup: %w", err)
	}

	// The long-polls.
	pollCtx, stopPolls := context.WithCancelCause(ctx)
	defer stopPolls(errPollsStopped)
	recv := make([]*ssFanoutReceiver, s.receivers)
	plain := make([]*fanoutReceiver, s.receivers) // for awaitDeliveries
	notify := make(chan struct{}, 1)              // a client got room events
	started := make(chan struct{}, s.receivers)
	// Each response either carries news or comes at the end of a
	// -poll-timeout, and the sender makes at most N pieces of news.
	maxPolls := 4*s.messages + 100
	var wg sync.WaitGroup
	for i := range recv {
		r := &ssFanoutReceiver{fanoutReceiver: fanoutReceiver{seenEvents: seenEvents{seen: make(map[string]time.Time, s.messages)}}}
		recv[i], plain[i] = r, &r.fanoutReceiver
		wg.Go(func() {
			var once sync.Once
			first := httptrace.WithClientTrace(pollCtx, &httptrace.ClientTrace{
				WroteRequest: func(httptrace.WroteRequestInfo) { once.Do(func() { started <- struct{}{} }) },
			})
			ssPollReceiver(pollCtx, first, e.c, clients[i], roomID, s.pollTimeout, maxPolls, r, stopPolls, notify)
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

	e.logf("measuring: %d messages, %v apart, to %d clients", s.messages, s.interval, s.receivers)
	ps := sendPaced(pollCtx, e, sender.AccessToken, roomID, "ss-fanout", s.messages, s.interval)
	if ps.fatal {
		stopPolls(ps.firstErr)
	}
	awaitDeliveries(pollCtx, e, plain, ps.ids, notify, s.drain)
	stopPolls(errPollsStopped)
	wg.Wait()
	if cause := context.Cause(pollCtx); !errors.Is(cause, errPollsStopped) {
		return nil, fmt.Errorf("measured phase stopped: %w", cause)
	}

	rep := &ssFanoutReport{
		Scenario: "ss-fanout", HS: e.hs, Clients: s.receivers, Messages: s.messages,
		IntervalMS: ms(s.interval), Sent: len(ps.lat), SendErrors: ps.errors,
		Expected: len(ps.lat) * s.receivers, Send: summarize(ps.lat),
	}
	firstErr := ps.firstErr
	tl := newDeliveryTally(ps.ids, ps.start)
	for _, r := range recv {
		rep.Duplicates += r.dups
		rep.LimitedResponses += r.limited
		rep.Polls += r.polls
		rep.PollErrors += r.errors
		rep.PosResets += r.posResets
		if firstErr == nil && r.firstErr != nil {
			firstErr = r.firstErr
		}
		tl.add(r.seen)
	}
	rep.Duplicates += tl.duplicates
	rep.Missing, rep.Unexpected = tl.missing, tl.unexpected
	rep.Deliveries, rep.latencyStats, rep.AllClients, rep.Seconds = tl.result(s.receivers, ps.t0)
	var failed error
	if firstErr != nil {
		rep.FirstError = firstErr.Error()
		failed = fmt.Errorf("%d sends and %d polls failed; the first: %w", ps.errors, rep.PollErrors, firstErr)
	}
	if rep.Missing > 0 || rep.Duplicates > 0 || rep.Deliveries != s.messages*s.receivers {
		failed = errors.Join(failed, fmt.Errorf("%d of %d deliveries arrived (%d missing, %d duplicates)",
			rep.Deliveries, s.messages*s.receivers, rep.Missing, rep.Duplicates))
	}
	return rep, failed
}

// ssPollReceiver is one client of ss-fanout: long-poll its connection from
// c.pos, again at once after each response with the response's pos, noting
// when each m.room.message event in the room arrived, until ctx ends or
// maxPolls responses. The first request goes out with firstCtx (which
// carries its trace). An unknown pos starts the connection again, as a
// client does; another fatal error stops the run.
func ssPollReceiver(ctx, firstCtx context.Context, cl *client, c *ssClient, roomID string, timeout time.Duration,
	maxPolls int, r *ssFanoutReceiver, stop context.CancelCauseFunc, notify chan<- struct{}) {
	fail := func(err error) {
		r.mu.Lock()
		defer r.mu.Unlock()
		r.errors++
		if r.firstErr == nil {
			r.firstErr = fmt.Errorf("sliding sync: %w", err)
		}
	}
	rctx := firstCtx
	for range maxPolls {
		var resp ssResponse
		err := slidingSync(rctx, cl, c.token, c.pos, timeout, c.req, &resp)
		at := time.Now()
		rctx = ctx
		if ctx.Err() != nil {
			return
		}
		if err == nil && resp.Pos == "" {
			err = fmt.Errorf("POST %s: response has no pos", slidingSyncPath)
		}
		if err != nil {
			fail(err)
			switch {
			case isUnknownPos(err):
				r.mu.Lock()
				r.posResets++
				r.mu.Unlock()
				c.pos = ""
			case isFatal(err):
				stop(fmt.Errorf("sliding sync: %w", err))
				return
			default:
				sleepCtx(ctx, 100*time.Millisecond)
			}
			continue
		}
		c.pos = resp.Pos
		room, ok := resp.Rooms[roomID]
		r.mu.Lock()
		r.polls++
		if ok {
			r.recordTimeline(room.Timeline, room.Limited, at)
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
