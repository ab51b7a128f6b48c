package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"strings"
	"time"
)

// ssInitialScenario: one user in N rooms of M messages each (setup, not
// measured) opens a fresh sliding sync connection R times: no pos, a new
// conn_id each time, one list of the top 20 rooms with timeline_limit 1,
// their names and lazy members. That is what Element X asks first to draw
// its room list, and with sliding sync it should cost the same whatever N
// is: the server sorts the rooms, but builds only 20.
type ssInitialScenario struct {
	rooms    int
	messages int
	repeat   int
	setupPar int
}

// ssInitialRange is how many rooms the measured requests ask for.
const ssInitialRange = 20

func (s *ssInitialScenario) addFlags(fs *flag.FlagSet) {
	fs.IntVar(&s.rooms, "rooms", 1000, "rooms the user is in")
	fs.IntVar(&s.messages, "messages", 50, "messages in each room")
	fs.IntVar(&s.repeat, "r", 50, "fresh-connection requests to measure, one after another")
	fs.IntVar(&s.setupPar, "c", 16, "concurrent requests while creating and filling the rooms (setup only)")
}

func (s *ssInitialScenario) check() error {
	if s.rooms < 1 || s.rooms > 100_000 {
		return errors.New("-rooms must be between 1 and 100000")
	}
	if s.messages < 0 || s.messages > 100_000 {
		return errors.New("-messages must be between 0 and 100000")
	}
	if s.repeat < 1 || s.repeat > 10_000 {
		return errors.New("-r must be between 1 and 10000")
	}
	if s.setupPar < 1 || s.setupPar > 1000 {
		return errors.New("-c must be between 1 and 1000")
	}
	return nil
}

func (s *ssInitialScenario) conns() int { return s.setupPar }

type ssInitialReport struct {
	Scenario        string `json:"scenario"`
	HS              string `json:"hs"`
	Rooms           int    `json:"rooms"`             // the user is in
	MessagesPerRoom int    `json:"messages_per_room"` // sent during setup
	Range           int    `json:"range"`             // rooms asked for: ranges [[0, range-1]]
	TimelineLimit   int    `json:"timeline_limit"`
	Repeat          int    `json:"repeat"`
	// SetupSeconds is creating and filling the rooms.
	SetupSeconds float64 `json:"setup_seconds"`
	// Latency of the R requests, from just before each was sent until its
	// whole body had been read.
	latencyStats
	TimesMS []float64 `json:"times_ms"` // each request, in order
	// Of the last request: the response's size and what it held.
	Bytes           int `json:"bytes"`
	ListCount       int `json:"list_count"`
	RoomsInResponse int `json:"rooms_in_response"`
	TimelineEvents  int `json:"timeline_events"`
	// BadResponses are responses without the expected rooms or count.
	BadResponses int    `json:"bad_responses"`
	FirstBad     string `json:"first_bad,omitempty"`
}

func (r *ssInitialReport) human() string {
	var b strings.Builder
	fmt.Fprintf(&b, "ss-initial: one user in %d rooms of %d messages, a fresh sliding sync connection %d times\n",
		r.Rooms, r.MessagesPerRoom, r.Repeat)
	fmt.Fprintf(&b, "  asking for rooms 0-%d, timeline_limit %d (setup took %s)\n",
		r.Range-1, r.TimelineLimit, fmtSeconds(r.SetupSeconds))
	fmt.Fprintf(&b, "  latency    %s\n", r.latencyStats)
	fmt.Fprintf(&b, "  response   %d bytes, list count %d, %d rooms, %d timeline events\n",
		r.Bytes, r.ListCount, r.RoomsInResponse, r.TimelineEvents)
	if r.BadResponses > 0 {
		fmt.Fprintf(&b, "  %d bad responses; the first: %s\n", r.BadResponses, r.FirstBad)
	}
	return b.String()
}

func (s *ssInitialScenario) run(ctx context.Context, e *env) (report, error) {
	e.logf("setup: registering 1 user")
	users, err := e.users.registerAll(ctx, []string{"syncer"})
	if err != nil {
		return nil, fmt.Errorf("setup: %w", err)
	}
	u := users[0]
	setup := time.Now()
	rooms, err := roomsWithMessages(ctx, e, u, "ss-initial", s.rooms, s.messages, s.setupPar)
	if err != nil {
		return nil, fmt.Errorf("setup: %w", err)
	}
	setupTime := time.Since(setup)
	mine := make(map[string]bool, len(rooms))
	for _, id := range rooms {
		mine[id] = true
	}

	e.logf("measuring: %d fresh sliding sync connections", s.repeat)
	rep := &ssInitialReport{
		Scenario: "ss-initial", HS: e.hs, Rooms: s.rooms, MessagesPerRoom: s.messages,
		Range: ssInitialRange, TimelineLimit: 1, Repeat: s.repeat, SetupSeconds: seconds(setupTime),
	}
	wantRooms := min(ssInitialRange, s.rooms)
	var lat []time.Duration
	for i := range s.repeat {
		req := &ssRequest{
			ConnID: fmt.Sprintf("tessera-load-%s-%d", e.runID, i),
			Lists:  ssAllRooms(ssInitialRange, 1),
		}
		// Timed: the request until its whole body has been read (and
		// checked to be JSON); decoding it into structs is not.
		var raw json.RawMessage
		t0 := time.Now()
		err := slidingSync(ctx, e.c, u.AccessToken, "", 0, req, &raw)
		d := time.Since(t0)
		if err != nil {
			return nil, fmt.Errorf("measured phase stopped: %w", err)
		}
		lat = append(lat, d)
		rep.TimesMS = append(rep.TimesMS, ms(d))
		var resp ssResponse
		if err := json.Unmarshal(raw, &resp); err != nil {
			return nil, fmt.Errorf("measured phase stopped: POST %s: decoding response: %w", slidingSyncPath, err)
		}
		rep.Bytes = len(raw)
		rep.ListCount = resp.Lists["all"].Count
		rep.RoomsInResponse, rep.TimelineEvents = len(resp.Rooms), 0
		var bad []string
		for id, r := range resp.Rooms {
			rep.TimelineEvents += len(r.Timeline)
			if !mine[id] {
				bad = append(bad, "room "+id+" is not one of the user's")
			} else if !r.Initial {
				bad = append(bad, "room "+id+" lacks initial: true")
			}
		}
		if _, ok := resp.Lists["all"]; !ok {
			bad = append(bad, `no list "all"`)
		} else if rep.ListCount != s.rooms {
			bad = append(bad, fmt.Sprintf("list count %d, want %d", rep.ListCount, s.rooms))
		}
		if len(resp.Rooms) != wantRooms {
			bad = append(bad, fmt.Sprintf("%d rooms, want %d", len(resp.Rooms), wantRooms))
		}
		if resp.Pos == "" {
			bad = append(bad, "no pos")
		}
		if len(bad) > 0 {
			rep.BadResponses++
			if rep.FirstBad == "" {
				rep.FirstBad = fmt.Sprintf("request %d: %s", i+1, strings.Join(bad, "; "))
			}
		}
	}
	rep.latencyStats = summarize(lat)
	if rep.BadResponses > 0 {
		return rep, fmt.Errorf("%d of %d responses were not the user's top %d rooms with a list count of %d; the first: %s",
			rep.BadResponses, s.repeat, wantRooms, s.rooms, rep.FirstBad)
	}
	return rep, nil
}
