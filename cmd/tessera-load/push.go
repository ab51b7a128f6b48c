package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"
)

// pushScenario: N users, each with an HTTP pusher whose gateway is this
// tool, are in one room; a sender sends M messages, one after another,
// and every notification must reach the tool's gateway
// (POST /_matrix/push/v1/notify). A warm-up message goes first, and its
// notifications are awaited, so that the server has caught up with the
// setup before anything is measured. It measures the time from the start of
// each send to each notification's arrival, and with -server-pid, the
// server's CPU time per notification. The server must allow the gateway's
// address (push.ip_range_whitelist, e.g. ["127.0.0.1/32"]).
type pushScenario struct {
	users      int
	messages   int
	par        int
	listen     string
	gatewayURL string
	drain      time.Duration
	settle     time.Duration
	serverPID  int
}

func (s *pushScenario) addFlags(fs *flag.FlagSet) {
	fs.IntVar(&s.users, "n", 1000, "users in the room, each with one HTTP pusher")
	fs.IntVar(&s.messages, "m", 1, "messages sent into the room, one after another")
	fs.IntVar(&s.par, "c", 16, "parallel requests while joining users and setting pushers (setup only)")
	fs.StringVar(&s.listen, "gateway-listen", "127.0.0.1:0", "where the tool's push gateway listens")
	fs.StringVar(&s.gatewayURL, "gateway-url", "",
		"the gateway URL given to the server (default http://<gateway-listen>/_matrix/push/v1/notify)")
	fs.DurationVar(&s.drain, "drain", 30*time.Second, "how long to wait for the last notification after the last send")
	fs.DurationVar(&s.settle, "settle", 2*time.Second, "quiet time before measuring (setup's own pushes end)")
	fs.IntVar(&s.serverPID, "server-pid", 0, "the server's process ID, to read its CPU time (utime+stime) around the run")
}

func (s *pushScenario) check() error {
	if s.users < 1 || s.users > 100_000 {
		return errors.New("-n must be between 1 and 100000")
	}
	if s.messages < 1 || s.messages > 10_000 {
		return errors.New("-m must be between 1 and 10000")
	}
	if s.par < 1 || s.drain <= 0 || s.settle < 0 {
		return errors.New("-c and -drain must be positive, -settle not negative")
	}
	if s.serverPID < 0 {
		return errors.New("-server-pid must be 0 or a process ID")
	}
	if s.serverPID > 0 {
		if _, err := readCPU(s.serverPID); err != nil {
			return fmt.Errorf("-server-pid: %w", err)
		}
	}
	return nil
}

func (s *pushScenario) conns() int { return s.par }

type pushReport struct {
	Scenario      string  `json:"scenario"`
	HS            string  `json:"hs"`
	Users         int     `json:"users"`
	Messages      int     `json:"messages"`
	Expected      int     `json:"expected"`  // users × messages
	Delivered     int     `json:"delivered"` // distinct (pushkey, event) notifications that arrived
	Missing       int     `json:"missing"`
	Duplicates    int     `json:"duplicates"`
	Invalid       int     `json:"invalid"` // requests without the fields the push gateway API requires
	Seconds       float64 `json:"seconds"` // first send to last arrival
	latencyStats          // send start to arrival at the gateway
	CPUSeconds    float64 `json:"server_cpu_seconds,omitempty"`
	CPUPerNotifUS float64 `json:"server_cpu_us_per_notification,omitempty"`
	FirstError    string  `json:"first_error,omitempty"`
}

func (r *pushReport) human() string {
	var b strings.Builder
	fmt.Fprintf(&b, "push: %d users with pushers in one room × %d messages = %d notifications\n",
		r.Users, r.Messages, r.Expected)
	fmt.Fprintf(&b, "  arrived    %d (%d missing, %d duplicates, %d invalid) in %s\n",
		r.Delivered, r.Missing, r.Duplicates, r.Invalid, fmtSeconds(r.Seconds))
	fmt.Fprintf(&b, "  latency    %s (send to the gateway)\n", r.latencyStats)
	if r.CPUSeconds > 0 {
		fmt.Fprintf(&b, "  server CPU %.3f s, %.0f µs per notification\n", r.CPUSeconds, r.CPUPerNotifUS)
	}
	if r.FirstError != "" {
		fmt.Fprintf(&b, "  first error: %s\n", r.FirstError)
	}
	return b.String()
}

// pushGateway is the tool's push gateway: it records when each
// (pushkey, event) notification arrived.
type pushGateway struct {
	mu      sync.Mutex
	arrived map[[2]string][]time.Time
	invalid int
	counts  int // counts-only (badge) notifications
	changed chan struct{}
}

func (g *pushGateway) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost || r.URL.Path != "/_matrix/push/v1/notify" {
		http.NotFound(w, r)
		return
	}
	now := time.Now()
	var body struct {
		Notification struct {
			EventID string `json:"event_id"`
			RoomID  string `json:"room_id"`
			Devices []struct {
				AppID   string `json:"app_id"`
				PushKey string `json:"pushkey"`
			} `json:"devices"`
		} `json:"notification"`
	}
	raw, err := io.ReadAll(io.LimitReader(r.Body, 1<<20))
	if err != nil {
		return
	}
	bad := json.Unmarshal(raw, &body) != nil
	n := body.Notification
	g.mu.Lock()
	switch {
	case bad || len(n.Devices) == 0 || n.Devices[0].PushKey == "" || n.Devices[0].AppID == "":
		g.invalid++
	case n.EventID == "":
		g.counts++
	default:
		k := [2]string{n.Devices[0].PushKey, n.EventID}
		g.arrived[k] = append(g.arrived[k], now)
	}
	g.mu.Unlock()
	select {
	case g.changed <- struct{}{}:
	default:
	}
	w.Header().Set("Content-Type", "application/json")
	w.Write([]byte(`{"rejected":[]}`))
}

// waitEvent waits until n notifications of an event arrived, or d passed.
func (g *pushGateway) waitEvent(ctx context.Context, eventID string, n int, d time.Duration) bool {
	deadline := time.After(d)
	for {
		g.mu.Lock()
		got := 0
		for k := range g.arrived {
			if k[1] == eventID {
				got++
			}
		}
		g.mu.Unlock()
		if got >= n {
			return true
		}
		select {
		case <-g.changed:
		case <-time.After(100 * time.Millisecond):
		case <-deadline:
			return false
		case <-ctx.Done():
			return false
		}
	}
}

// total is the number of requests of any kind so far.
func (g *pushGateway) total() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	n := g.invalid + g.counts
	for _, ts := range g.arrived {
		n += len(ts)
	}
	return n
}

// countOf is the number of notifications that arrived for the events.
func (g *pushGateway) countOf(events map[string]time.Time) int {
	g.mu.Lock()
	defer g.mu.Unlock()
	n := 0
	for k, ts := range g.arrived {
		if _, ok := events[k[1]]; ok {
			n += len(ts)
		}
	}
	return n
}

func (s *pushScenario) run(ctx context.Context, e *env) (report, error) {
	gw := &pushGateway{arrived: map[[2]string][]time.Time{}, changed: make(chan struct{}, 1)}
	l, err := net.Listen("tcp", s.listen)
	if err != nil {
		return nil, fmt.Errorf("setup: gateway listen: %w", err)
	}
	hsrv := &http.Server{Handler: gw, ReadHeaderTimeout: 10 * time.Second}
	go hsrv.Serve(l)
	defer hsrv.Close()
	gatewayURL := s.gatewayURL
	if gatewayURL == "" {
		gatewayURL = "http://" + l.Addr().String() + "/_matrix/push/v1/notify"
	}

	names := []string{"pushsender"}
	for i := range s.users {
		names = append(names, fmt.Sprintf("push%d", i))
	}
	e.logf("setup: registering %d users", len(names))
	users, err := e.users.registerAll(ctx, names)
	if err != nil {
		return nil, fmt.Errorf("setup: %w", err)
	}
	sender, receivers := users[0], users[1:]
	var roomID string
	err = e.c.retry429(ctx, "createRoom", func() (err error) {
		roomID, err = createRoom(ctx, e.c, sender.AccessToken, map[string]any{
			"preset": "public_chat", "name": "tessera-load push " + e.runID,
		})
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("setup: %w", err)
	}
	e.logf("setup: %d users join and set a pusher at %s", len(receivers), gatewayURL)
	err = forEach(ctx, len(receivers), s.par, func(ctx context.Context, i int) error {
		u := receivers[i]
		if err := e.c.retry429(ctx, "join", func() error { return joinRoom(ctx, e.c, u.AccessToken, roomID) }); err != nil {
			return err
		}
		return e.c.retry429(ctx, "pushers/set", func() error {
			return e.c.do(ctx, http.MethodPost, clientV3+"/pushers/set", nil, u.AccessToken, map[string]any{
				"kind": "http", "app_id": "org.tessera.load", "pushkey": e.runID + "-" + strconv.Itoa(i),
				"app_display_name": "tessera-load", "device_display_name": "load", "lang": "en",
				"data": map[string]any{"url": gatewayURL},
			}, nil)
		})
	})
	if err != nil {
		return nil, fmt.Errorf("setup: %w", err)
	}
	// A warm-up message, its notifications awaited: the server has then
	// caught up with the setup (evaluating a thousand joins), and what is
	// measured is one message, not the setup's backlog.
	e.logf("setup: a warm-up message")
	warm, err := sendText(ctx, e.c, sender.AccessToken, roomID, e.runID+"-push-warmup", "warm-up")
	if err != nil {
		return nil, fmt.Errorf("setup: %w", err)
	}
	if !gw.waitEvent(ctx, warm, len(receivers), s.drain) {
		return nil, fmt.Errorf("setup: the warm-up message's notifications did not all arrive within %s", s.drain)
	}
	// Let whatever setup caused (badge updates) reach the gateway first.
	for prev := gw.total(); ; {
		time.Sleep(s.settle)
		now := gw.total()
		if now == prev {
			break
		}
		prev = now
	}

	var cpu0 float64
	if s.serverPID > 0 {
		if cpu0, err = readCPU(s.serverPID); err != nil {
			return nil, err
		}
	}
	e.logf("measuring: %d messages to %d users with pushers", s.messages, len(receivers))
	rep := &pushReport{Scenario: "push", HS: e.hs, Users: len(receivers), Messages: s.messages,
		Expected: len(receivers) * s.messages}
	sentAt := map[string]time.Time{}
	var firstSend time.Time
	for m := range s.messages {
		t0 := time.Now()
		if m == 0 {
			firstSend = t0
		}
		id, err := sendText(ctx, e.c, sender.AccessToken, roomID, fmt.Sprintf("%s-push-%d", e.runID, m), "push "+strconv.Itoa(m))
		if err != nil {
			rep.FirstError = err.Error()
			break
		}
		sentAt[id] = t0
	}
	want := len(receivers) * len(sentAt)
	deadline := time.After(s.drain)
wait:
	for {
		if gw.countOf(sentAt) >= want {
			break
		}
		select {
		case <-gw.changed:
		case <-time.After(100 * time.Millisecond):
		case <-deadline:
			break wait
		case <-ctx.Done():
			break wait
		}
	}
	if s.serverPID > 0 {
		cpu1, err := readCPU(s.serverPID)
		if err == nil {
			rep.CPUSeconds = cpu1 - cpu0
		}
	}

	gw.mu.Lock()
	var lat []time.Duration
	var last time.Time
	for i := range receivers {
		key := e.runID + "-" + strconv.Itoa(i)
		for id, t0 := range sentAt {
			ts := gw.arrived[[2]string{key, id}]
			if len(ts) == 0 {
				rep.Missing++
				continue
			}
			rep.Delivered++
			rep.Duplicates += len(ts) - 1
			lat = append(lat, ts[0].Sub(t0))
			if ts[0].After(last) {
				last = ts[0]
			}
		}
	}
	rep.Invalid = gw.invalid
	gw.mu.Unlock()
	rep.Missing += (s.messages - len(sentAt)) * len(receivers)
	rep.latencyStats = summarize(lat)
	if !last.IsZero() {
		rep.Seconds = last.Sub(firstSend).Seconds()
	}
	if rep.Delivered > 0 && rep.CPUSeconds > 0 {
		rep.CPUPerNotifUS = rep.CPUSeconds * 1e6 / float64(rep.Delivered)
	}
	if rep.Missing > 0 || rep.Duplicates > 0 || rep.Invalid > 0 {
		return rep, fmt.Errorf("%d notifications missing, %d duplicates, %d invalid requests", rep.Missing, rep.Duplicates, rep.Invalid)
	}
	return rep, nil
}

// readCPU returns a process's CPU time, user and system, in seconds: fields
// 14 and 15 of /proc/PID/stat, in clock ticks (100 a second on Linux).
func readCPU(pid int) (float64, error) {
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// The command name (field 2) is in parentheses and may hold spaces.
	s := string(raw)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0, fmt.Errorf("process %d: unreadable /proc/%d/stat", pid, pid)
	}
	f := strings.Fields(s[i+1:]) // from field 3
	if len(f) < 13 {
		return 0, fmt.Errorf("process %d: short /proc/%d/stat", pid, pid)
	}
	utime, err1 := strconv.ParseFloat(f[11], 64)
	stime, err2 := strconv.ParseFloat(f[12], 64)
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("process %d: unreadable CPU times", pid)
	}
	return (utime + stime) / 100, nil
}
