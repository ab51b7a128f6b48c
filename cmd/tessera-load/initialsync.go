package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"slices"
	"strings"
	"time"
)

// initialSyncScenario: one user in K rooms of N messages each (setup, not
// measured) makes an initial /sync (no since token, the default filter, so
// the server's default timeline limit applies), R times. It measures what
// a client signing in on a new device waits for before it can show the
// room list.
type initialSyncScenario struct {
	rooms    int
	messages int
	repeat   int
	setupPar int
}

func (s *initialSyncScenario) addFlags(fs *flag.FlagSet) {
	fs.IntVar(&s.rooms, "k", 50, "rooms the user is in")
	fs.IntVar(&s.messages, "n", 50, "messages in each room")
	fs.IntVar(&s.repeat, "r", 5, "initial syncs to measure, one after another")
	fs.IntVar(&s.setupPar, "c", 8, "concurrent requests while creating and filling the rooms (setup only)")
}

func (s *initialSyncScenario) check() error {
	if s.rooms < 1 || s.rooms > 10_000 {
		return errors.New("-k must be between 1 and 10000")
	}
	if s.messages < 0 || s.messages > 100_000 {
		return errors.New("-n must be between 0 and 100000")
	}
	if s.repeat < 1 || s.repeat > 1000 {
		return errors.New("-r must be between 1 and 1000")
	}
	if s.setupPar < 1 || s.setupPar > 1000 {
		return errors.New("-c must be between 1 and 1000")
	}
	return nil
}

func (s *initialSyncScenario) conns() int { return s.setupPar }

type initialSyncReport struct {
	Scenario        string    `json:"scenario"`
	HS              string    `json:"hs"`
	Rooms           int       `json:"rooms"`             // the user is in
	MessagesPerRoom int       `json:"messages_per_room"` // sent during setup
	Repeat          int       `json:"repeat"`
	MedianMS        float64   `json:"median_ms"`
	MinMS           float64   `json:"min_ms"`
	MaxMS           float64   `json:"max_ms"`
	TimesMS         []float64 `json:"times_ms"` // each run, in order
	// Of the last run: the response's size and what it held.
	Bytes           int `json:"bytes"`
	RoomsInResponse int `json:"rooms_in_response"`
	TimelineEvents  int `json:"timeline_events"`
	StateEvents     int `json:"state_events"`
	LimitedRooms    int `json:"limited_rooms"`
}

func (r *initialSyncReport) human() string {
	var b strings.Builder
	fmt.Fprintf(&b, "initialsync: one user in %d rooms of %d messages, initial /sync %d times\n",
		r.Rooms, r.MessagesPerRoom, r.Repeat)
	fmt.Fprintf(&b, "  time       median %.2f ms (min %.2f, max %.2f); each: %v ms\n", r.MedianMS, r.MinMS, r.MaxMS, r.TimesMS)
	fmt.Fprintf(&b, "  response   %d bytes, %d of %d rooms, %d timeline events (%d rooms limited), %d state events\n",
		r.Bytes, r.RoomsInResponse, r.Rooms, r.TimelineEvents, r.LimitedRooms, r.StateEvents)
	return b.String()
}

func (s *initialSyncScenario) run(ctx context.Context, e *env) (report, error) {
	e.logf("setup: registering 1 user")
	users, err := e.users.registerAll(ctx, []string{"syncer"})
	if err != nil {
		return nil, fmt.Errorf("setup: %w", err)
	}
	u := users[0]
	rooms, err := roomsWithMessages(ctx, e, u, "initialsync", s.rooms, s.messages, s.setupPar)
	if err != nil {
		return nil, fmt.Errorf("setup: %w", err)
	}

	e.logf("measuring: %d initial syncs", s.repeat)
	rep := &initialSyncReport{
		Scenario: "initialsync", HS: e.hs, Rooms: s.rooms, MessagesPerRoom: s.messages, Repeat: s.repeat,
	}
	var lat []time.Duration
	var failed error
	for range s.repeat {
		// Timed: the request until its whole body has been read (and
		// checked to be JSON); decoding it into structs is not.
		var raw json.RawMessage
		t0 := time.Now()
		err := syncOnce(ctx, e.c, u.AccessToken, "", 0, &raw)
		d := time.Since(t0)
		if err != nil {
			return nil, fmt.Errorf("measured phase stopped: %w", err)
		}
		lat = append(lat, d)
		rep.TimesMS = append(rep.TimesMS, ms(d))
		var resp syncResponse
		if err := json.Unmarshal(raw, &resp); err != nil {
			return nil, fmt.Errorf("measured phase stopped: GET /sync: decoding response: %w", err)
		}
		rep.Bytes = len(raw)
		rep.RoomsInResponse, rep.TimelineEvents, rep.StateEvents, rep.LimitedRooms = 0, 0, 0, 0
		for _, id := range rooms {
			jr, ok := resp.Rooms.Join[id]
			if !ok {
				continue
			}
			rep.RoomsInResponse++
			rep.TimelineEvents += len(jr.Timeline.Events)
			rep.StateEvents += len(jr.State.Events)
			if jr.Timeline.Limited {
				rep.LimitedRooms++
			}
		}
		if rep.RoomsInResponse != s.rooms && failed == nil {
			failed = fmt.Errorf("an initial sync listed %d of the user's %d rooms", rep.RoomsInResponse, s.rooms)
		}
	}
	sorted := slices.Clone(lat)
	slices.Sort(sorted)
	rep.MedianMS = ms(median(sorted))
	rep.MinMS, rep.MaxMS = ms(sorted[0]), ms(sorted[len(sorted)-1])
	return rep, failed
}

// median of sorted (ascending, not empty): the middle value, or the mean of
// the two middle ones.
func median(sorted []time.Duration) time.Duration {
	n := len(sorted)
	if n%2 == 1 {
		return sorted[n/2]
	}
	return (sorted[n/2-1] + sorted[n/2]) / 2
}

// roomsWithMessages has u create n private rooms named for the scenario and
// send messages text messages into each, par requests at a time, across
// the rooms: the first message of every room, then the second of every
// room, and so on. It returns the room IDs. For setup: not timed, and 429s
// are waited out.
func roomsWithMessages(ctx context.Context, e *env, u user, scenario string, n, messages, par int) ([]string, error) {
	e.logf("setup: creating %d rooms", n)
	rooms := make([]string, n)
	err := forEach(ctx, n, par, func(ctx context.Context, i int) error {
		return e.c.retry429(ctx, "createRoom", func() (err error) {
			rooms[i], err = createRoom(ctx, e.c, u.AccessToken, map[string]any{
				"preset": "private_chat", "name": fmt.Sprintf("tessera-load %s %s room %d", scenario, e.runID, i),
			})
			return err
		})
	})
	if err != nil {
		return nil, err
	}
	e.logf("setup: sending %d messages into each of %d rooms", messages, n)
	err = forEach(ctx, n*messages, par, func(ctx context.Context, i int) error {
		room, j := i%n, i/n
		return e.c.retry429(ctx, "send", func() error {
			_, err := sendText(ctx, e.c, u.AccessToken, rooms[room],
				fmt.Sprintf("%s.%d.%d", e.runID, room, j), fmt.Sprintf("tessera-load %s: message %d", e.runID, j))
			return err
		})
	})
	if err != nil {
		return nil, err
	}
	return rooms, nil
}
