package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net/http"
	"net/http/httptrace"
	"net/url"
	"strings"
	"sync"
	"time"
)

// federationScenario is fanout across two servers: one sender registered on
// -hs (server A) creates a public room, S receivers registered on -hs2
// (server B) join it through A (POST /join/{roomId}?via=A), and then, while
// the receivers long-poll /sync on B, the sender sends N messages on A. Each
// message reaches B only over federation (A's transaction to B, B's checks
// and storage), so the delivery latency is the whole path from one user
// pressing send on A to the message appearing on a screen served by B. With
// -interval 0 the sender sends as fast as A answers, one after another, and
// events_per_sec is what the federation link carries.
type federationScenario struct {
	fanoutParams
	pollTimeout   time.Duration
	timelineLimit int
}

func (s *federationScenario) addFlags(fs *flag.FlagSet) {
	fs.IntVar(&s.receivers, "s", 1, "receivers on -hs2, each a separate user long-polling /sync")
	fs.IntVar(&s.messages, "n", 200, "messages the sender on -hs sends, one after another")
	fs.DurationVar(&s.interval, "interval", 10*time.Millisecond,
		"time from the start of one send to the start of the next (later if a send takes longer; 0: as fast as possible)")
	fs.DurationVar(&s.pollTimeout, "poll-timeout", 30*time.Second, "the timeout parameter of each long-poll /sync")
	fs.DurationVar(&s.drain, "drain", 15*time.Second,
		"after the last send, how long to wait for deliveries still outstanding")
	fs.IntVar(&s.timelineLimit, "timeline-limit", 100,
		"the timeline limit of the receivers' long-polls (an inline filter), so a burst that arrives at once "+
			"is not cut short; 0: the server's default filter")
}

func (s *federationScenario) check() error {
	if err := s.fanoutParams.check(); err != nil {
		return err
	}
	if err := checkPollTimeout(s.pollTimeout); err != nil {
		return err
	}
	if s.timelineLimit < 0 || s.timelineLimit > 10_000 {
		return errors.New("-timeline-limit must be between 0 and 10000")
	}
	return nil
}

func (s *federationScenario) checkOptions(o *options) error {
	if o.hs2 == "" {
		return errors.New("-hs2 is required: the server the receivers are on")
	}
	if strings.TrimRight(o.hs2, "/") == strings.TrimRight(o.hs, "/") {
		return errors.New("-hs and -hs2 must be two different servers")
	}
	return nil
}

// The pool of -hs: setup and the sender. -hs2 gets its own client.
func (s *federationScenario) conns() int { return registerParallel + 1 }

// fedJoinWait bounds the wait for server A to see the receivers' joins.
const fedJoinWait = time.Minute

type federationReport struct {
	Scenario      string  `json:"scenario"`
	HS            string  `json:"hs"`
	HS2           string  `json:"hs2"`
	ServerName    string  `json:"server_name"`  // A's, from the sender's user ID
	ServerName2   string  `json:"server_name2"` // B's, from the receivers' user IDs
	Receivers     int     `json:"receivers"`
	Messages      int     `json:"messages"` // planned
	IntervalMS    float64 `json:"interval_ms"`
	TimelineLimit int     `json:"timeline_limit"` // of the long-polls' filter; 0: the server's default
	Sent          int     `json:"sent"`           // sends answered with an event_id
	SendErrors    int     `json:"send_errors"`
	// SendSeconds is from the first send's start to the last one's answer.
	SendSeconds      float64 `json:"send_seconds"`
	SendEventsPerSec float64 `json:"send_events_per_sec"`
	// Expected is sent × receivers; Deliveries the (message, receiver)
	// pairs that arrived; Missing the ones that did not within -drain.
	Expected   int `json:"expected"`
	Deliveries int `json:"deliveries"`
	Missing    int `json:"missing"`
	Duplicates int `json:"duplicates"`
	Unexpected int `json:"unexpected"`
	// Delivered is the messages that reached B: at least one receiver had
	// them.
	Delivered        int `json:"delivered"`
	LimitedResponses int `json:"limited_responses"`
	Polls            int `json:"polls"`
	PollErrors       int `json:"poll_errors"`
	// Seconds is from the first send to the last delivery on B, and
	// EventsPerSec is Delivered over it: what the federation link carried.
	Seconds      float64 `json:"seconds"`
	EventsPerSec float64 `json:"events_per_sec"`
	// Delivery latency over every (message, receiver) pair.
	latencyStats
	AllReceivers latencyStats `json:"all_receivers"`
	Send         latencyStats `json:"send"`
	FirstError   string       `json:"first_error,omitempty"`
}

func (r *federationReport) human() string {
	var b strings.Builder
	pace := time.Duration(r.IntervalMS*float64(time.Millisecond)).String() + " apart"
	if r.IntervalMS == 0 {
		pace = "as fast as possible"
	}
	fmt.Fprintf(&b, "federation: 1 sender on %s, %d messages %s, to %d receivers on %s long-polling /sync\n",
		r.ServerName, r.Messages, pace, r.Receivers, r.ServerName2)
	fmt.Fprintf(&b, "  sent       %d ok, %d errors in %s (%.1f events/s); send latency %s\n",
		r.Sent, r.SendErrors, fmtSeconds(r.SendSeconds), r.SendEventsPerSec, r.Send)
	fmt.Fprintf(&b, "  delivered  %d of %d (%d missing, %d duplicates, %d unexpected, %d limited timelines)\n",
		r.Deliveries, r.Expected, r.Missing, r.Duplicates, r.Unexpected, r.LimitedResponses)
	fmt.Fprintf(&b, "  throughput %d messages reached %s in %s: %.1f events/s\n",
		r.Delivered, r.ServerName2, fmtSeconds(r.Seconds), r.EventsPerSec)
	fmt.Fprintf(&b, "  polls      %d responses, %d errors\n", r.Polls, r.PollErrors)
	fmt.Fprintf(&b, "  delivery   %s\n", r.latencyStats)
	fmt.Fprintf(&b, "  to all     %s\n", r.AllReceivers)
	if r.FirstError != "" {
		fmt.Fprintf(&b, "  first error: %s\n", r.FirstError)
	}
	return b.String()
}

// serverOf is the server name of a user ID: everything after the first ':'.
func serverOf(userID string) string {
	_, name, _ := strings.Cut(userID, ":")
	return name
}

func (s *federationScenario) run(ctx context.Context, e *env) (report, error) {
	c2 := newClient(e.hs2, e.c.timeout, s.receivers+joinParallel, e.logf)
	secret2 := e.sharedSecret2
	if secret2 == "" {
		secret2 = e.users.sharedSecret // "" with -register-open: open registration on B too
	}
	users2 := &userSource{c: c2, sharedSecret: secret2, runID: e.runID}
	e.logf("tessera-load federation: receivers on %s", c2.base)

	sender, receivers, roomID, err := s.setup(ctx, e, c2, users2)
	if err != nil {
		return nil, fmt.Errorf("setup: %w", err)
	}
	e.logf("setup: %d initial syncs on %s", len(receivers), c2.base)
	since, err := initialSyncs(ctx, c2, receivers, func(i int, r *syncResponse) error {
		if _, ok := r.Rooms.Join[roomID]; !ok {
			return fmt.Errorf("the initial sync of %s does not list the room %s it joined", receivers[i].UserID, roomID)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("setup: %w", err)
	}
	filter := ""
	if s.timelineLimit > 0 {
		filter = fmt.Sprintf(`{"room":{"timeline":{"limit":%d}}}`, s.timelineLimit)
	}

	// The long-polls on B.
	pollCtx, stopPolls := context.WithCancelCause(ctx)
	defer stopPolls(errPollsStopped)
	recv := make([]*fanoutReceiver, s.receivers)
	notify := make(chan struct{}, 1)
	started := make(chan struct{}, s.receivers)
	// Each response carries news or ends a -poll-timeout; over federation
	// the news also includes A's presence and the like, so leave room.
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
			pollReceiver(pollCtx, first, c2, receivers[i].AccessToken, roomID, since[i], filter, s.pollTimeout, maxPolls, r, stopPolls, notify)
		})
	}
	awaitPollsSent(pollCtx, e, started, s.receivers, 30*time.Second, stopPolls)
	sleepCtx(pollCtx, 200*time.Millisecond)
	if pollCtx.Err() != nil {
		stopPolls(errPollsStopped)
		wg.Wait()
		return nil, context.Cause(pollCtx)
	}

	pace := s.interval.String() + " apart"
	if s.interval == 0 {
		pace = "as fast as possible"
	}
	e.logf("measuring: %d messages on %s, %s, to %d receivers on %s", s.messages, e.hs, pace, s.receivers, c2.base)
	ps := sendPaced(pollCtx, e, sender.AccessToken, roomID, "federation", s.messages, s.interval)
	sendEnd := time.Now()
	if ps.fatal {
		stopPolls(ps.firstErr)
	}
	firstErr := ps.firstErr

	awaitDeliveries(pollCtx, e, recv, ps.ids, notify, s.drain)
	stopPolls(errPollsStopped)
	wg.Wait()
	if cause := context.Cause(pollCtx); !errors.Is(cause, errPollsStopped) {
		return nil, fmt.Errorf("measured phase stopped: %w", cause)
	}

	rep := &federationReport{
		Scenario: "federation", HS: e.hs, HS2: c2.base,
		ServerName: serverOf(sender.UserID), ServerName2: serverOf(receivers[0].UserID),
		Receivers: s.receivers, Messages: s.messages, IntervalMS: ms(s.interval), TimelineLimit: s.timelineLimit,
		Sent: len(ps.lat), SendErrors: ps.errors, Expected: len(ps.lat) * s.receivers, Send: summarize(ps.lat),
	}
	if rep.Sent > 0 {
		rep.SendSeconds = seconds(sendEnd.Sub(ps.t0))
		rep.SendEventsPerSec = perSecond(rep.Sent, sendEnd.Sub(ps.t0))
	}
	tl := newDeliveryTally(ps.ids, ps.start)
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
	rep.Deliveries, rep.latencyStats, rep.AllReceivers, rep.Seconds = tl.result(s.receivers, ps.t0)
	for _, n := range tl.gotAll {
		if n > 0 {
			rep.Delivered++
		}
	}
	if !tl.last.IsZero() {
		rep.EventsPerSec = perSecond(rep.Delivered, tl.last.Sub(ps.t0))
	}
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

// setup registers the sender on A and the receivers on B, has the sender
// create a public room on A and the receivers join it through A, and waits
// until A lists them all as joined.
func (s *federationScenario) setup(ctx context.Context, e *env, c2 *client, users2 *userSource) (user, []user, string, error) {
	e.logf("setup: registering the sender on %s", e.hs)
	senders, err := e.users.registerAll(ctx, []string{"fedsender"})
	if err != nil {
		return user{}, nil, "", err
	}
	sender := senders[0]
	names := make([]string, s.receivers)
	for i := range names {
		names[i] = fmt.Sprintf("fedrecv%d", i)
	}
	e.logf("setup: registering %d receivers on %s", len(names), c2.base)
	receivers, err := users2.registerAll(ctx, names)
	if err != nil {
		return user{}, nil, "", err
	}
	serverA, serverB := serverOf(sender.UserID), serverOf(receivers[0].UserID)
	if serverA == "" || serverA == serverB {
		return user{}, nil, "", fmt.Errorf("the sender is %s and the receivers are %s...: "+
			"-hs and -hs2 must be two servers with different names", sender.UserID, receivers[0].UserID)
	}

	var roomID string
	err = e.c.retry429(ctx, "createRoom", func() (err error) {
		roomID, err = createRoom(ctx, e.c, sender.AccessToken, map[string]any{
			"preset": "public_chat", "name": "tessera-load federation " + e.runID,
		})
		return err
	})
	if err != nil {
		return user{}, nil, "", err
	}
	// The first join makes B join the room over federation (make_join,
	// send_join); the others then find it on B.
	join := func(ctx context.Context, i int) error {
		return c2.retry429(ctx, "join", func() error {
			return joinVia(ctx, c2, receivers[i].AccessToken, roomID, serverA)
		})
	}
	e.logf("setup: %d receivers on %s joining %s via %s", len(receivers), serverB, roomID, serverA)
	if err := join(ctx, 0); err != nil {
		return user{}, nil, "", err
	}
	err = forEach(ctx, len(receivers)-1, joinParallel, func(ctx context.Context, i int) error {
		return join(ctx, i+1)
	})
	if err != nil {
		return user{}, nil, "", err
	}

	e.logf("setup: waiting for %s to see the %d receivers joined", serverA, len(receivers))
	deadline := time.Now().Add(fedJoinWait)
	for {
		joined, err := joinedMembers(ctx, e.c, sender.AccessToken, roomID)
		if err != nil {
			return user{}, nil, "", err
		}
		n := 0
		for _, r := range receivers {
			if joined[r.UserID] {
				n++
			}
		}
		if n == len(receivers) {
			break
		}
		if time.Now().After(deadline) {
			return user{}, nil, "", fmt.Errorf("%s saw %d of the %d receivers joined within %v",
				serverA, n, len(receivers), fedJoinWait)
		}
		if !sleepCtx(ctx, 50*time.Millisecond) {
			return user{}, nil, "", context.Cause(ctx)
		}
	}
	return sender, receivers, roomID, nil
}

// joinVia: POST /join/{roomId}?via=server, to join a room this server may
// not know through a server that is in it.
// https://spec.matrix.org/v1.19/client-server-api/#post_matrixclientv3joinroomidoralias
func joinVia(ctx context.Context, c *client, token, roomID, server string) error {
	q := url.Values{"via": {server}}
	return c.do(ctx, http.MethodPost, clientV3+"/join/"+url.PathEscape(roomID), q, token, map[string]any{}, nil)
}

// joinedMembers: GET /rooms/{roomId}/joined_members; the user IDs joined.
// https://spec.matrix.org/v1.19/client-server-api/#get_matrixclientv3roomsroomidjoined_members
func joinedMembers(ctx context.Context, c *client, token, roomID string) (map[string]bool, error) {
	var resp struct {
		Joined map[string]struct{} `json:"joined"`
	}
	if err := c.do(ctx, http.MethodGet, roomPath(roomID, "joined_members"), nil, token, nil, &resp); err != nil {
		return nil, err
	}
	joined := make(map[string]bool, len(resp.Joined))
	for id := range resp.Joined {
		joined[id] = true
	}
	return joined, nil
}
