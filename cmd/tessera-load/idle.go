package main

import (
	"context"
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
// does check is that the polls stay idle: a poll answered during the idle
// period (the server woke it with nothing new, or dropped it) is counted.
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
	// began; EarlyReturns how many of them were answered before it ended.
	InFlight     int    `json:"in_flight"`
	EarlyReturns int    `json:"early_returns"`
	Errors       int    `json:"errors"`
	Began        string `json:"began"` // RFC 3339, to line up with the server's own figures
	Ended        string `json:"ended"`
	FirstError   string `json:"first_error,omitempty"`
}

func (r *idleReport) human() string {
	var b strings.Builder
	fmt.Fprintf(&b, "idle: %d users, each with one long-poll /sync (timeout %v), idle for %s\n",
		r.Users, time.Duration(r.PollTimeoutMS*float64(time.Millisecond)), fmtSeconds(r.IdleSeconds))
	fmt.Fprintf(&b, "  in flight  %d at the start; %d answered early, %d errors\n", r.InFlight, r.EarlyReturns, r.Errors)
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
	started := make(chan struct{}, s.users)
	var returned atomic.Int64 // polls answered (or failed) before being stopped
	var mu sync.Mutex
	var nerr int
	var firstErr error
	var wg sync.WaitGroup
	for i := range users {
		wg.Go(func() {
			var once sync.Once
			rctx := httptrace.WithClientTrace(pollCtx, &httptrace.ClientTrace{
				WroteRequest: func(httptrace.WroteRequestInfo) { once.Do(func() { started <- struct{}{} }) },
			})
			// One poll only: an answer during the idle period is what is
			// being looked for, not something to follow up.
			err := syncOnce(rctx, e.c, users[i].AccessToken, since[i], s.pollTimeout, nil)
			if pollCtx.Err() != nil {
				return
			}
			returned.Add(1)
			if err != nil {
				mu.Lock()
				nerr++
				if firstErr == nil {
					firstErr = fmt.Errorf("sync: %w", err)
				}
				mu.Unlock()
				if isFatal(err) {
					stopPolls(fmt.Errorf("sync: %w", err))
				}
			}
		})
	}
	e.logf("setup: waiting for %d long-polls to be sent", s.users)
	wait := time.NewTimer(time.Minute)
	for n := 0; n < s.users && pollCtx.Err() == nil; n++ {
		select {
		case <-started:
		case <-wait.C:
			stopPolls(fmt.Errorf("setup: only %d of %d long-polls were sent within 1m", n, s.users))
		case <-pollCtx.Done():
		}
	}
	wait.Stop()
	sleepCtx(pollCtx, s.settle)
	if pollCtx.Err() != nil {
		stopPolls(errPollsStopped)
		wg.Wait()
		return nil, context.Cause(pollCtx)
	}

	rep := &idleReport{
		Scenario: "idle", HS: e.hs, Users: s.users, PollTimeoutMS: ms(s.pollTimeout),
		InFlight: s.users - int(returned.Load()),
	}
	began := time.Now()
	rep.Began = began.Format(time.RFC3339Nano)
	e.logf("idle: begin: %d long-polls in flight; idle for %v", rep.InFlight, s.idle)
	sleepCtx(pollCtx, s.idle)
	ended := time.Now()
	rep.Ended = ended.Format(time.RFC3339Nano)
	rep.IdleSeconds = seconds(ended.Sub(began))
	rep.EarlyReturns = int(returned.Load()) - (s.users - rep.InFlight)
	e.logf("idle: end: %d long-polls answered during the idle period", rep.EarlyReturns)
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
	if rep.InFlight < s.users || rep.EarlyReturns > 0 || rep.Errors > 0 {
		failed = fmt.Errorf("%d of %d long-polls were answered before the end of the idle period (%d errors)",
			s.users-rep.InFlight+rep.EarlyReturns, s.users, rep.Errors)
	}
	return rep, failed
}
