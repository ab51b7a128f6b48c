package clientapi_test

// /messages and /context: order, tokens, filters and limits.
// https://spec.matrix.org/v1.19/client-server-api/#get_matrixclientv3roomsroomidmessages

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"testing"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/id"

	"github.com/tessera-hs/tessera/internal/testserver"
)

// rmPagRoom is a room with a known timeline: state events from its
// creation, then 30 events from alice and bob (messages and notes), then
// dan joins and sends 3 messages.
type rmPagRoom struct {
	srv            *testserver.Server
	id             string
	alice, bob     session
	dan            session
	all            []string // every event ID, oldest first
	messages       []string // the m.room.message events, oldest first
	sender         map[string]string
	danFirstMsgIdx int // index in all of dan's first message
}

func rmNewPagRoom(t *testing.T) *rmPagRoom {
	t.Helper()
	srv := testserver.Start(t)
	p := &rmPagRoom{srv: srv, alice: rmUser(t, srv, "alice"), bob: rmUser(t, srv, "bob"), dan: rmUser(t, srv, "dan"),
		sender: map[string]string{}}
	p.id = rmCreate(t, srv, p.alice, map[string]any{"preset": "public_chat"})
	rmJoin(t, srv, p.bob, p.id).expect(t, 200, "")
	for i := range 30 {
		s := []session{p.alice, p.bob}[i%2]
		typ := "m.room.message"
		if i%3 == 2 {
			typ = "org.example.note"
		}
		evID := rmSendRaw(t, srv, s, p.id, typ, rmTxn(), map[string]any{"msgtype": "m.text", "body": fmt.Sprint(i)}).
			expect(t, 200, "").str("event_id")
		p.sender[evID] = s.UserID
	}
	rmJoin(t, srv, p.dan, p.id).expect(t, 200, "")
	for i := range 3 {
		p.sender[rmSend(t, srv, p.dan, p.id, fmt.Sprint("dan ", i))] = p.dan.UserID
	}
	p.all = rmMessageIDs(t, srv, p.alice, p.id, "f", "", 1000)
	for i, e := range p.all {
		r := get(t, srv, rmRoom(p.id, "event", e), p.alice.AccessToken).expect(t, 200, "")
		if r.str("type") == "m.room.message" {
			p.messages = append(p.messages, e)
		}
		if r.str("sender") == p.dan.UserID && r.str("type") == "m.room.message" && p.danFirstMsgIdx == 0 {
			p.danFirstMsgIdx = i
		}
	}
	if len(p.messages) != 23 || p.danFirstMsgIdx == 0 {
		t.Fatalf("setup: %d messages, dan's first at %d", len(p.messages), p.danFirstMsgIdx)
	}
	return p
}

func (p *rmPagRoom) messagesRaw(t *testing.T, s session, q url.Values) resp {
	t.Helper()
	return rmMessages(t, p.srv, s, p.id, q)
}

func (p *rmPagRoom) page(t *testing.T, q url.Values) (ids []string, start, end string) {
	t.Helper()
	r := p.messagesRaw(t, p.alice, q).expect(t, 200, "")
	start = r.str("start")
	if start == "" {
		t.Fatalf("/messages without start: %s", r.Raw)
	}
	if from := q.Get("from"); from != "" && start != from {
		t.Fatalf("start = %q, want the from token %q", start, from)
	}
	return rmIDs(rmEvents(t, r, "chunk")), start, r.str("end")
}

func rmReversed(ids []string) []string {
	out := slices.Clone(ids)
	slices.Reverse(out)
	return out
}

func TestMessagesPagination(t *testing.T) {
	t.Parallel()
	p := rmNewPagRoom(t)
	n := len(p.all)

	t.Run("walks join without gaps or duplicates", func(t *testing.T) {
		for _, limit := range []int{1, 4, 7, n, 1000} {
			back := rmMessageIDs(t, p.srv, p.alice, p.id, "b", "", limit)
			if !slices.Equal(rmReversed(back), p.all) {
				t.Fatalf("limit %d: dir=b walk is not dir=f reversed:\n%v\n%v", limit, back, p.all)
			}
			fwd := rmMessageIDs(t, p.srv, p.alice, p.id, "f", "", limit)
			if !slices.Equal(fwd, p.all) {
				t.Fatalf("limit %d: dir=f walk differs", limit)
			}
		}
		if len(slices.Compact(slices.Sorted(slices.Values(p.all)))) != n {
			t.Fatalf("duplicates in the timeline")
		}
	})

	t.Run("tokens are positions between events", func(t *testing.T) {
		// Back 7 from the end, then forward from there: the same 7.
		page, _, end := p.page(t, url.Values{"dir": {"b"}, "limit": {"7"}})
		if !slices.Equal(page, rmReversed(p.all[n-7:])) {
			t.Fatalf("newest 7 = %v", page)
		}
		fwd, _, _ := p.page(t, url.Values{"dir": {"f"}, "from": {end}, "limit": {"100"}})
		if !slices.Equal(fwd, p.all[n-7:]) {
			t.Fatalf("forward from the backward token = %v, want %v", fwd, p.all[n-7:])
		}
		// The next page back continues exactly where the first ended.
		page2, _, _ := p.page(t, url.Values{"dir": {"b"}, "from": {end}, "limit": {"5"}})
		if !slices.Equal(page2, rmReversed(p.all[n-12:n-7])) {
			t.Fatalf("second page back = %v", page2)
		}
		// Forward 6 from the start, then back from there: the same 6.
		page, _, end = p.page(t, url.Values{"dir": {"f"}, "limit": {"6"}})
		if !slices.Equal(page, p.all[:6]) {
			t.Fatalf("oldest 6 = %v", page)
		}
		back, _, backEnd := p.page(t, url.Values{"dir": {"b"}, "from": {end}, "limit": {"100"}})
		if !slices.Equal(back, rmReversed(p.all[:6])) {
			t.Fatalf("back from the forward token = %v", back)
		}
		if backEnd != "" {
			t.Fatalf("end %q at the start of the room", backEnd)
		}
		// Past the end: an empty chunk and no end.
		last, _, lastEnd := p.page(t, url.Values{"dir": {"f"}, "from": {end}, "limit": {"1000"}})
		if !slices.Equal(last, p.all[6:]) || lastEnd != "" {
			t.Fatalf("rest = %d events, end %q", len(last), lastEnd)
		}
	})

	t.Run("to", func(t *testing.T) {
		_, _, tenBack := p.page(t, url.Values{"dir": {"b"}, "limit": {"10"}})
		_, _, fiveFwd := p.page(t, url.Values{"dir": {"f"}, "limit": {"5"}})
		// Forward from the start up to 10 from the end.
		got, _, _ := p.page(t, url.Values{"dir": {"f"}, "to": {tenBack}, "limit": {"1000"}})
		if !slices.Equal(got, p.all[:n-10]) {
			t.Fatalf("dir=f to: %d events, want %d", len(got), n-10)
		}
		// Backward from the end down to 5 from the start.
		got, _, _ = p.page(t, url.Values{"dir": {"b"}, "to": {fiveFwd}, "limit": {"1000"}})
		if !slices.Equal(got, rmReversed(p.all[5:])) {
			t.Fatalf("dir=b to: %d events, want %d", len(got), n-5)
		}
		// Pages stop at to, whatever their limit.
		var walked []string
		from := ""
		for range n {
			q := url.Values{"dir": {"f"}, "to": {tenBack}, "limit": {"4"}}
			if from != "" {
				q.Set("from", from)
			}
			ids, _, end := p.page(t, q)
			walked = append(walked, ids...)
			if end == "" || len(ids) == 0 {
				break
			}
			from = end
		}
		if !slices.Equal(walked, p.all[:n-10]) {
			t.Fatalf("paged dir=f to: %d events, want %d", len(walked), n-10)
		}
	})

	t.Run("limit", func(t *testing.T) {
		for _, tt := range []struct {
			limit string
			want  int
		}{{"", 10}, {"1", 1}, {"3", 3}, {"1000", n}, {"100000", n}} {
			q := url.Values{"dir": {"b"}}
			if tt.limit != "" {
				q.Set("limit", tt.limit)
			}
			if ids, _, _ := p.page(t, q); len(ids) != tt.want {
				t.Errorf("limit %q: %d events, want %d", tt.limit, len(ids), tt.want)
			}
		}
	})

	t.Run("filters", func(t *testing.T) {
		filtered := func(f map[string]any, dir string, limit int) []string {
			t.Helper()
			raw, _ := json.Marshal(f)
			var out []string
			from := ""
			for range n + 1 {
				q := url.Values{"dir": {dir}, "limit": {fmt.Sprint(limit)}, "filter": {string(raw)}}
				if from != "" {
					q.Set("from", from)
				}
				ids, _, end := p.page(t, q)
				out = append(out, ids...)
				if end == "" {
					return out
				}
				from = end
			}
			t.Fatalf("filtered walk never ends")
			return nil
		}
		bySender := func(user string) []string {
			var out []string
			for _, e := range p.messages {
				if p.sender[e] == user {
					out = append(out, e)
				}
			}
			return out
		}
		var notes, notMessages []string
		for _, e := range p.all {
			if !slices.Contains(p.messages, e) {
				notMessages = append(notMessages, e)
				if p.sender[e] != "" {
					notes = append(notes, e)
				}
			}
		}
		for _, tt := range []struct {
			name   string
			filter map[string]any
			want   []string
		}{
			{"types", map[string]any{"types": []string{"m.room.message"}}, p.messages},
			{"types wildcard", map[string]any{"types": []string{"org.example.*"}}, notes},
			{"not_types", map[string]any{"not_types": []string{"m.room.message"}}, notMessages},
			{"senders", map[string]any{"types": []string{"m.room.message"}, "senders": []string{p.bob.UserID}}, bySender(p.bob.UserID)},
			{"not_senders", map[string]any{"types": []string{"m.room.message"}, "not_senders": []string{p.bob.UserID, p.alice.UserID}},
				bySender(p.dan.UserID)},
		} {
			t.Run(tt.name, func(t *testing.T) {
				for _, limit := range []int{2, 5, 100} {
					if got := filtered(tt.filter, "f", limit); !slices.Equal(got, tt.want) {
						t.Fatalf("dir=f limit %d: %d events, want %d", limit, len(got), len(tt.want))
					}
					if got := filtered(tt.filter, "b", limit); !slices.Equal(got, rmReversed(tt.want)) {
						t.Fatalf("dir=b limit %d: %d events, want %d", limit, len(got), len(tt.want))
					}
				}
			})
		}
	})

	t.Run("lazy_load_members", func(t *testing.T) {
		raw, _ := json.Marshal(map[string]any{"lazy_load_members": true, "types": []string{"m.room.message"}})
		// Windows on both sides of dan's join, in both directions.
		danAt := p.danFirstMsgIdx
		for _, tt := range []struct {
			name string
			q    url.Values
		}{
			{"dir=b newest", url.Values{"dir": {"b"}, "limit": {"6"}}},
			{"dir=f oldest", url.Values{"dir": {"f"}, "limit": {"6"}}},
			{"dir=f across dan's join", url.Values{"dir": {"f"}, "limit": {"6"}}},
		} {
			t.Run(tt.name, func(t *testing.T) {
				q := tt.q
				q.Set("filter", string(raw))
				if tt.name == "dir=f across dan's join" {
					// Start a few messages before dan's first.
					_, _, tok := p.page(t, url.Values{"dir": {"f"}, "limit": {fmt.Sprint(danAt - 4)}})
					q.Set("from", tok)
				}
				r := p.messagesRaw(t, p.alice, q).expect(t, 200, "")
				chunk := rmEvents(t, r, "chunk")
				if len(chunk) == 0 {
					t.Fatalf("empty chunk")
				}
				senders := map[string]bool{}
				for _, e := range chunk {
					senders[e["sender"].(string)] = true
				}
				members := map[string]bool{}
				for _, e := range rmEvents(t, r, "state") {
					if e["type"] != "m.room.member" {
						t.Errorf("lazy-loading state holds a %v", e["type"])
						continue
					}
					members[e["state_key"].(string)] = true
				}
				for s := range senders {
					if !members[s] {
						t.Errorf("state lacks the member event of sender %s (senders %v, members %v)", s, senders, members)
					}
				}
				for m := range members {
					if !senders[m] {
						t.Errorf("state has the member event of %s, who sent nothing in the chunk", m)
					}
				}
				if tt.name == "dir=f across dan's join" && !senders[p.dan.UserID] {
					t.Fatalf("window does not reach dan's messages")
				}
			})
		}
	})

	t.Run("errors", func(t *testing.T) {
		outsider := rmUser(t, p.srv, "outsider")
		for _, tt := range []struct {
			name    string
			s       session
			room    string
			q       url.Values
			status  int
			errcode string
		}{
			{"missing dir", p.alice, p.id, url.Values{}, 400, "M_MISSING_PARAM"},
			{"bad dir", p.alice, p.id, url.Values{"dir": {"up"}}, 400, "M_INVALID_PARAM"},
			{"bad from", p.alice, p.id, url.Values{"dir": {"b"}, "from": {"garbage"}}, 400, "M_INVALID_PARAM"},
			{"bad from numbers", p.alice, p.id, url.Values{"dir": {"b"}, "from": {"tx_1"}}, 400, "M_INVALID_PARAM"},
			{"bad to", p.alice, p.id, url.Values{"dir": {"b"}, "to": {"s1_x"}}, 400, "M_INVALID_PARAM"}, // "s1" is a sync token
			{"negative limit", p.alice, p.id, url.Values{"dir": {"b"}, "limit": {"-1"}}, 400, "M_INVALID_PARAM"},
			{"bad limit", p.alice, p.id, url.Values{"dir": {"b"}, "limit": {"ten"}}, 400, "M_INVALID_PARAM"},
			{"bad filter", p.alice, p.id, url.Values{"dir": {"b"}, "filter": {"{"}}, 400, "M_INVALID_PARAM"},
			{"non-member", outsider, p.id, url.Values{"dir": {"b"}}, 403, "M_FORBIDDEN"},
			{"unknown room", p.alice, "!nowhere:tessera.test", url.Values{"dir": {"b"}}, 403, "M_FORBIDDEN"},
		} {
			t.Run(tt.name, func(t *testing.T) {
				rmMessages(t, p.srv, tt.s, tt.room, tt.q).expect(t, tt.status, tt.errcode)
			})
		}
		get(t, p.srv, rmRoom(p.id, "messages")+"?dir=b", "").expect(t, 401, "M_MISSING_TOKEN")
	})

	t.Run("mautrix", func(t *testing.T) {
		c := client(p.srv, p.alice)
		var got []string
		from := ""
		for range n {
			r, err := c.Messages(ctx, id.RoomID(p.id), from, "", mautrix.DirectionForward, nil, 8)
			must(t, err, "mautrix messages")
			for _, e := range r.Chunk {
				got = append(got, e.ID.String())
			}
			if r.End == "" {
				break
			}
			from = r.End
		}
		if !slices.Equal(got, p.all) {
			t.Fatalf("mautrix walk: %d events, want %d", len(got), len(p.all))
		}
	})
}

func TestContext(t *testing.T) {
	t.Parallel()
	p := rmNewPagRoom(t)
	n := len(p.all)
	mid := n / 2
	ctxOf := func(ev string, q url.Values) resp {
		t.Helper()
		return get(t, p.srv, rmRoom(p.id, "context", ev)+"?"+q.Encode(), p.alice.AccessToken)
	}

	r := ctxOf(p.all[mid], url.Values{"limit": {"6"}}).expect(t, 200, "")
	if got := rmField(r.Body, "event", "event_id"); got != p.all[mid] {
		t.Fatalf("context event = %v", got)
	}
	before := rmIDs(rmEvents(t, r, "events_before"))
	after := rmIDs(rmEvents(t, r, "events_after"))
	// events_before is newest first; events_after oldest first.
	if !slices.Equal(before, rmReversed(p.all[mid-3:mid])) {
		t.Fatalf("events_before = %v, want %v", before, rmReversed(p.all[mid-3:mid]))
	}
	if !slices.Equal(after, p.all[mid+1:mid+4]) {
		t.Fatalf("events_after = %v, want %v", after, p.all[mid+1:mid+4])
	}
	if len(rmEvents(t, r, "state")) == 0 {
		t.Fatalf("context without state: %s", r.Raw)
	}
	// start pages on backwards, end forwards, with no gap.
	back, _, _ := p.page(t, url.Values{"dir": {"b"}, "from": {r.str("start")}, "limit": {"4"}})
	if !slices.Equal(back, rmReversed(p.all[mid-7:mid-3])) {
		t.Fatalf("back from start = %v, want %v", back, rmReversed(p.all[mid-7:mid-3]))
	}
	fwd, _, _ := p.page(t, url.Values{"dir": {"f"}, "from": {r.str("end")}, "limit": {"4"}})
	if !slices.Equal(fwd, p.all[mid+4:mid+8]) {
		t.Fatalf("forward from end = %v, want %v", fwd, p.all[mid+4:mid+8])
	}

	// At the edges of the room.
	r = ctxOf(p.all[n-1], url.Values{"limit": {"4"}}).expect(t, 200, "")
	if a := rmEvents(t, r, "events_after"); len(a) != 0 {
		t.Fatalf("events after the newest: %v", rmIDs(a))
	}
	if fwd, _, _ := p.page(t, url.Values{"dir": {"f"}, "from": {r.str("end")}}); len(fwd) != 0 {
		t.Fatalf("forward from the newest event's end: %v", fwd)
	}
	r = ctxOf(p.all[1], url.Values{"limit": {"10"}}).expect(t, 200, "")
	if got := rmIDs(rmEvents(t, r, "events_before")); !slices.Equal(got, p.all[:1]) {
		t.Fatalf("events before the second event: %v", got)
	}

	// limit 0: the event alone; the tokens still work.
	r = ctxOf(p.all[mid], url.Values{"limit": {"0"}}).expect(t, 200, "")
	if len(rmEvents(t, r, "events_before"))+len(rmEvents(t, r, "events_after")) != 0 {
		t.Fatalf("limit 0 gave events: %s", r.Raw)
	}
	back, _, _ = p.page(t, url.Values{"dir": {"b"}, "from": {r.str("start")}, "limit": {"2"}})
	if !slices.Equal(back, rmReversed(p.all[mid-2:mid])) {
		t.Fatalf("back from a limit-0 start = %v", back)
	}
	fwd, _, _ = p.page(t, url.Values{"dir": {"f"}, "from": {r.str("end")}, "limit": {"2"}})
	if !slices.Equal(fwd, p.all[mid+1:mid+3]) {
		t.Fatalf("forward from a limit-0 end = %v", fwd)
	}

	// A filter applies to the events around, not the event itself.
	f, _ := json.Marshal(map[string]any{"types": []string{"m.room.message"}})
	r = ctxOf(p.all[n-1], url.Values{"limit": {"8"}, "filter": {string(f)}}).expect(t, 200, "")
	for _, e := range rmEvents(t, r, "events_before") {
		if e["type"] != "m.room.message" {
			t.Fatalf("filtered context has a %v", e["type"])
		}
	}
	if got := rmIDs(rmEvents(t, r, "events_before")); !slices.Equal(got, rmReversed(p.messages[len(p.messages)-5:len(p.messages)-1])) {
		t.Fatalf("filtered events_before = %v", got)
	}

	ctxOf("$nothing", url.Values{}).expect(t, http.StatusNotFound, "M_NOT_FOUND")
	ctxOf(p.all[mid], url.Values{"limit": {"x"}}).expect(t, 400, "M_INVALID_PARAM")
}
