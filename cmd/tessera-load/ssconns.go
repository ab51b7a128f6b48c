package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net/http/httptrace"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// ssConnsScenario is idle for sliding sync: C connections, spread over U
// users (connection k is user k mod U's, each user's on its one device
// with its own conn_id, as a client that opens several), each hold one
// long-poll open while nothing happens, for D. With -server-pid it samples
// the server's resident memory (Linux /proc) before the long-polls open
// and all through the idle period: what C sliding sync connections cost.
// As in idle, a poll the server answers is followed by the next at once,
// and an answer with nothing in it before its timeout fails the run.
type ssConnsScenario struct {
	nconns      int
	users       int
	rooms       int
	idle        time.Duration
	pollTimeout time.Duration
	settle      time.Duration
	serverPID   int
	interval    time.Duration
}

// ssMaxConnsPerDevice is Tessera's limit of connections per device
// (docs/sliding-sync.md): beyond it the least recently used is dropped.
const ssMaxConnsPerDevice = 100

func (s *ssConnsScenario) addFlags(fs *flag.FlagSet) {
	s.idle = 20 * time.Second
	fs.IntVar(&s.nconns, "conns", 1000, "sliding sync connections, each holding one idle long-poll")
	fs.IntVar(&s.users, "users", 100, "users the connections are spread over (one device each, a conn_id per connection)")
	fs.IntVar(&s.rooms, "rooms", 0, "public rooms every user is in (each connection's list shows up to 20 of them)")
	fs.Var(durationFlag{&s.idle}, "d", "how long to stay idle once every long-poll is in flight (seconds, or a duration)")
	fs.DurationVar(&s.pollTimeout, "poll-timeout", 60*time.Second,
		"the timeout parameter of each long-poll; must exceed -settle plus -d")
	s.settle = 2 * time.Second
	fs.Var(durationFlag{&s.settle}, "settle",
		"after the last long-poll is sent, wait this long before the idle period begins (seconds, or a duration)")
	fs.IntVar(&s.serverPID, "server-pid", 0,
		"process ID of the server, to report its resident memory (Linux, same machine; 0: not measured)")
	fs.DurationVar(&s.interval, "rss-interval", 100*time.Millisecond, "how often the server's memory is sampled")
}

func (s *ssConnsScenario) check() error {
	if s.nconns < 1 || s.nconns > 100_000 {
		return errors.New("-conns must be between 1 and 100000")
	}
	if s.users < 1 || s.users > s.nconns {
		return errors.New("-users must be between 1 and -conns")
	}
	if s.nconns > s.users*ssMaxConnsPerDevice {
		return fmt.Errorf("-conns %d over -users %d is more than the %d connections a device may have",
			s.nconns, s.users, ssMaxConnsPerDevice)
	}
	if s.rooms < 0 || s.rooms > 10_000 {
		return errors.New("-rooms must be between 0 and 10000")
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
	if s.serverPID < 0 || s.interval <= 0 {
		return errors.New("-server-pid must be 0 or a process ID, and -rss-interval positive")
	}
	if s.serverPID > 0 {
		if _, err := readRSS(s.serverPID); err != nil {
			return fmt.Errorf("-server-pid: %w", err)
		}
	}
	return nil
}

// One connection per long-poll, and a few for setup.
func (s *ssConnsScenario) conns() int { return s.nconns + syncParallel }

type ssConnsReport struct {
	Scenario      string  `json:"scenario"`
	HS            string  `json:"hs"`
	Conns         int     `json:"conns"`
	Users         int     `json:"users"`
	Rooms         int     `json:"rooms"` // every user is in
	PollTimeoutMS float64 `json:"poll_timeout_ms"`
	IdleSeconds   float64 `json:"idle_seconds"`
	// As in idle: long-polls open when the idle period began and when it
	// ended, answers before it, answers during it (wakeups), and those
	// among them with nothing in them before the poll's timeout.
	InFlight       int    `json:"in_flight"`
	InFlightAtEnd  int    `json:"in_flight_at_end"`
	AnsweredBefore int    `json:"answered_before"`
	Wakeups        int    `json:"wakeups"`
	EmptyWakeups   int    `json:"empty_wakeups"`
	Errors         int    `json:"errors"`
	Began          string `json:"began"` // RFC 3339, to line up with the server's own figures
	Ended          string `json:"ended"`
	*ssConnsRSS           // with -server-pid
	FirstError     string `json:"first_error,omitempty"`
}

// ssConnsRSS is the server's resident memory in MiB: once every
// connection had made its first request, before the long-polls; when the
// idle period began and when it ended (the polls still open); and its
// median and peak over the idle period.
type ssConnsRSS struct {
	BeforeMiB  float64 `json:"rss_before_mib"`
	BeginMiB   float64 `json:"rss_begin_mib"`
	EndMiB     float64 `json:"rss_end_mib"`
	MedianMiB  float64 `json:"rss_median_mib"`
	PeakMiB    float64 `json:"rss_peak_mib"`
	RSSSamples int     `json:"rss_samples"`
}

func (r *ssConnsReport) human() string {
	var b strings.Builder
	fmt.Fprintf(&b, "ss-conns: %d sliding sync connections of %d users in %d rooms, each with one long-poll (timeout %v), idle for %s\n",
		r.Conns, r.Users, r.Rooms, time.Duration(r.PollTimeoutMS*float64(time.Millisecond)), fmtSeconds(r.IdleSeconds))
	fmt.Fprintf(&b, "  in flight  %d at the start, %d at the end (%d answered before the start)\n",
		r.InFlight, r.InFlightAtEnd, r.AnsweredBefore)
	fmt.Fprintf(&b, "  wakeups    %d answered while idle, %d of them with nothing new; %d errors\n",
		r.Wakeups, r.EmptyWakeups, r.Errors)
	fmt.Fprintf(&b, "  idle from  %s to %s\n", r.Began, r.Ended)
	if m := r.ssConnsRSS; m != nil {
		fmt.Fprintf(&b, "  server RSS %.1f MiB before the long-polls; while idle: %.1f MiB at the start, %.1f at the end, "+
			"median %.1f, peak %.1f (%d samples)\n", m.BeforeMiB, m.BeginMiB, m.EndMiB, m.MedianMiB, m.PeakMiB, m.RSSSamples)
	} else {
		b.WriteString("  server RSS not measured (give -server-pid)\n")
	}
	if r.FirstError != "" {
		fmt.Fprintf(&b, "  first error: %s\n", r.FirstError)
	}
	return b.String()
}

func (s *ssConnsScenario) run(ctx context.Context, e *env) (report, error) {
	names := make([]string, s.users)
	for i := range names {
		names[i] = fmt.Sprintf("conn%d", i)
	}
	e.logf("setup: registering %d users", len(names))
	users, err := e.users.registerAll(ctx, names)
	if err != nil {
		return nil, fmt.Errorf("setup: %w", err)
	}
	if s.rooms > 0 {
		if err := s.joinRooms(ctx, e, users); err != nil {
			return nil, fmt.Errorf("setup: %w", err)
		}
	}
	e.logf("setup: opening %d sliding sync connections", s.nconns)
	clients := make([]*ssClient, s.nconns)
	err = forEach(ctx, s.nconns, syncParallel, func(ctx context.Context, k int) error {
		c := &ssClient{token: users[k%s.users].AccessToken, req: &ssRequest{
			ConnID: fmt.Sprintf("tessera-load-%s-%d", e.runID, k/s.users),
			Lists:  ssAllRooms(ssInitialRange, 1),
		}}
		clients[k] = c
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
		c.pos = resp.Pos
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("setup: %w", err)
	}
	var rssBefore int64
	if s.serverPID > 0 {
		if rssBefore, err = readRSS(s.serverPID); err != nil {
			return nil, err
		}
	}

	pollCtx, stopPolls := context.WithCancelCause(ctx)
	defer stopPolls(errPollsStopped)
	var (
		started  = make(chan struct{}, s.nconns) // a connection's first poll was written
		inFlight atomic.Int64                    // polls written and not yet answered
		idling   atomic.Bool                     // the idle period is on
		before   atomic.Int64                    // polls answered before it
		wakeups  atomic.Int64                    // polls answered during it
		empty    atomic.Int64                    // ... with nothing in them
		mu       sync.Mutex
		nerr     int
		firstErr error
		wg       sync.WaitGroup
	)
	maxPolls := 1000
	for _, c := range clients {
		wg.Go(func() {
			var once sync.Once
			sent := func() { once.Do(func() { started <- struct{}{} }) }
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
				var resp ssResponse
				t0 := time.Now()
				err := slidingSync(rctx, e.c, c.token, c.pos, s.pollTimeout, c.req, &resp)
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
						firstErr = fmt.Errorf("sliding sync: %w", err)
					}
					mu.Unlock()
					switch {
					case isUnknownPos(err):
						c.pos = "" // start the connection again, as a client does
					case isFatal(err):
						stopPolls(fmt.Errorf("sliding sync: %w", err))
						return
					default:
						sleepCtx(pollCtx, time.Second)
					}
					continue
				}
				sent() // answered, so certainly sent
				nothing := len(resp.Rooms) == 0 && len(resp.Extensions) == 0
				early := time.Since(t0) < s.pollTimeout*9/10 // not the poll's timeout ending
				if idling.Load() {
					wakeups.Add(1)
					if nothing && early {
						empty.Add(1)
					}
				} else {
					before.Add(1)
				}
				if resp.Pos != "" {
					c.pos = resp.Pos
				}
				if nothing && early {
					sleepCtx(pollCtx, time.Second) // answered early with nothing: do not spin
				}
			}
		})
	}
	awaitPollsSent(pollCtx, e, started, s.nconns, time.Minute, stopPolls)
	sleepCtx(pollCtx, s.settle)
	if pollCtx.Err() != nil {
		stopPolls(errPollsStopped)
		wg.Wait()
		return nil, context.Cause(pollCtx)
	}

	rep := &ssConnsReport{Scenario: "ss-conns", HS: e.hs, Conns: s.nconns, Users: s.users, Rooms: s.rooms, PollTimeoutMS: ms(s.pollTimeout)}
	idling.Store(true)
	rep.InFlight = int(inFlight.Load())
	rep.AnsweredBefore = int(before.Load())
	began := time.Now()
	rep.Began = began.Format(time.RFC3339Nano)
	e.logf("ss-conns: begin: %d long-polls in flight; idle for %v", rep.InFlight, s.idle)
	var samples []int64
	if s.serverPID > 0 {
		samples = sampleRSS(pollCtx, s.serverPID, s.interval, s.idle)
	} else {
		sleepCtx(pollCtx, s.idle)
	}
	idling.Store(false)
	ended := time.Now()
	rep.Ended = ended.Format(time.RFC3339Nano)
	rep.IdleSeconds = seconds(ended.Sub(began))
	rep.Wakeups, rep.EmptyWakeups = int(wakeups.Load()), int(empty.Load())
	rep.InFlightAtEnd = int(inFlight.Load())
	e.logf("ss-conns: end: %d long-polls answered during the idle period (%d with nothing new)", rep.Wakeups, rep.EmptyWakeups)
	stopPolls(errPollsStopped)
	wg.Wait()
	if len(samples) > 0 {
		m := &ssConnsRSS{
			BeforeMiB: mib(rssBefore), BeginMiB: mib(samples[0]), EndMiB: mib(samples[len(samples)-1]),
			RSSSamples: len(samples),
		}
		slices.Sort(samples)
		m.MedianMiB, m.PeakMiB = mib(samples[len(samples)/2]), mib(samples[len(samples)-1])
		rep.ssConnsRSS = m
	}
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
	if s.serverPID > 0 && len(samples) == 0 {
		failed = errors.Join(failed, fmt.Errorf("could not read the memory of process %d while idle", s.serverPID))
	}
	return rep, failed
}

// joinRooms has the first user create s.rooms public rooms and every other
// user join them all.
func (s *ssConnsScenario) joinRooms(ctx context.Context, e *env, users []user) error {
	e.logf("setup: creating %d rooms", s.rooms)
	rooms := make([]string, s.rooms)
	err := forEach(ctx, s.rooms, joinParallel, func(ctx context.Context, i int) error {
		return e.c.retry429(ctx, "createRoom", func() (err error) {
			rooms[i], err = createRoom(ctx, e.c, users[0].AccessToken, map[string]any{
				"preset": "public_chat", "name": fmt.Sprintf("tessera-load ss-conns %s room %d", e.runID, i),
			})
			return err
		})
	})
	if err != nil {
		return err
	}
	others := users[1:]
	e.logf("setup: %d users joining %d rooms", len(others), s.rooms)
	return forEach(ctx, len(others)*s.rooms, joinParallel, func(ctx context.Context, i int) error {
		return e.c.retry429(ctx, "join", func() error {
			return joinRoom(ctx, e.c, others[i/s.rooms].AccessToken, rooms[i%s.rooms])
		})
	})
}

// sampleRSS reads the resident memory of process pid every interval for d
// (or until ctx ends), the first sample at once and the last at the end,
// and returns the samples in bytes, in order. Failed reads are skipped.
func sampleRSS(ctx context.Context, pid int, interval, d time.Duration) []int64 {
	var samples []int64
	end := time.Now().Add(d)
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		if rss, err := readRSS(pid); err == nil {
			samples = append(samples, rss)
		}
		left := time.Until(end)
		if left <= 0 || ctx.Err() != nil {
			return samples
		}
		select {
		case <-t.C:
		case <-time.After(left):
		case <-ctx.Done():
		}
	}
}
