package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"net/http/httptrace"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// idleScenario: S users each hold one long-poll /sync open while nothing
// happens, for D. It measures nothing itself: what matters is what the
// server spends on S idle connections (memory, and CPU that should be
// about zero), which only the server's host can see. The tool prints
// "idle: begin" and "idle: end" lines on stderr between which to sample the
// server's process; docs/idle-bench.sh does that with /proc. What the tool
// does check is that the polls stay idle: a poll the server answers is
// followed by the next at once, as a client does, and an answer during the
// idle period is counted as a wakeup. A wakeup can be news (a user's own
// presence changing, say); one with nothing in it before the poll's
// timeout means the server is not letting idle polls wait, and fails the
// run.
type idleScenario struct {
	users       int
	idle        time.Duration
	pollTimeout time.Duration
	settle      time.Duration
}

func (s *idleScenario) addFlags(fs *flag.FlagSet) {
	s.idle = 20 * time.Second
	fs.IntVar(&s.users, "s", 1000, "users, each holding one idle long-poll /sync")
	fs.Var(durationFlag{&s.idle}, "d", "how long to stay idle once every long-poll is in flight (seconds, or a duration)")
	fs.DurationVar(&s.pollTimeout, "poll-timeout", 60*time.Second,
		"the timeout parameter of each long-poll /sync; must exceed -settle plus -d")
	s.settle = 2 * time.Second
	fs.Var(durationFlag{&s.settle}, "settle",
		"after the last long-poll is sent, wait this long before the idle period begins (seconds, or a duration)")
}

func (s *idleScenario) check() error {
	if s.users < 1 || s.users > 100_000 {
		return errors.New("-s must be between 1 and 100000")
	}
	if s.idle <= 0 {
		return errors.New("-d must be positive")
	}
	if s.settle < 0 {
		return errors.New("-settle must not be negative")
	}
	if s.pollTimeout <= 0 || s.pollTimeout > maxPollTimeout {
		return fmt.Errorf("-poll-timeout must be positive and at most %v", maxPollTimeout)
	}
	if s.pollTimeout <= s.settle+s.idle {
		return fmt.Errorf("-poll-timeout %v must exceed -settle plus -d (%v), or the polls end while idle",
			s.pollTimeout, s.settle+s.idle)
	}
	return nil
}

// One connection per long-poll, and a few for setup.
func (s *idleScenario) conns() int { return s.users + syncParallel }

type idleReport struct {
	Scenario      string  `json:"scenario"`
	HS            string  `json:"hs"`
	Users         int     `json:"users"`
	PollTimeoutMS float64 `json:"poll_timeout_ms"`
	IdleSeconds   float64 `json:"idle_seconds"`
	// InFlight is how many long-polls were open when the idle period
	// began, InFlightAtEnd when it ended; AnsweredBefore how many the
	// server answered before it (each followed by the next poll, as a
	// client does). Wakeups are answers during the idle period, and
	// EmptyWakeups those among them that had nothing in them: a server
	// that does that is not letting idle polls wait.
	InFlight       int    `json:"in_flight"`
	InFlightAtEnd  int    `json:"in_flight_at_end"`
	AnsweredBefore int    `json:"answered_before"`
	Wakeups        int    `json:"wakeups"`
	EmptyWakeups   int    `json:"empty_wakeups"`
	Errors         int    `json:"errors"`
	Began          string `json:"began"` // RFC 3339, to line up with the server's own figures
	Ended          string `json:"ended"`
	FirstError     string `json:"first_error,omitempty"`
}

func (r *idleReport) human() string {
	var b strings.Builder
	fmt.Fprintf(&b, "idle: %d users, each with one long-poll /sync (timeout %v), idle for %s\n",
		r.Users, time.Duration(r.PollTimeoutMS*float64(time.Millisecond)), fmtSeconds(r.IdleSeconds))
	fmt.Fprintf(&b, "  in flight  %d at the start, %d at the end (%d answered before the start)\n",
		r.InFlight, r.InFlightAtEnd, r.AnsweredBefore)
	fmt.Fprintf(&b, "  wakeups    %d answered while idle, %d of them with nothing new; %d errors\n",
		r.Wakeups, r.EmptyWakeups, r.Errors)
	fmt.Fprintf(&b, "  idle from  %s to %s\n", r.Began, r.Ended)
	if r.FirstError != "" {
		fmt.Fprintf(&b, "  first error: %s\n", r.FirstError)
	}
	b.WriteString("  The server's cost is not visible from here: sample its resident memory (VmRSS in\n" +
		"  /proc/PID/status) and CPU time (utime+stime, fields 14 and 15 of /proc/PID/stat) when\n" +
		"  \"idle: begin\" and \"idle: end\" appear on stderr. docs/idle-bench.sh does all of it.\n")
	return b.String()
}

func (s *idleScenario) run(ctx context.Context, e *env) (report, error) {
	names := make([]string, s.users)
	for i := range names {
		names[i] = fmt.Sprintf("idle%d", i)
	}
	e.logf("setup: registering %d users", len(names))
	users, err := e.users.registerAll(ctx, names)
	if err != nil {
		return nil, fmt.Errorf("setup: %w", err)
	}
	e.logf("setup: %d initial syncs", len(users))
	since, err := initialSyncs(ctx, e.c, users, nil)
	if err != nil {
		return nil, fmt.Errorf("setup: %w", err)
	}

	pollCtx, stopPolls := context.WithCancelCause(ctx)
	defer stopPolls(errPollsStopped)
	var (
		started  = make(chan struct{}, s.users) // a user's first poll was written
		inFlight atomic.Int64                   // polls written and not yet answered
		idling   atomic.Bool                    // the idle period is on
		before   atomic.Int64                   // polls answered before it
		wakeups  atomic.Int64                   // polls answered during it
		empty    atomic.Int64                   // ... with nothing in them
		mu       sync.Mutex
		nerr     int
		firstErr error
		wg       sync.WaitGroup
	)
	// Every answer is followed by the next poll, at once, as a client
	// does; only a server that keeps answering with nothing could make a
	// user use them all.
	maxPolls := 1000
	for i := range users {
		wg.Go(func() {
			var once sync.Once
			sent := func() { once.Do(func() { started <- struct{}{} }) }
			since := since[i]
			for range maxPolls {
				// 0: not written yet; 1: written, in flight; 2: answered.
				var state atomic.Int32
				rctx := httptrace.WithClientTrace(pollCtx, &httptrace.ClientTrace{
					WroteRequest: func(httptrace.WroteRequestInfo) {
						if state.CompareAndSwap(0, 1) {
							inFlight.Add(1)
						}
						sent()
					},
				})
				var resp syncNews
				t0 := time.Now()
				err := syncOnce(rctx, e.c, users[i].AccessToken, since, s.pollTimeout, &resp)
				if state.Swap(2) == 1 {
					inFlight.Add(-1)
				}
				if pollCtx.Err() != nil {
					return
				}
				if err != nil {
					mu.Lock()
					nerr++
					if firstErr == nil {
						firstErr = fmt.Errorf("sync: %w", err)
					}
					mu.Unlock()
					if isFatal(err) {
						stopPolls(fmt.Errorf("sync: %w", err))
						return
					}
					sleepCtx(pollCtx, time.Second)
					continue
				}
				sent() // answered, so certainly sent
				nothing := resp.empty()
				early := time.Since(t0) < s.pollTimeout*9/10 // not the poll's timeout ending
				if idling.Load() {
					wakeups.Add(1)
					if nothing && early {
						empty.Add(1)
					}
				} else {
					before.Add(1)
				}
				if resp.NextBatch != "" {
					since = resp.NextBatch
				}
				if nothing && early {
					sleepCtx(pollCtx, time.Second) // answered early with nothing: do not spin
				}
			}
		})
	}
	awaitPollsSent(pollCtx, e, started, s.users, time.Minute, stopPolls)
	sleepCtx(pollCtx, s.settle)
	if pollCtx.Err() != nil {
		stopPolls(errPollsStopped)
		wg.Wait()
		return nil, context.Cause(pollCtx)
	}

	rep := &idleReport{Scenario: "idle", HS: e.hs, Users: s.users, PollTimeoutMS: ms(s.pollTimeout)}
	idling.Store(true)
	rep.InFlight = int(inFlight.Load())
	rep.AnsweredBefore = int(before.Load())
	began := time.Now()
	rep.Began = began.Format(time.RFC3339Nano)
	e.logf("idle: begin: %d long-polls in flight; idle for %v", rep.InFlight, s.idle)
	sleepCtx(pollCtx, s.idle)
	idling.Store(false)
	ended := time.Now()
	rep.Ended = ended.Format(time.RFC3339Nano)
	rep.IdleSeconds = seconds(ended.Sub(began))
	rep.Wakeups, rep.EmptyWakeups = int(wakeups.Load()), int(empty.Load())
	rep.InFlightAtEnd = int(inFlight.Load())
	e.logf("idle: end: %d long-polls answered during the idle period (%d with nothing new)", rep.Wakeups, rep.EmptyWakeups)
	stopPolls(errPollsStopped)
	wg.Wait()
	if cause := context.Cause(pollCtx); !errors.Is(cause, errPollsStopped) {
		return rep, fmt.Errorf("idle period cut short: %w", cause)
	}
	mu.Lock()
	rep.Errors = nerr
	if firstErr != nil {
		rep.FirstError = firstErr.Error()
	}
	mu.Unlock()
	var failed error
	if rep.EmptyWakeups > 0 || rep.Errors > 0 {
		failed = fmt.Errorf("%d long-polls were answered with nothing new before their timeout, and %d failed",
			rep.EmptyWakeups, rep.Errors)
	}
	return rep, failed
}

// syncNews is enough of a /sync response to tell whether it had anything
// in it.
type syncNews struct {
	NextBatch string `json:"next_batch"`
	Rooms     struct {
		Join   map[string]json.RawMessage `json:"join"`
		Invite map[string]json.RawMessage `json:"invite"`
		Leave  map[string]json.RawMessage `json:"leave"`
		Knock  map[string]json.RawMessage `json:"knock"`
	} `json:"rooms"`
	Presence    struct{ Events []json.RawMessage } `json:"presence"`
	AccountData struct{ Events []json.RawMessage } `json:"account_data"`
	ToDevice    struct{ Events []json.RawMessage } `json:"to_device"`
	DeviceLists struct{ Changed, Left []string }   `json:"device_lists"`
}

func (n *syncNews) empty() bool {
	r := n.Rooms
	return len(r.Join)+len(r.Invite)+len(r.Leave)+len(r.Knock)+len(n.Presence.Events)+len(n.AccountData.Events)+
		len(n.ToDevice.Events)+len(n.DeviceLists.Changed)+len(n.DeviceLists.Left) == 0
}
