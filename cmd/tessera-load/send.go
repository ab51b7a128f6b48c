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
//
// For failure runs (docs/scaling.md) it can also send through several entry
// points of one deployment (-via), retry each send with its transaction ID
// as a real client does (-retry-for), send for a while rather than a count
// (-duration), and report per room what was acknowledged, what failed and
// the longest time the room took no write.
type sendScenario struct {
	senders   int
	perSender int
	rooms     int
	verify    bool
	via       string        // more entry points, comma-separated
	retryFor  time.Duration // 0: a failed send is not retried
	retryWait time.Duration
	duration  time.Duration // 0: each sender sends -m messages

	entries []string // -hs, then -via
}

func (s *sendScenario) addFlags(fs *flag.FlagSet) {
	fs.IntVar(&s.senders, "c", 8, "concurrent senders, each a separate user")
	fs.IntVar(&s.perSender, "m", 250, "messages each sender sends, one after another (with -duration, at most)")
	fs.IntVar(&s.rooms, "rooms", 1, "rooms the senders are spread over (sender i sends into room i mod rooms)")
	fs.BoolVar(&s.verify, "verify", false,
		"afterwards page /messages backwards and check that every acknowledged send is there exactly once")
	fs.StringVar(&s.via, "via", "",
		"more entry points of the same deployment (comma-separated URLs): room r is created through entry r mod n, "+
			"sender i sends through entry (i + i/rooms) mod n, and a request an entry does not answer goes to the next")
	fs.DurationVar(&s.retryFor, "retry-for", 0,
		"retry a failed send with the same transaction ID until it succeeds or this has passed since its first attempt (0: no retries)")
	fs.DurationVar(&s.retryWait, "retry-wait", 100*time.Millisecond, "wait between retries of one send")
	fs.DurationVar(&s.duration, "duration", 0, "send for this long rather than -m messages per sender (0: -m)")
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
	if s.retryFor < 0 || s.duration < 0 || s.retryWait < 0 {
		return errors.New("-retry-for, -retry-wait and -duration must not be negative")
	}
	if s.via != "" {
		for _, u := range strings.Split(s.via, ",") {
			if err := checkBaseURL("-via", u); err != nil {
				return err
			}
		}
	}
	return nil
}

func (s *sendScenario) conns() int { return s.senders }

type sendReport struct {
	Scenario     string        `json:"scenario"`
	HS           string        `json:"hs"`
	Concurrency  int           `json:"concurrency"`
	Rooms        int           `json:"rooms"`
	Messages     int           `json:"messages"` // planned: concurrency × messages per sender (an upper bound with -duration)
	OK           int           `json:"ok"`
	Errors       int           `json:"errors"` // failed attempts, retried or not
	Seconds      float64       `json:"seconds"`
	EventsPerSec float64       `json:"events_per_sec"`
	latencyStats               // of the sends that succeeded, from the first attempt to the answer
	FirstError   string        `json:"first_error,omitempty"`
	Verify       *verifyResult `json:"verify,omitempty"`
	// With -via, -retry-for or -duration (failure runs):
	Retries        int           `json:"retries,omitempty"`
	Unacknowledged int           `json:"unacknowledged,omitempty"` // sends given up on
	Entries        []entryReport `json:"entries,omitempty"`
	PerRoom        []roomReport  `json:"per_room,omitempty"`
}

type verifyResult struct {
	OK    bool `json:"ok"`
	Pages int  `json:"pages"`
	// Missing are sent event IDs /messages did not return; Duplicates are
	// extra copies it returned, or event IDs the server gave to two sends.
	Missing    int `json:"missing"`
	Duplicates int `json:"duplicates"`
	// send only: acknowledged sends whose message is there under another
	// event ID than the one acknowledged, and sends given up on whose
	// message is there all the same (committed, but the answer was lost).
	WrongID             int `json:"wrong_id,omitempty"`
	UnacknowledgedFound int `json:"unacknowledged_found,omitempty"`
}

func (s *sendScenario) failureRun() bool {
	return len(s.entries) > 1 || s.retryFor > 0 || s.duration > 0
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
	if r.Entries != nil {
		fmt.Fprintf(&b, "  retries    %d, %d sends given up on\n", r.Retries, r.Unacknowledged)
		for _, en := range r.Entries {
			fmt.Fprintf(&b, "  entry      %s: %d answered, %d failed over to the next\n", en.URL, en.Answered, en.Failovers)
		}
		for _, rr := range r.PerRoom {
			fmt.Fprintf(&b, "  room       %s (via %d): %d acknowledged, errors %v, %d retries, %d given up, longest without a write %.0f ms\n",
				rr.RoomID, rr.CreatedVia, rr.Acknowledged, rr.Errors, rr.Retries, rr.Unacknowledged, rr.LongestGapMS)
		}
	}
	if v := r.Verify; v != nil {
		verdict := "ok"
		if !v.OK {
			verdict = "FAILED"
		}
		fmt.Fprintf(&b, "  verify     %s: %d pages, %d missing, %d duplicates", verdict, v.Pages, v.Missing, v.Duplicates)
		if v.WrongID > 0 || v.UnacknowledgedFound > 0 {
			fmt.Fprintf(&b, ", %d under another event ID, %d sends given up on found", v.WrongID, v.UnacknowledgedFound)
		}
		b.WriteString("\n")
	}
	return b.String()
}

// sent is one send of the measured phase.
type sent struct {
	body    string
	eventID string // "" if it was given up on
}

func (s *sendScenario) run(ctx context.Context, e *env) (report, error) {
	s.entries = []string{e.hs}
	clients := []*client{e.c}
	if s.via != "" {
		for _, u := range strings.Split(s.via, ",") {
			c := newClient(u, e.c.timeout, s.conns(), e.logf)
			s.entries = append(s.entries, c.base)
			clients = append(clients, c)
		}
	}
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

	// Room r is created through entry r mod n: with Tessera's scale-out, the
	// process that creates a room owns it, so the rooms are spread over
	// the owners.
	roomIDs := make([]string, s.rooms)
	for r := range roomIDs {
		c := clients[r%len(clients)]
		err = c.retry429(ctx, "createRoom", func() (err error) {
			roomIDs[r], err = createRoom(ctx, c, creator.AccessToken, map[string]any{
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
		c := clients[s.entryOf(i)]
		return c.retry429(ctx, "join", func() error {
			return joinRoom(ctx, c, senders[i].AccessToken, roomIDs[i%s.rooms])
		})
	})
	if err != nil {
		return nil, fmt.Errorf("setup: %w", err)
	}

	if s.duration > 0 {
		e.logf("measuring: %d senders for %v (at most %d messages each)", s.senders, s.duration, s.perSender)
	} else {
		e.logf("measuring: %d senders × %d messages", s.senders, s.perSender)
	}
	rooms := make([]roomTally, s.rooms)
	entries := make([]entryTally, len(clients))
	sends := make([][]sent, s.senders) // per worker, so appending takes no lock
	t0 := time.Now()
	tallies, elapsed, err := measure(ctx, s.senders, func(ctx context.Context, w int, t *tally) {
		for j := range s.perSender {
			if s.duration > 0 && time.Since(t0) >= s.duration {
				return
			}
			txnID := fmt.Sprintf("%s.%d.%d", e.runID, w, j)
			body := fmt.Sprintf("tessera-load %s: message %d from sender %d", e.runID, j, w)
			first := time.Now()
			id, err := s.sendOne(ctx, clients, entries, &rooms[w%s.rooms], senders[w].AccessToken, roomIDs[w%s.rooms], s.entryOf(w), txnID, body, t)
			if ctx.Err() != nil || t.fatal != nil {
				if t.fatal == nil {
					t.fatal = context.Cause(ctx)
				}
				return
			}
			if err == nil {
				t.lat = append(t.lat, time.Since(first))
			}
			sends[w] = append(sends[w], sent{body: body, eventID: id})
		}
	})
	end := time.Now()
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
	}
	if s.failureRun() {
		for i := range entries {
			rep.Entries = append(rep.Entries, entryReport{
				URL: s.entries[i], Answered: entries[i].answered.Load(), Failovers: entries[i].failovers.Load(),
			})
		}
		for r := range rooms {
			rr := rooms[r].report(roomIDs[r], r%len(clients), t0, end)
			rep.Retries += rr.Retries
			rep.Unacknowledged += rr.Unacknowledged
			rep.PerRoom = append(rep.PerRoom, rr)
		}
		if rep.Unacknowledged > 0 {
			failed = fmt.Errorf("%d sends given up on (%d failed attempts); the first error: %w", rep.Unacknowledged, nerr, firstErr)
		}
	} else if firstErr != nil {
		failed = fmt.Errorf("%d of %d sends failed; the first: %w", nerr, rep.Messages, firstErr)
	}

	if s.verify {
		e.logf("verifying: paging /messages backwards")
		v := &verifyResult{OK: true}
		for r, roomID := range roomIDs {
			var inRoom []sent
			for w := r; w < len(sends); w += s.rooms {
				inRoom = append(inRoom, sends[w]...)
			}
			rv, err := verifyBodies(ctx, e, creator, roomID, inRoom)
			if err != nil {
				return rep, errors.Join(failed, fmt.Errorf("verify: %w", err))
			}
			v.OK = v.OK && rv.OK
			v.Pages += rv.Pages
			v.Missing += rv.Missing
			v.Duplicates += rv.Duplicates
			v.WrongID += rv.WrongID
			v.UnacknowledgedFound += rv.UnacknowledgedFound
			if rep.PerRoom != nil {
				rep.PerRoom[r].Lost, rep.PerRoom[r].Duplicated = rv.Missing, rv.Duplicates
			}
		}
		rep.Verify = v
		if !v.OK {
			failed = errors.Join(failed, fmt.Errorf("verify: %d acknowledged events missing from /messages, %d duplicates, %d under another event ID",
				v.Missing, v.Duplicates, v.WrongID))
		}
	}
	return rep, failed
}

// entryOf is the entry point sender w sends through: with R rooms, the
// senders of one room go through different entries.
func (s *sendScenario) entryOf(w int) int {
	n := max(len(s.entries), 1)
	return (w + w/s.rooms) % n
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
