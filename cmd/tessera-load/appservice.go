package main

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"sync"
	"time"
)

// The appservice scenario measures how fast a homeserver pushes room events
// to an application service. The tool is the application service: it
// serves PUT /_matrix/app/v1/transactions/{txnId} itself. The server must
// know it, so there are two steps:
//
//	tessera-load appservice-registration -o as.yaml [-as-listen 127.0.0.1:29400]
//	  (add as.yaml to the server's app_services and start the server)
//	tessera-load -hs URL -shared-secret S appservice -registration as.yaml [-c 8] [-m 250]
//
// The registration's user namespace is every "<runID>-asbridge" user: each
// run registers its own such user, which joins the room, so that the
// service is interested in the room's events.

// asNamespace is the user namespace of the registration the tool writes.
const asNamespace = `@[a-z0-9]{8}-asbridge:.*`

// asRegistration is the part of a registration file the tool reads and
// writes (as JSON, which is YAML too).
type asRegistration struct {
	ID              string `json:"id"`
	URL             string `json:"url"`
	ASToken         string `json:"as_token"`
	HSToken         string `json:"hs_token"`
	SenderLocalpart string `json:"sender_localpart"`
	RateLimited     bool   `json:"rate_limited"`
	Namespaces      struct {
		Users []asNamespaceEntry `json:"users"`
	} `json:"namespaces"`
}

type asNamespaceEntry struct {
	Exclusive bool   `json:"exclusive"`
	Regex     string `json:"regex"`
}

// asRegistrationScenario writes the registration file; it needs no server.
type asRegistrationScenario struct {
	out    string
	listen string
}

func (s *asRegistrationScenario) addFlags(fs *flag.FlagSet) {
	fs.StringVar(&s.out, "o", "tessera-load-appservice.yaml", "the registration file to write")
	fs.StringVar(&s.listen, "as-listen", "127.0.0.1:29400", "where the appservice scenario will listen for transactions")
}

func (s *asRegistrationScenario) check() error {
	if _, _, err := net.SplitHostPort(s.listen); err != nil {
		return fmt.Errorf("-as-listen %q: %v", s.listen, err)
	}
	return nil
}

func (s *asRegistrationScenario) conns() int { return 1 }

func (s *asRegistrationScenario) run(context.Context, *env) (report, error) {
	return nil, errors.New("appservice-registration runs without a server")
}

// standalone writes its output without talking to a homeserver.
func (s *asRegistrationScenario) standalone(stdout io.Writer) error {
	reg := asRegistration{
		ID: "tessera-load", URL: "http://" + s.listen, ASToken: rand.Text(), HSToken: rand.Text(),
		SenderLocalpart: "tessera-load-bot",
	}
	reg.Namespaces.Users = []asNamespaceEntry{{Exclusive: false, Regex: asNamespace}}
	// JSON is YAML: the server reads it as a registration file, and the
	// tool needs no YAML library to read it back.
	raw, err := json.MarshalIndent(&reg, "", "  ")
	if err != nil {
		return err
	}
	if err := os.WriteFile(s.out, raw, 0o600); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "wrote %s: add it to the server's app_services, start the server, then run\n"+
		"  tessera-load -hs URL -shared-secret S appservice -registration %s\n", s.out, s.out)
	return nil
}

// appserviceScenario: C users in one room with the service's user each
// send M messages one after another, all C at once; the tool, as the
// application service, receives the room's events in transactions.
type appserviceScenario struct {
	registration string
	senders      int
	perSender    int
	drain        time.Duration
}

func (s *appserviceScenario) addFlags(fs *flag.FlagSet) {
	fs.StringVar(&s.registration, "registration", "", "the registration file written by appservice-registration (required)")
	fs.IntVar(&s.senders, "c", 8, "concurrent senders, each a separate user")
	fs.IntVar(&s.perSender, "m", 250, "messages each sender sends, one after another")
	fs.DurationVar(&s.drain, "drain", 30*time.Second, "how long to wait after the last send for the last delivery")
}

func (s *appserviceScenario) check() error {
	if s.registration == "" {
		return errors.New("-registration is required")
	}
	if s.senders < 1 || s.senders > 1000 {
		return errors.New("-c must be between 1 and 1000")
	}
	if s.perSender < 1 || s.perSender > 1_000_000 {
		return errors.New("-m must be between 1 and 1000000")
	}
	return nil
}

func (s *appserviceScenario) conns() int { return s.senders }

type appserviceReport struct {
	Scenario    string  `json:"scenario"`
	HS          string  `json:"hs"`
	Concurrency int     `json:"concurrency"`
	Messages    int     `json:"messages"`
	Sent        int     `json:"sent"`
	Errors      int     `json:"errors"`
	Delivered   int     `json:"delivered"`
	Missing     int     `json:"missing"`
	Duplicates  int     `json:"duplicates"`
	OutOfOrder  int     `json:"out_of_order"`
	Txns        int     `json:"transactions"`
	Seconds     float64 `json:"seconds"`
	// EventsPerSec is delivered events per second, from the first send
	// to the last delivery.
	EventsPerSec float64 `json:"events_per_sec"`
	// Latency is from the start of each send to its delivery to the
	// service.
	latencyStats
	FirstError string `json:"first_error,omitempty"`
}

func (r *appserviceReport) human() string {
	var b strings.Builder
	fmt.Fprintf(&b, "appservice: %d senders × %d messages = %d events pushed to an application service\n",
		r.Concurrency, r.Messages/max(r.Concurrency, 1), r.Messages)
	fmt.Fprintf(&b, "  sent       %d ok, %d errors\n", r.Sent, r.Errors)
	fmt.Fprintf(&b, "  delivered  %d in %d transactions (%d missing, %d duplicates, %d out of order) in %s\n",
		r.Delivered, r.Txns, r.Missing, r.Duplicates, r.OutOfOrder, fmtSeconds(r.Seconds))
	fmt.Fprintf(&b, "  throughput %.1f events/s delivered\n", r.EventsPerSec)
	fmt.Fprintf(&b, "  delivery   %s\n", r.latencyStats)
	if r.FirstError != "" {
		fmt.Fprintf(&b, "  first error: %s\n", r.FirstError)
	}
	return b.String()
}

// asReceiver is the tool's application service.
type asReceiver struct {
	hsToken string
	runID   string

	mu        sync.Mutex
	sentAt    map[string]time.Time // body -> start of its send
	delivered map[string]time.Duration
	// lastSeq is, per sender, the sequence number last delivered.
	lastSeq    map[int]int
	outOfOrder int
	duplicates int
	txns       map[string]bool
	last       time.Time
	changed    chan struct{}
}

func (a *asReceiver) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	auth := r.Header.Get("Authorization")
	if subtle.ConstantTimeCompare([]byte(auth), []byte("Bearer "+a.hsToken)) != 1 {
		w.WriteHeader(http.StatusForbidden)
		io.WriteString(w, `{"errcode":"M_FORBIDDEN","error":"bad hs_token"}`)
		return
	}
	const prefix = "/_matrix/app/v1/transactions/"
	if r.Method != http.MethodPut || !strings.HasPrefix(r.URL.Path, prefix) {
		w.WriteHeader(http.StatusNotFound)
		io.WriteString(w, `{"errcode":"M_UNRECOGNIZED","error":"not here"}`)
		return
	}
	txnID := strings.TrimPrefix(r.URL.Path, prefix)
	var txn struct {
		Events []struct {
			Content map[string]any `json:"content"`
		} `json:"events"`
	}
	if err := json.NewDecoder(r.Body).Decode(&txn); err != nil {
		w.WriteHeader(http.StatusBadRequest)
		io.WriteString(w, `{"errcode":"M_NOT_JSON","error":"bad body"}`)
		return
	}
	now := time.Now()
	a.mu.Lock()
	if !a.txns[txnID] { // a retry of a transaction already seen is dropped, as the spec says
		a.txns[txnID] = true
		for _, ev := range txn.Events {
			body, _ := ev.Content["body"].(string)
			var seq, w int
			if _, err := fmt.Sscanf(body, "tessera-load "+a.runID+": message %d from sender %d", &seq, &w); err != nil {
				continue
			}
			if _, dup := a.delivered[body]; dup {
				a.duplicates++
				continue
			}
			if last, ok := a.lastSeq[w]; ok && seq != last+1 || !ok && seq != 0 {
				a.outOfOrder++
			}
			a.lastSeq[w] = seq
			if t0, ok := a.sentAt[body]; ok {
				a.delivered[body] = now.Sub(t0)
			} else {
				a.delivered[body] = -1 // not one of this run's sends
			}
			a.last = now
		}
	}
	a.mu.Unlock()
	select {
	case a.changed <- struct{}{}:
	default:
	}
	w.Header().Set("Content-Type", "application/json")
	io.WriteString(w, "{}")
}

func (s *appserviceScenario) run(ctx context.Context, e *env) (report, error) {
	raw, err := os.ReadFile(s.registration)
	if err != nil {
		return nil, err
	}
	var reg asRegistration
	if err := json.Unmarshal(raw, &reg); err != nil {
		return nil, fmt.Errorf("%s: %w", s.registration, err)
	}
	u, err := url.Parse(reg.URL)
	if err != nil || u.Host == "" {
		return nil, fmt.Errorf("%s: url %q", s.registration, reg.URL)
	}
	recv := &asReceiver{hsToken: reg.HSToken, runID: e.runID, sentAt: map[string]time.Time{},
		delivered: map[string]time.Duration{}, lastSeq: map[int]int{}, txns: map[string]bool{},
		changed: make(chan struct{}, 1)}
	l, err := net.Listen("tcp", u.Host)
	if err != nil {
		return nil, fmt.Errorf("listen for transactions: %w", err)
	}
	srv := &http.Server{Handler: recv}
	go srv.Serve(l)
	defer srv.Close()

	names := []string{"creator", "asbridge"}
	for i := range s.senders {
		names = append(names, fmt.Sprintf("sender%d", i))
	}
	e.logf("setup: registering %d users", len(names))
	users, err := e.users.registerAll(ctx, names)
	if err != nil {
		return nil, fmt.Errorf("setup: %w", err)
	}
	creator, members := users[0], users[1:]
	senders := users[2:]
	var roomID string
	err = e.c.retry429(ctx, "createRoom", func() (err error) {
		roomID, err = createRoom(ctx, e.c, creator.AccessToken, map[string]any{
			"preset": "public_chat", "name": "tessera-load appservice " + e.runID,
		})
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("setup: %w", err)
	}
	err = forEach(ctx, len(members), joinParallel, func(ctx context.Context, i int) error {
		return e.c.retry429(ctx, "join", func() error { return joinRoom(ctx, e.c, members[i].AccessToken, roomID) })
	})
	if err != nil {
		return nil, fmt.Errorf("setup: %w", err)
	}

	e.logf("measuring: %d senders × %d messages, delivered to the application service at %s", s.senders, s.perSender, reg.URL)
	start := time.Now()
	tallies, _, err := measure(ctx, s.senders, func(ctx context.Context, w int, t *tally) {
		for j := range s.perSender {
			body := fmt.Sprintf("tessera-load %s: message %d from sender %d", e.runID, j, w)
			t0 := time.Now()
			recv.mu.Lock()
			recv.sentAt[body] = t0
			recv.mu.Unlock()
			_, err := sendText(ctx, e.c, senders[w].AccessToken, roomID, fmt.Sprintf("%s.as.%d.%d", e.runID, w, j), body)
			if !t.record(ctx, time.Since(t0), err) {
				return
			}
		}
	})
	if err != nil {
		return nil, fmt.Errorf("measured phase stopped: %w", err)
	}
	lat, nerr, firstErr := merge(tallies)
	want := len(lat)
	deadline := time.NewTimer(s.drain)
	defer deadline.Stop()
wait:
	for {
		recv.mu.Lock()
		n := len(recv.delivered)
		recv.mu.Unlock()
		if n >= want {
			break
		}
		select {
		case <-recv.changed:
		case <-deadline.C:
			break wait
		case <-ctx.Done():
			break wait
		}
	}
	recv.mu.Lock()
	defer recv.mu.Unlock()
	var delays []time.Duration
	for _, d := range recv.delivered {
		if d >= 0 {
			delays = append(delays, d)
		}
	}
	elapsed := recv.last.Sub(start)
	rep := &appserviceReport{
		Scenario: "appservice", HS: e.hs, Concurrency: s.senders, Messages: s.senders * s.perSender,
		Sent: want, Errors: nerr, Delivered: len(recv.delivered), Missing: max(want-len(recv.delivered), 0),
		Duplicates: recv.duplicates, OutOfOrder: recv.outOfOrder, Txns: len(recv.txns),
		Seconds: seconds(elapsed), EventsPerSec: perSecond(len(recv.delivered), elapsed),
		latencyStats: summarize(delays),
	}
	var failed error
	if firstErr != nil {
		rep.FirstError = firstErr.Error()
		failed = fmt.Errorf("%d of %d sends failed; the first: %w", nerr, rep.Messages, firstErr)
	}
	if rep.Missing > 0 || rep.Duplicates > 0 || rep.OutOfOrder > 0 {
		failed = errors.Join(failed, fmt.Errorf("%d events not delivered, %d twice, %d out of order",
			rep.Missing, rep.Duplicates, rep.OutOfOrder))
	}
	return rep, failed
}
