package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"strings"
	"time"
)

// joinParallel is how many users join a room at once during setup.
const joinParallel = 8

// verifyPageLimit is the page size when -verify pages through the room.
const verifyPageLimit = 100

// sendScenario: C users in one public room each send M messages one after
// another, all C at once. It measures the latency of each send and the
// events per second the room takes, which is bounded by the server's
// per-room write path (one sequencer per room in Tessera). With -rooms R
// the senders are spread over R rooms (sender i in room i mod R), which
// measures the database's shared write path instead of one room's.
type sendScenario struct {
	senders   int
	perSender int
	rooms     int
	verify    bool
}

func (s *sendScenario) addFlags(fs *flag.FlagSet) {
	fs.IntVar(&s.senders, "c", 8, "concurrent senders, each a separate user")
	fs.IntVar(&s.perSender, "m", 250, "messages each sender sends, one after another")
	fs.IntVar(&s.rooms, "rooms", 1, "rooms the senders are spread over (sender i sends into room i mod rooms)")
	fs.BoolVar(&s.verify, "verify", false,
		"afterwards page /messages backwards and check that every sent event_id is there exactly once")
}

func (s *sendScenario) check() error {
	if s.senders < 1 || s.senders > 1000 {
		return errors.New("-c must be between 1 and 1000")
	}
	if s.perSender < 1 || s.perSender > 1_000_000 {
		return errors.New("-m must be between 1 and 1000000")
	}
	if s.rooms < 1 || s.rooms > s.senders {
		return errors.New("-rooms must be between 1 and -c")
	}
	return nil
}

func (s *sendScenario) conns() int { return s.senders }

type sendReport struct {
	Scenario     string        `json:"scenario"`
	HS           string        `json:"hs"`
	Concurrency  int           `json:"concurrency"`
	Rooms        int           `json:"rooms"`
	Messages     int           `json:"messages"` // planned: concurrency × messages per sender
	OK           int           `json:"ok"`
	Errors       int           `json:"errors"`
	Seconds      float64       `json:"seconds"`
	EventsPerSec float64       `json:"events_per_sec"`
	latencyStats               // of the sends that succeeded
	FirstError   string        `json:"first_error,omitempty"`
	Verify       *verifyResult `json:"verify,omitempty"`
}

type verifyResult struct {
	OK    bool `json:"ok"`
	Pages int  `json:"pages"`
	// Missing are sent event IDs /messages did not return; Duplicates are
	// extra copies it returned, or event IDs the server gave to two sends.
	Missing    int `json:"missing"`
	Duplicates int `json:"duplicates"`
}

func (r *sendReport) human() string {
	var b strings.Builder
	fmt.Fprintf(&b, "send: %d senders × %d messages = %d events into %d room(s)\n",
		r.Concurrency, r.Messages/max(r.Concurrency, 1), r.Messages, r.Rooms)
	fmt.Fprintf(&b, "  sent       %d ok, %d errors in %s\n", r.OK, r.Errors, fmtSeconds(r.Seconds))
	fmt.Fprintf(&b, "  throughput %.1f events/s\n", r.EventsPerSec)
	fmt.Fprintf(&b, "  latency    %s\n", r.latencyStats)
	if r.FirstError != "" {
		fmt.Fprintf(&b, "  first error: %s\n", r.FirstError)
	}
	if v := r.Verify; v != nil {
		verdict := "ok"
		if !v.OK {
			verdict = "FAILED"
		}
		fmt.Fprintf(&b, "  verify     %s: %d pages, %d missing, %d duplicates\n", verdict, v.Pages, v.Missing, v.Duplicates)
	}
	return b.String()
}

func (s *sendScenario) run(ctx context.Context, e *env) (report, error) {
	names := []string{"creator"}
	for i := range s.senders {
		names = append(names, fmt.Sprintf("sender%d", i))
	}
	e.logf("setup: registering %d users", len(names))
	users, err := e.users.registerAll(ctx, names)
	if err != nil {
		return nil, fmt.Errorf("setup: %w", err)
	}
	creator, senders := users[0], users[1:]

	roomIDs := make([]string, s.rooms)
	for r := range roomIDs {
		err = e.c.retry429(ctx, "createRoom", func() (err error) {
			roomIDs[r], err = createRoom(ctx, e.c, creator.AccessToken, map[string]any{
				"preset": "public_chat", "name": "tessera-load send " + e.runID,
			})
			return err
		})
		if err != nil {
			return nil, fmt.Errorf("setup: %w", err)
		}
	}
	e.logf("setup: %d senders joining %v", len(senders), roomIDs)
	err = forEach(ctx, len(senders), joinParallel, func(ctx context.Context, i int) error {
		return e.c.retry429(ctx, "join", func() error {
			return joinRoom(ctx, e.c, senders[i].AccessToken, roomIDs[i%s.rooms])
		})
	})
	if err != nil {
		return nil, fmt.Errorf("setup: %w", err)
	}

	e.logf("measuring: %d senders × %d messages", s.senders, s.perSender)
	ids := make([][]string, s.senders) // per worker, so appending takes no lock
	tallies, elapsed, err := measure(ctx, s.senders, func(ctx context.Context, w int, t *tally) {
		for j := range s.perSender {
			txnID := fmt.Sprintf("%s.%d.%d", e.runID, w, j)
			body := fmt.Sprintf("tessera-load %s: message %d from sender %d", e.runID, j, w)
			t0 := time.Now()
			id, err := sendText(ctx, e.c, senders[w].AccessToken, roomIDs[w%s.rooms], txnID, body)
			if !t.record(ctx, time.Since(t0), err) {
				return
			}
			if err == nil {
				ids[w] = append(ids[w], id)
			}
		}
	})
	if err != nil {
		return nil, fmt.Errorf("measured phase stopped: %w", err)
	}
	lat, nerr, firstErr := merge(tallies)
	rep := &sendReport{
		Scenario: "send", HS: e.hs, Concurrency: s.senders, Rooms: s.rooms, Messages: s.senders * s.perSender,
		OK: len(lat), Errors: nerr, Seconds: seconds(elapsed), EventsPerSec: perSecond(len(lat), elapsed),
		latencyStats: summarize(lat),
	}
	var failed error
	if firstErr != nil {
		rep.FirstError = firstErr.Error()
		failed = fmt.Errorf("%d of %d sends failed; the first: %w", nerr, rep.Messages, firstErr)
	}

	if s.verify {
		e.logf("verifying: paging /messages backwards")
		v := &verifyResult{OK: true}
		for r, roomID := range roomIDs {
			var inRoom [][]string
			for w := r; w < len(ids); w += s.rooms {
				inRoom = append(inRoom, ids[w])
			}
			rv, err := verifySent(ctx, e, creator, roomID, inRoom)
			if err != nil {
				return rep, errors.Join(failed, fmt.Errorf("verify: %w", err))
			}
			v.OK = v.OK && rv.OK
			v.Pages += rv.Pages
			v.Missing += rv.Missing
			v.Duplicates += rv.Duplicates
		}
		rep.Verify = v
		if !v.OK {
			failed = errors.Join(failed, fmt.Errorf("verify: %d sent events missing from /messages, %d duplicates",
				v.Missing, v.Duplicates))
		}
	}
	return rep, failed
}

// verifySent pages through the room and checks that each sent event ID
// comes back exactly once.
func verifySent(ctx context.Context, e *env, reader user, roomID string, ids [][]string) (*verifyResult, error) {
	seen := map[string]int{}
	sent := 0
	for _, w := range ids {
		for _, id := range w {
			seen[id] = 0
			sent++
		}
	}
	v := &verifyResult{Duplicates: sent - len(seen)}
	// Each page holds at least one event, and the room holds little besides
	// what was sent, so this bound is never reached by a working server.
	maxPages := sent + 1000
	pages, _, err := pageBackwards(ctx, e.c, reader.AccessToken, roomID, verifyPageLimit, maxPages, func(ev event) {
		if n, ok := seen[ev.EventID]; ok {
			seen[ev.EventID] = n + 1
		}
	})
	if err != nil {
		return nil, err
	}
	v.Pages = pages
	for _, n := range seen {
		if n == 0 {
			v.Missing++
		} else {
			v.Duplicates += n - 1
		}
	}
	v.OK = v.Missing == 0 && v.Duplicates == 0
	return v, nil
}
