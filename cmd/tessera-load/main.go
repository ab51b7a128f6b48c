// Command tessera-load is a load generator for Matrix homeservers.
//
// It speaks only the public Client-Server API (plus Synapse's shared-secret
// registration, to create its users), so the same run can be pointed at
// Tessera, Synapse or Dendrite and the figures compared.
//
//	tessera-load -hs URL [-shared-secret S | -register-open] SCENARIO [flags]
//	tessera-load -hs URL_A -hs2 URL_B [-shared-secret S] [-shared-secret2 S2] federation [flags]
//
// Each scenario prints a human-readable summary and then one line of JSON
// with every figure, for scripts. See docs/benchmarks.md.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/url"
	"os"
	"os/signal"
	"syscall"
	"time"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// Exit codes.
const (
	exitOK    = 0
	exitFail  = 1 // the run failed or a check did not pass
	exitUsage = 2
)

// scenario is one kind of load. A fresh value is made for each run.
type scenario interface {
	// addFlags adds the scenario's own flags to fs.
	addFlags(fs *flag.FlagSet)
	// check validates the flag values.
	check() error
	// conns is how many requests the scenario keeps in flight at most, so
	// the connection pool can keep that many connections alive.
	conns() int
	// run sets up, measures and returns the report. It may return a report
	// and an error together: the figures are worth printing even when some
	// requests failed or a check did not pass.
	run(ctx context.Context, e *env) (report, error)
}

// report is a scenario's result; it is marshalled as the final JSON line.
type report interface {
	human() string
}

var scenarios = map[string]func() scenario{
	"send":     func() scenario { return &sendScenario{} },
	"rooms":    func() scenario { return &roomsScenario{} },
	"users":    func() scenario { return &usersScenario{} }, // registration bursts (password hashing)
	"messages": func() scenario { return &messagesScenario{} },
	// Long-poll /sync: delivery latency, initial sync, idle connections.
	"fanout":      func() scenario { return &fanoutScenario{} },
	"initialsync": func() scenario { return &initialSyncScenario{} },
	"idle":        func() scenario { return &idleScenario{} },
	"fanout-ws":   func() scenario { return &fanoutWSScenario{} }, // Tessera's sync stream (WebSocket)
	// Simplified sliding sync (MSC4186): a fresh connection's room list,
	// delivery latency, idle connections.
	"ss-initial": func() scenario { return &ssInitialScenario{} },
	"ss-fanout":  func() scenario { return &ssFanoutScenario{} },
	"ss-conns":   func() scenario { return &ssConnsScenario{} },
	// Two servers: delivery from -hs to -hs2 over federation.
	"federation": func() scenario { return &federationScenario{} },
	// MatrixRTC: the embedded SFU (calls.enabled).
	"calls": func() scenario { return &callsScenario{} },
	// Tessera's built-in incoming webhooks (webhooks.enabled).
	"webhooks": func() scenario { return &webhooksScenario{} },
	// Push notifications: the tool is every user's push gateway.
	"push": func() scenario { return &pushScenario{} },
	// Application services: events pushed in transactions (the tool is
	// the service; appservice-registration writes its registration).
	"appservice":              func() scenario { return &appserviceScenario{} },
	"appservice-registration": func() scenario { return &asRegistrationScenario{} },
}

// standaloneScenario runs without a homeserver (no -hs needed).
type standaloneScenario interface {
	standalone(stdout io.Writer) error
}

// env is what a scenario works with.
type env struct {
	hs    string
	c     *client
	users *userSource
	runID string // makes this run's user names and txn IDs unique
	logf  func(format string, args ...any)
	// The second server (federation): its URL as given, and its shared
	// secret if not the first's.
	hs2, sharedSecret2 string
}

// options are the flags common to every scenario.
type options struct {
	hs            string
	sharedSecret  string
	registerOpen  bool
	hs2           string // a second homeserver (federation only)
	sharedSecret2 string
	timeout       time.Duration
	deadline      time.Duration
	jsonOnly      bool
}

// addFlags adds the common flags to fs. They are added both before and after
// SCENARIO, so `-json-only` works in either place; the defaults are the
// current values so that the second flag set keeps what the first parsed.
func (o *options) addFlags(fs *flag.FlagSet) {
	fs.StringVar(&o.hs, "hs", o.hs, "homeserver base URL, e.g. http://127.0.0.1:8008 (required)")
	fs.StringVar(&o.sharedSecret, "shared-secret", o.sharedSecret,
		"create users with Synapse-compatible shared-secret registration (/_synapse/admin/v1/register)")
	fs.BoolVar(&o.registerOpen, "register-open", o.registerOpen,
		"create users with open registration (/_matrix/client/v3/register, m.login.dummy)")
	fs.StringVar(&o.hs2, "hs2", o.hs2, "a second homeserver's base URL (the federation scenario's receiving server)")
	fs.StringVar(&o.sharedSecret2, "shared-secret2", o.sharedSecret2,
		"the shared secret of -hs2, if not -shared-secret's (with -register-open and without it, -hs2 uses open registration)")
	fs.DurationVar(&o.timeout, "timeout", o.timeout, "timeout of each request")
	fs.DurationVar(&o.deadline, "deadline", o.deadline, "the whole run, setup included, must end within this")
	fs.BoolVar(&o.jsonOnly, "json-only", o.jsonOnly, "print only the final JSON line (errors still go to stderr)")
}

func (o *options) check() error {
	if o.hs == "" {
		return errors.New("-hs is required")
	}
	if err := checkBaseURL("-hs", o.hs); err != nil {
		return err
	}
	if o.hs2 != "" {
		if err := checkBaseURL("-hs2", o.hs2); err != nil {
			return err
		}
	}
	if (o.sharedSecret == "") == !o.registerOpen {
		return errors.New("give exactly one of -shared-secret S and -register-open")
	}
	if o.timeout <= 0 || o.deadline <= 0 {
		return errors.New("-timeout and -deadline must be positive")
	}
	return nil
}

// checkBaseURL checks the value s of the URL flag name.
func checkBaseURL(name, s string) error {
	u, err := url.Parse(s)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return fmt.Errorf("%s %q: want an http:// or https:// URL", name, s)
	}
	if u.User != nil || u.RawQuery != "" || u.Fragment != "" {
		return fmt.Errorf("%s %q: want a plain base URL, without credentials, query or fragment", name, s)
	}
	return nil
}

// optionsChecker is a scenario that also checks the common flags (as
// federation requires -hs2).
type optionsChecker interface {
	checkOptions(o *options) error
}

const usageHead = `usage: tessera-load -hs URL [-shared-secret S | -register-open] SCENARIO [flags]
       tessera-load -hs URL_A -hs2 URL_B [-shared-secret S [-shared-secret2 S2] | -register-open] federation [flags]

scenarios:
  send     [-c 8] [-m 250] [-rooms 1] [-verify]
                                            C users each send M messages into one room (or ROOMS)
           [-via URL,...] [-retry-for D] [-retry-wait 100ms] [-duration D]
                                            failure runs: more entry points, retries with the same
                                            txn ID, send for D; per-room errors, outage, lost, duplicated
  rooms    [-c 8] [-n 200]                  C workers create R rooms in total
  users    [-c 16] [-n 200] [-server-pid P] C workers register N users; with P, the server's peak/median RSS
  messages [-n 2000] [-limit 100] [-c 8]    page backwards through a room of N messages
                                            (-c: parallel sends while filling it)
  fanout   [-s 50] [-n 100] [-interval 15ms] [-poll-timeout 30s] [-drain 10s]
                                            S receivers long-poll /sync (-via URL,...: spread
                                            over more entry points); one sender sends N
                                            messages; latency of every delivery
  fanout-ws [-s 50] [-n 100]                the same over the WebSocket sync stream
  initialsync [-k 50] [-n 50] [-r 5] [-c 8] one user in K rooms of N messages: initial /sync, R times
  idle     [-s 1000] [-d 20] [-poll-timeout 60s] [-settle 2s]
                                            S idle long-polls for D (sample the server meanwhile;
                                            see docs/idle-bench.sh)
  ss-initial [-rooms 1000] [-messages 50] [-r 50] [-c 16]
                                            one user in ROOMS rooms of MESSAGES messages: R fresh
                                            sliding sync connections asking for the top 20 rooms
  ss-fanout [-clients 50] [-n 100] [-interval 15ms] [-poll-timeout 30s] [-drain 10s]
                                            fanout over sliding sync: each client its own user on its
                                            own connection, long-polling with pos
  ss-conns [-conns 1000] [-users 100] [-rooms 0] [-d 20] [-poll-timeout 60s] [-settle 2s] [-server-pid P]
                                            CONNS idle sliding sync long-polls over USERS users for D;
                                            with P, the server's RSS meanwhile
  federation [-s 1] [-n 200] [-interval 10ms] [-poll-timeout 30s] [-drain 15s] [-timeline-limit 100]
                                            one sender on -hs, S receivers on -hs2 long-polling /sync:
                                            latency and events/s over federation (-interval 0: flat out)
  calls    [-p 4] [-d 20s] [-bitrate 500000] [-fps 30]
                                            P users join one call as Element Call does, each publishing
                                            synthetic VP8; join-to-first-RTP latency, received bitrate
                                            (sample the server meanwhile; see docs/calls-bench.sh)
  webhooks [-c 8] [-m 250] [-verify]        C senders each POST M signed GitHub push deliveries to
                                            one hook (webhooks.enabled); webhooks/s, POST-to-room latency
  push     [-n 1000] [-m 1] [-c 16] [-gateway-listen 127.0.0.1:0] [-drain 30s] [-server-pid P]
                                            N users with HTTP pushers (the tool is their gateway) in one
                                            room; M messages; send-to-gateway latency of every
                                            notification; with P, the server's CPU per notification
                                            (push.ip_range_whitelist must allow the gateway)
  appservice-registration [-o FILE] [-as-listen 127.0.0.1:29400]
                                            write the registration of the appservice scenario's
                                            application service (no -hs needed); add it to app_services
  appservice -registration FILE [-c 8] [-m 250] [-drain 30s]
                                            the tool is the application service: C senders send M
                                            messages each into a room with its user; delivered
                                            events/s and the latency from send to transaction

common flags (before or after SCENARIO):
`

// run is main without the process: it returns the exit code.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	opts := options{timeout: 30 * time.Second, deadline: 10 * time.Minute}
	fs := flag.NewFlagSet("tessera-load", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprint(stderr, usageHead)
		fs.PrintDefaults()
	}
	opts.addFlags(fs)
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return exitOK
		}
		return exitUsage
	}
	if fs.NArg() == 0 {
		fmt.Fprintln(stderr, "tessera-load: no scenario given")
		fs.Usage()
		return exitUsage
	}
	name := fs.Arg(0)
	newScenario, ok := scenarios[name]
	if !ok {
		fmt.Fprintf(stderr, "tessera-load: unknown scenario %q\n", name)
		fs.Usage()
		return exitUsage
	}
	sc := newScenario()
	sfs := flag.NewFlagSet("tessera-load "+name, flag.ContinueOnError)
	sfs.SetOutput(stderr)
	opts.addFlags(sfs)
	sc.addFlags(sfs)
	if err := sfs.Parse(fs.Args()[1:]); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return exitOK
		}
		return exitUsage
	}
	if sfs.NArg() > 0 {
		fmt.Fprintf(stderr, "tessera-load %s: unexpected argument %q\n", name, sfs.Arg(0))
		return exitUsage
	}
	if st, ok := sc.(standaloneScenario); ok {
		if err := sc.check(); err != nil {
			fmt.Fprintf(stderr, "tessera-load %s: %v\n", name, err)
			return exitUsage
		}
		if err := st.standalone(stdout); err != nil {
			fmt.Fprintf(stderr, "tessera-load %s: %v\n", name, err)
			return exitFail
		}
		return exitOK
	}
	checks := []func() error{opts.check, sc.check}
	if oc, ok := sc.(optionsChecker); ok {
		checks = append(checks, func() error { return oc.checkOptions(&opts) })
	}
	for _, check := range checks {
		if err := check(); err != nil {
			fmt.Fprintf(stderr, "tessera-load %s: %v\n", name, err)
			return exitUsage
		}
	}

	logf := func(format string, args ...any) {
		if !opts.jsonOnly {
			fmt.Fprintf(stderr, format+"\n", args...)
		}
	}
	c := newClient(opts.hs, opts.timeout, sc.conns(), logf)
	runID := newRunID()
	e := &env{
		hs: c.base, c: c, runID: runID, logf: logf,
		users: &userSource{c: c, sharedSecret: opts.sharedSecret, runID: runID},
		hs2:   opts.hs2, sharedSecret2: opts.sharedSecret2,
	}

	ctx, cancel := context.WithTimeoutCause(ctx, opts.deadline,
		fmt.Errorf("the run's -deadline of %v passed", opts.deadline))
	defer cancel()
	logf("tessera-load %s: run %s against %s", name, runID, c.base)
	rep, err := sc.run(ctx, e)
	if rep != nil {
		if !opts.jsonOnly {
			fmt.Fprint(stdout, rep.human())
		}
		line, jerr := json.Marshal(rep)
		if jerr != nil {
			err = errors.Join(err, jerr)
		} else {
			fmt.Fprintln(stdout, string(line))
		}
	}
	if err != nil {
		// A request cut short by the deadline only says "context deadline
		// exceeded"; name the deadline that did it.
		if cause := context.Cause(ctx); cause != nil && !errors.Is(err, cause) {
			err = fmt.Errorf("%w (%v)", err, cause)
		}
		fmt.Fprintf(stderr, "tessera-load %s: %v\n", name, err)
		return exitFail
	}
	return exitOK
}
