package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"strings"
	"time"
)

// messagesScenario: fill a fresh room with N messages (setup, not
// measured), then page backwards through all of it with /messages, as a
// client scrolling up through history does. It measures each page and the
// time to reach the start of the room.
type messagesScenario struct {
	messages int
	limit    int
	setupPar int
}

func (s *messagesScenario) addFlags(fs *flag.FlagSet) {
	fs.IntVar(&s.messages, "n", 2000, "messages to put in the room before paging")
	fs.IntVar(&s.limit, "limit", 100, "events per page (the limit parameter of /messages)")
	fs.IntVar(&s.setupPar, "c", 8, "concurrent sends while filling the room (setup only)")
}

func (s *messagesScenario) check() error {
	if s.messages < 1 || s.messages > 1_000_000 {
		return errors.New("-n must be between 1 and 1000000")
	}
	if s.limit < 1 || s.limit > 10_000 {
		return errors.New("-limit must be between 1 and 10000")
	}
	if s.setupPar < 1 || s.setupPar > 1000 {
		return errors.New("-c must be between 1 and 1000")
	}
	return nil
}

func (s *messagesScenario) conns() int { return s.setupPar }

type messagesReport struct {
	Scenario string `json:"scenario"`
	HS       string `json:"hs"`
	Messages int    `json:"messages"` // sent during setup
	Limit    int    `json:"limit"`
	Pages    int    `json:"pages"`
	// EventsSeen counts every event the pages held (state events
	// included); MessagesSeen the distinct sent messages among them.
	EventsSeen   int     `json:"events_seen"`
	MessagesSeen int     `json:"messages_seen"`
	Duplicates   int     `json:"duplicates"`
	Errors       int     `json:"errors"`
	Seconds      float64 `json:"seconds"` // to page through the whole room
	EventsPerSec float64 `json:"events_per_sec"`
	latencyStats         // per page
}

func (r *messagesReport) human() string {
	var b strings.Builder
	fmt.Fprintf(&b, "messages: paging backwards through %d messages, %d per page\n", r.Messages, r.Limit)
	fmt.Fprintf(&b, "  paged      %d pages, %d events (%d of the %d messages, %d duplicates) in %s\n",
		r.Pages, r.EventsSeen, r.MessagesSeen, r.Messages, r.Duplicates, fmtSeconds(r.Seconds))
	fmt.Fprintf(&b, "  throughput %.1f events/s\n", r.EventsPerSec)
	fmt.Fprintf(&b, "  per page   %s\n", r.latencyStats)
	return b.String()
}

func (s *messagesScenario) run(ctx context.Context, e *env) (report, error) {
	e.logf("setup: registering 1 user")
	users, err := e.users.registerAll(ctx, []string{"reader"})
	if err != nil {
		return nil, fmt.Errorf("setup: %w", err)
	}
	reader := users[0]
	var roomID string
	err = e.c.retry429(ctx, "createRoom", func() (err error) {
		roomID, err = createRoom(ctx, e.c, reader.AccessToken, map[string]any{
			"preset": "private_chat", "name": "tessera-load messages " + e.runID,
		})
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("setup: %w", err)
	}

	// One user sends everything, from several goroutines: which user sends
	// does not matter to paging, and it saves registering more.
	e.logf("setup: sending %d messages into %s", s.messages, roomID)
	ids := make([]string, s.messages)
	err = forEach(ctx, s.messages, s.setupPar, func(ctx context.Context, i int) error {
		return e.c.retry429(ctx, "send", func() (err error) {
			ids[i], err = sendText(ctx, e.c, reader.AccessToken, roomID,
				fmt.Sprintf("%s.%d", e.runID, i), fmt.Sprintf("tessera-load %s: message %d", e.runID, i))
			return err
		})
	})
	if err != nil {
		return nil, fmt.Errorf("setup: %w", err)
	}
	seen := make(map[string]int, len(ids))
	for _, id := range ids {
		seen[id] = 0
	}

	e.logf("measuring: paging backwards, %d events per page", s.limit)
	rep := &messagesReport{Scenario: "messages", HS: e.hs, Messages: s.messages, Limit: s.limit}
	// A page holds at least one event (pageBackwards stops at an empty
	// one), so a working server needs fewer pages than the room has events.
	maxPages := s.messages + 1000
	t0 := time.Now()
	pages, lat, err := pageBackwards(ctx, e.c, reader.AccessToken, roomID, s.limit, maxPages, func(ev event) {
		rep.EventsSeen++
		if n, ok := seen[ev.EventID]; ok {
			seen[ev.EventID] = n + 1
		}
	})
	elapsed := time.Since(t0)
	if err != nil {
		// Without the failed page's end token there is no going on.
		return nil, fmt.Errorf("measured phase stopped: %w", err)
	}
	rep.Pages = pages
	rep.Seconds = seconds(elapsed)
	rep.EventsPerSec = perSecond(rep.EventsSeen, elapsed)
	rep.latencyStats = summarize(lat)
	for _, n := range seen {
		if n > 0 {
			rep.MessagesSeen++
			rep.Duplicates += n - 1
		}
	}
	rep.Duplicates += s.messages - len(seen) // event IDs the server gave to two sends
	if rep.MessagesSeen < s.messages || rep.Duplicates > 0 {
		return rep, fmt.Errorf("paging returned %d of the %d messages sent, and %d duplicates",
			rep.MessagesSeen, s.messages, rep.Duplicates)
	}
	return rep, nil
}
