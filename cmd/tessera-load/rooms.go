package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"strings"
	"sync/atomic"
	"time"
)

// roomsScenario: C workers, each a separate user, create R private rooms in
// total. Creating a room writes half a dozen state events (create, member,
// power levels, join rules, history visibility, name) in one go, so this
// measures the server's event-building and state-storage path rather than
// one room's sequencer.
type roomsScenario struct {
	workers int
	rooms   int
}

func (s *roomsScenario) addFlags(fs *flag.FlagSet) {
	fs.IntVar(&s.workers, "c", 8, "concurrent workers, each a separate user")
	fs.IntVar(&s.rooms, "n", 200, "rooms to create in total")
}

func (s *roomsScenario) check() error {
	if s.workers < 1 || s.workers > 1000 {
		return errors.New("-c must be between 1 and 1000")
	}
	if s.rooms < 1 || s.rooms > 1_000_000 {
		return errors.New("-n must be between 1 and 1000000")
	}
	return nil
}

func (s *roomsScenario) conns() int { return s.workers }

type roomsReport struct {
	Scenario     string  `json:"scenario"`
	HS           string  `json:"hs"`
	Concurrency  int     `json:"concurrency"`
	Rooms        int     `json:"rooms"` // planned
	OK           int     `json:"ok"`
	Errors       int     `json:"errors"`
	Seconds      float64 `json:"seconds"`
	RoomsPerSec  float64 `json:"rooms_per_sec"`
	latencyStats         // of the createRoom calls that succeeded
	FirstError   string  `json:"first_error,omitempty"`
}

func (r *roomsReport) human() string {
	var b strings.Builder
	fmt.Fprintf(&b, "rooms: %d workers creating %d rooms\n", r.Concurrency, r.Rooms)
	fmt.Fprintf(&b, "  created    %d ok, %d errors in %s\n", r.OK, r.Errors, fmtSeconds(r.Seconds))
	fmt.Fprintf(&b, "  throughput %.1f rooms/s\n", r.RoomsPerSec)
	fmt.Fprintf(&b, "  latency    %s\n", r.latencyStats)
	if r.FirstError != "" {
		fmt.Fprintf(&b, "  first error: %s\n", r.FirstError)
	}
	return b.String()
}

func (s *roomsScenario) run(ctx context.Context, e *env) (report, error) {
	names := make([]string, s.workers)
	for i := range names {
		names[i] = fmt.Sprintf("creator%d", i)
	}
	e.logf("setup: registering %d users", len(names))
	users, err := e.users.registerAll(ctx, names)
	if err != nil {
		return nil, fmt.Errorf("setup: %w", err)
	}

	e.logf("measuring: %d workers creating %d rooms", s.workers, s.rooms)
	// Workers take room numbers from a shared counter, so a slow worker
	// does not leave the others idle at the end.
	var next atomic.Int64
	tallies, elapsed, err := measure(ctx, s.workers, func(ctx context.Context, w int, t *tally) {
		for {
			k := int(next.Add(1) - 1)
			if k >= s.rooms {
				return
			}
			t0 := time.Now()
			_, err := createRoom(ctx, e.c, users[w].AccessToken, map[string]any{
				"preset": "private_chat",
				"name":   fmt.Sprintf("tessera-load %s room %d", e.runID, k),
			})
			if !t.record(ctx, time.Since(t0), err) {
				return
			}
		}
	})
	if err != nil {
		return nil, fmt.Errorf("measured phase stopped: %w", err)
	}
	lat, nerr, firstErr := merge(tallies)
	rep := &roomsReport{
		Scenario: "rooms", HS: e.hs, Concurrency: s.workers, Rooms: s.rooms,
		OK: len(lat), Errors: nerr, Seconds: seconds(elapsed), RoomsPerSec: perSecond(len(lat), elapsed),
		latencyStats: summarize(lat),
	}
	if firstErr != nil {
		rep.FirstError = firstErr.Error()
		return rep, fmt.Errorf("%d of %d createRoom calls failed; the first: %w", nerr, s.rooms, firstErr)
	}
	return rep, nil
}
