package federation_test

import (
	"context"
	"encoding/json"
	"net/http"
	"net/url"
	"slices"
	"testing"

	"github.com/matrix-org/gomatrixserverlib"
	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/tessera-hs/tessera/internal/testserver"
)

// readsFixture is three servers: alice of A has rooms, bob of B is in some
// of them, and C has nobody anywhere.
type readsFixture struct {
	a, b, c    *testserver.Server
	alice, bob *mautrix.Client
	// room is public and published; before are alice's messages from
	// before bob joined, oldest first; join is bob's join.
	room   id.RoomID
	before []id.EventID
	join   id.EventID
}

func startReads(t *testing.T) *readsFixture {
	t.Helper()
	ctx := context.Background()
	f := &readsFixture{
		a: testserver.Start(t, testserver.Federation("127.0.0.1")),
		b: testserver.Start(t, testserver.Federation("127.0.0.2")),
		c: testserver.Start(t, testserver.Federation("127.0.0.3")),
	}
	f.alice = f.a.Register("alice", "password-alice")
	f.bob = f.b.Register("bob", "password-bob")
	created, err := f.alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "public_chat", Visibility: "public", Name: "Reads room", Topic: "history"})
	if err != nil {
		t.Fatal(err)
	}
	f.room = created.RoomID
	for _, body := range []string{"m0", "m1", "m2", "m3", "m4"} {
		f.before = append(f.before, sendText(t, f.alice, f.room, body))
	}
	f.bobJoins(t, f.room)
	f.join = f.stateEvent(t, f.room, event.StateMember, f.bob.UserID.String()).ID
	return f
}

func (f *readsFixture) bobJoins(t *testing.T, room id.RoomID) {
	t.Helper()
	if _, err := f.bob.JoinRoom(context.Background(), room.String(), &mautrix.ReqJoinRoom{Via: []string{f.a.Config.ServerName}}); err != nil {
		t.Fatalf("bob joins %s through A: %v", room, err)
	}
}

// stateEvent is a current state event of a room, as alice sees it on A.
func (f *readsFixture) stateEvent(t *testing.T, room id.RoomID, typ event.Type, key string) *event.Event {
	t.Helper()
	ev, err := f.alice.FullStateEvent(context.Background(), room, typ, key)
	if err != nil {
		t.Fatalf("state %s/%q of %s: %v", typ.Type, key, room, err)
	}
	return ev
}

// signedGet makes a GET request from B to A signed with B's key, for
// requests the FederationClient cannot make (bad parameters).
func (f *readsFixture) signedGet(t *testing.T, uri string) response {
	t.Helper()
	return f.signedGetFrom(t, f.b, uri)
}

func pduIDs(t *testing.T, ver gomatrixserverlib.RoomVersion, raws []json.RawMessage) []string {
	t.Helper()
	ids := make([]string, len(raws))
	for i, raw := range raws {
		p, err := gomatrixserverlib.MustGetRoomVersion(ver).NewEventFromTrustedJSON(raw, false)
		if err != nil {
			t.Fatalf("bad PDU %s: %v", raw, err)
		}
		ids[i] = p.EventID()
	}
	return ids
}

func rawJSONs[T ~[]byte](in []T) []json.RawMessage {
	out := make([]json.RawMessage, len(in))
	for i, v := range in {
		out[i] = json.RawMessage(v)
	}
	return out
}

func wantFedError(t *testing.T, what string, err error, status int, code string) {
	t.Helper()
	if err == nil {
		t.Fatalf("%s: succeeded, want %d %s", what, status, code)
	}
	if gotStatus, gotCode := fedError(t, err); gotStatus != status || gotCode != code {
		t.Fatalf("%s: %d %s, want %d %s", what, gotStatus, gotCode, status, code)
	}
}

func sameSet(a, b []string) bool {
	a, b = slices.Clone(a), slices.Clone(b)
	slices.Sort(a)
	slices.Sort(b)
	return slices.Equal(a, b)
}

// TestStateAndAuthChainOverFederation: a server in a room reads the state
// before an event (in full and as IDs) and an event's auth chain.
func TestStateAndAuthChainOverFederation(t *testing.T) {
	ctx := context.Background()
	f := startReads(t)
	fc := f.b.Server().FederationClient
	const ver = gomatrixserverlib.RoomVersionV12
	create := f.stateEvent(t, f.room, event.StateCreate, "").ID.String()
	power := f.stateEvent(t, f.room, event.StatePowerLevels, "").ID.String()
	aliceJoin := f.stateEvent(t, f.room, event.StateMember, f.alice.UserID.String()).ID.String()
	name := f.stateEvent(t, f.room, event.StateRoomName, "").ID.String()

	tests := []struct {
		name      string
		at        id.EventID
		want      []string // state events that must be there
		wantNot   []string // and must not
		wantTuple int      // m.room.member events expected
	}{
		{"before a message", f.before[4], []string{create, power, aliceJoin, name}, []string{f.join.String()}, 1},
		// A state event's own change is not in the state before it.
		{"before a join", f.join, []string{create, power, aliceJoin, name}, []string{f.join.String()}, 1},
		{"before the first message", f.before[0], []string{create, power, aliceJoin, name}, []string{f.before[0].String()}, 1},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			st, err := fc.LookupState(ctx, f.b.ServerName(), f.a.ServerName(), f.room.String(), tc.at.String(), ver)
			if err != nil {
				t.Fatalf("state: %v", err)
			}
			ids := pduIDs(t, ver, rawJSONs(st.StateEvents))
			for _, w := range tc.want {
				if !slices.Contains(ids, w) {
					t.Errorf("state before %s lacks %s", tc.at, w)
				}
			}
			for _, w := range tc.wantNot {
				if slices.Contains(ids, w) {
					t.Errorf("state before %s has %s", tc.at, w)
				}
			}
			members := 0
			for _, raw := range st.StateEvents {
				var ev struct{ Type string }
				_ = json.Unmarshal(raw, &ev)
				if ev.Type == "m.room.member" {
					members++
				}
			}
			if members != tc.wantTuple {
				t.Errorf("state before %s has %d members, want %d", tc.at, members, tc.wantTuple)
			}
			chain := pduIDs(t, ver, rawJSONs(st.AuthEvents))
			if !slices.Contains(chain, create) || !slices.Contains(chain, aliceJoin) {
				t.Errorf("auth chain %v lacks the create event or alice's join", chain)
			}

			ids2, err := fc.LookupStateIDs(ctx, f.b.ServerName(), f.a.ServerName(), f.room.String(), tc.at.String())
			if err != nil {
				t.Fatalf("state_ids: %v", err)
			}
			if !sameSet(ids2.StateEventIDs, ids) || !sameSet(ids2.AuthEventIDs, chain) {
				t.Errorf("state_ids %v / %v differ from state %v / %v", ids2.StateEventIDs, ids2.AuthEventIDs, ids, chain)
			}
		})
	}

	t.Run("event_auth", func(t *testing.T) {
		res, err := fc.GetEventAuth(ctx, f.b.ServerName(), f.a.ServerName(), ver, f.room.String(), f.before[2].String())
		if err != nil {
			t.Fatal(err)
		}
		chain := pduIDs(t, ver, rawJSONs(res.AuthEvents))
		for _, w := range []string{create, power, aliceJoin} {
			if !slices.Contains(chain, w) {
				t.Errorf("auth chain %v of a message lacks %s", chain, w)
			}
		}
		if slices.Contains(chain, name) || slices.Contains(chain, f.before[2].String()) {
			t.Errorf("auth chain %v has events that do not authorise the message", chain)
		}
	})
}

// TestBackfillOverFederation: a server in a room reads its history before
// an event, newest first, as much as it asks for; events from when it
// could not see the room (history visibility joined) come redacted.
func TestBackfillOverFederation(t *testing.T) {
	ctx := context.Background()
	f := startReads(t)
	fc := f.b.Server().FederationClient
	const ver = gomatrixserverlib.RoomVersionV12
	create := f.stateEvent(t, f.room, event.StateCreate, "").ID.String()
	ids := func(evs ...id.EventID) []string {
		out := make([]string, len(evs))
		for i, e := range evs {
			out[i] = e.String()
		}
		return out
	}

	tests := []struct {
		name  string
		from  []string
		limit int
		want  []string // the first events, in order
		n     int      // how many in all; 0: any
	}{
		{"limit", ids(f.before[4]), 3, ids(f.before[4], f.before[3], f.before[2]), 3},
		{"one", ids(f.before[2]), 1, ids(f.before[2]), 1},
		{"from two", ids(f.before[1], f.before[3]), 3, ids(f.before[3], f.before[2], f.before[1]), 3},
		{"to the start", ids(f.join), 1000, ids(f.join, f.before[4], f.before[3], f.before[2], f.before[1], f.before[0]), 0},
		{"unknown", []string{"$unknown"}, 10, nil, 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			txn, err := fc.Backfill(ctx, f.b.ServerName(), f.a.ServerName(), f.room.String(), tc.limit, tc.from)
			if err != nil {
				t.Fatal(err)
			}
			if txn.Origin != f.a.ServerName() || txn.OriginServerTS == 0 {
				t.Errorf("origin %q, origin_server_ts %d", txn.Origin, txn.OriginServerTS)
			}
			got := pduIDs(t, ver, txn.PDUs)
			if len(got) < len(tc.want) || !slices.Equal(got[:len(tc.want)], tc.want) {
				t.Fatalf("backfill from %v = %v, want it to start %v", tc.from, got, tc.want)
			}
			if tc.n > 0 && len(got) != tc.n {
				t.Fatalf("backfill from %v limit %d = %d events, want %d", tc.from, tc.limit, len(got), tc.n)
			}
			if len(got) > 100 {
				t.Fatalf("backfill answered %d events; at most 100", len(got))
			}
			var last int64 = 1 << 62
			for _, raw := range txn.PDUs {
				p, _ := gomatrixserverlib.MustGetRoomVersion(ver).NewEventFromTrustedJSON(raw, false)
				if p.Depth() > last {
					t.Fatalf("backfill is not newest first: %v", got)
				}
				last = p.Depth()
			}
			if tc.name == "to the start" && got[len(got)-1] != create {
				t.Fatalf("backfill to the start ends with %s, not the create event %s", got[len(got)-1], create)
			}
		})
	}

	t.Run("history visibility joined", func(t *testing.T) {
		created, err := f.alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "public_chat", InitialState: []*event.Event{
			{Type: event.StateHistoryVisibility, Content: event.Content{Raw: map[string]any{"history_visibility": "joined"}}},
		}})
		if err != nil {
			t.Fatal(err)
		}
		secret := sendText(t, f.alice, created.RoomID, "before bob")
		f.bobJoins(t, created.RoomID)
		open := sendText(t, f.alice, created.RoomID, "after bob")
		txn, err := fc.Backfill(ctx, f.b.ServerName(), f.a.ServerName(), created.RoomID.String(), 10, []string{open.String()})
		if err != nil {
			t.Fatal(err)
		}
		bodies := map[string]string{}
		for _, raw := range txn.PDUs {
			var ev struct {
				EventID string         `json:"event_id"`
				Content map[string]any `json:"content"`
			}
			_ = json.Unmarshal(raw, &ev)
			p, _ := gomatrixserverlib.MustGetRoomVersion(ver).NewEventFromTrustedJSON(raw, false)
			b, _ := ev.Content["body"].(string)
			bodies[p.EventID()] = b
		}
		if bodies[open.String()] != "after bob" {
			t.Errorf("the message after B joined reads %q", bodies[open.String()])
		}
		if b, ok := bodies[secret.String()]; !ok || b != "" {
			t.Errorf("the message before B joined: present %v, body %q; want it redacted", ok, b)
		}
	})
}

// TestFederatedReadsRefused: a server with nobody in the room may read
// none of it (unless its history is world readable); unknown events are
// 404; bad parameters are 400.
func TestFederatedReadsRefused(t *testing.T) {
	ctx := context.Background()
	f := startReads(t)
	const ver = gomatrixserverlib.RoomVersionV12
	room, at := f.room.String(), f.before[2].String()
	type call func(from *testserver.Server, room, at string) error
	state := func(from *testserver.Server, room, at string) error {
		_, err := from.Server().FederationClient.LookupState(ctx, from.ServerName(), f.a.ServerName(), room, at, ver)
		return err
	}
	stateIDs := func(from *testserver.Server, room, at string) error {
		_, err := from.Server().FederationClient.LookupStateIDs(ctx, from.ServerName(), f.a.ServerName(), room, at)
		return err
	}
	eventAuth := func(from *testserver.Server, room, at string) error {
		_, err := from.Server().FederationClient.GetEventAuth(ctx, from.ServerName(), f.a.ServerName(), ver, room, at)
		return err
	}
	backfill := func(from *testserver.Server, room, at string) error {
		_, err := from.Server().FederationClient.Backfill(ctx, from.ServerName(), f.a.ServerName(), room, 10, []string{at})
		return err
	}
	calls := map[string]call{"state": state, "state_ids": stateIDs, "event_auth": eventAuth, "backfill": backfill}

	readable, err := f.alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "private_chat", InitialState: []*event.Event{
		{Type: event.StateHistoryVisibility, Content: event.Content{Raw: map[string]any{"history_visibility": "world_readable"}}},
	}})
	if err != nil {
		t.Fatal(err)
	}
	readableMsg := sendText(t, f.alice, readable.RoomID, "for anyone").String()

	tests := []struct {
		name     string
		from     *testserver.Server
		room, at string
		only     string // one call only; "" for all
		status   int
		code     string
	}{
		{"server not in the room", f.c, room, at, "", http.StatusForbidden, "M_FORBIDDEN"},
		{"unknown room", f.b, "!unknown:" + string(f.a.ServerName()), at, "", http.StatusForbidden, "M_FORBIDDEN"},
		{"unknown event", f.b, room, "$unknown", "state", http.StatusNotFound, "M_NOT_FOUND"},
		{"unknown event ids", f.b, room, "$unknown", "state_ids", http.StatusNotFound, "M_NOT_FOUND"},
		{"unknown event auth", f.b, room, "$unknown", "event_auth", http.StatusNotFound, "M_NOT_FOUND"},
		{"event of another room", f.b, room, readableMsg, "state", http.StatusNotFound, "M_NOT_FOUND"},
		{"world readable", f.c, readable.RoomID.String(), readableMsg, "", http.StatusOK, ""},
		{"member", f.b, room, at, "", http.StatusOK, ""},
	}
	for _, tc := range tests {
		for name, c := range calls {
			if tc.only != "" && tc.only != name {
				continue
			}
			t.Run(tc.name+"/"+name, func(t *testing.T) {
				err := c(tc.from, tc.room, tc.at)
				if tc.status == http.StatusOK {
					if err != nil {
						t.Fatalf("want success, got %v", err)
					}
					return
				}
				wantFedError(t, name, err, tc.status, tc.code)
			})
		}
	}

	esc := url.PathEscape(room)
	params := []struct {
		name, uri string
		status    int
		code      string
	}{
		{"state without event_id", "/_matrix/federation/v1/state/" + esc, http.StatusBadRequest, "M_MISSING_PARAM"},
		{"state_ids without event_id", "/_matrix/federation/v1/state_ids/" + esc, http.StatusBadRequest, "M_MISSING_PARAM"},
		{"backfill without v", "/_matrix/federation/v1/backfill/" + esc + "?limit=5", http.StatusBadRequest, "M_MISSING_PARAM"},
		{"backfill without limit", "/_matrix/federation/v1/backfill/" + esc + "?v=" + url.QueryEscape(at), http.StatusBadRequest, "M_MISSING_PARAM"},
		{"backfill with a bad limit", "/_matrix/federation/v1/backfill/" + esc + "?limit=x&v=" + url.QueryEscape(at), http.StatusBadRequest, "M_INVALID_PARAM"},
		{"bad room ID", "/_matrix/federation/v1/state_ids/nonsense?event_id=" + url.QueryEscape(at), http.StatusBadRequest, "M_INVALID_PARAM"},
		{"hierarchy with bad suggested_only", "/_matrix/federation/v1/hierarchy/" + esc + "?suggested_only=maybe", http.StatusBadRequest, "M_INVALID_PARAM"},
	}
	for _, tc := range params {
		t.Run(tc.name, func(t *testing.T) {
			resp := f.signedGet(t, tc.uri)
			if resp.status != tc.status || resp.errcode() != tc.code {
				t.Fatalf("GET %s: %d %s, want %d %s", tc.uri, resp.status, resp.raw, tc.status, tc.code)
			}
		})
	}
}

// TestPublicRoomsAndHierarchyOverFederation: another server lists our
// published rooms (filtered and paged), and reads a space's children it
// could join, the others by ID only.
func TestPublicRoomsAndHierarchyOverFederation(t *testing.T) {
	ctx := context.Background()
	f := startReads(t)
	fc := f.c.Server().FederationClient
	other, err := f.alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "public_chat", Visibility: "public", Name: "Other room"})
	if err != nil {
		t.Fatal(err)
	}
	private, err := f.alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "private_chat", Name: "Private room"})
	if err != nil {
		t.Fatal(err)
	}

	t.Run("publicRooms", func(t *testing.T) {
		tests := []struct {
			name, filter string
			want         []id.RoomID
		}{
			{"all", "", []id.RoomID{f.room, other.RoomID}},
			{"filtered", "reads", []id.RoomID{f.room}},
			{"no match", "nothing like it", nil},
		}
		for _, tc := range tests {
			t.Run(tc.name, func(t *testing.T) {
				res, err := fc.GetPublicRoomsFiltered(ctx, f.c.ServerName(), f.a.ServerName(), 10, "", tc.filter, false, "")
				if err != nil {
					t.Fatal(err)
				}
				var got []id.RoomID
				for _, r := range res.Chunk {
					got = append(got, id.RoomID(r.RoomID))
					if r.RoomID == f.room.String() && (r.Name != "Reads room" || r.Topic != "history" || r.JoinedMembersCount != 2) {
						t.Errorf("entry %+v", r)
					}
				}
				if !sameSet(stringsOf(got), stringsOf(tc.want)) {
					t.Fatalf("publicRooms %q = %v, want %v", tc.filter, got, tc.want)
				}
			})
		}
		// GET, paged one room at a time: f.room has two members, so it
		// comes first.
		first := f.signedGetFrom(t, f.c, "/_matrix/federation/v1/publicRooms?limit=1")
		chunk, _ := first.body["chunk"].([]any)
		next, _ := first.body["next_batch"].(string)
		if first.status != http.StatusOK || len(chunk) != 1 || next == "" {
			t.Fatalf("first page: %d %s", first.status, first.raw)
		}
		if r, _ := chunk[0].(map[string]any); r["room_id"] != f.room.String() {
			t.Fatalf("first page %v, want %s", chunk, f.room)
		}
		second := f.signedGetFrom(t, f.c, "/_matrix/federation/v1/publicRooms?limit=1&since="+url.QueryEscape(next))
		chunk, _ = second.body["chunk"].([]any)
		if second.status != http.StatusOK || len(chunk) != 1 {
			t.Fatalf("second page: %d %s", second.status, second.raw)
		}
		if r, _ := chunk[0].(map[string]any); r["room_id"] != other.RoomID.String() {
			t.Fatalf("second page %v, want %s", chunk, other.RoomID)
		}
		bad := f.signedGetFrom(t, f.c, "/_matrix/federation/v1/publicRooms?limit=ten")
		if bad.status != http.StatusBadRequest || bad.errcode() != "M_INVALID_PARAM" {
			t.Fatalf("bad limit: %d %s", bad.status, bad.raw)
		}
	})

	t.Run("hierarchy", func(t *testing.T) {
		via := map[string]any{"via": []string{string(f.a.ServerName())}}
		child := func(room id.RoomID, content map[string]any) *event.Event {
			k := room.String()
			return &event.Event{Type: event.StateSpaceChild, StateKey: &k, Content: event.Content{Raw: content}}
		}
		unknown := id.RoomID("!unknown:" + string(f.a.ServerName()))
		space, err := f.alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{
			Preset: "public_chat", Name: "Space", CreationContent: map[string]any{"type": "m.space"},
			InitialState: []*event.Event{
				child(f.room, map[string]any{"via": via["via"], "suggested": true, "order": "b"}),
				child(other.RoomID, map[string]any{"via": via["via"], "order": "a"}),
				child(private.RoomID, via),
				child(unknown, map[string]any{"via": via["via"], "order": "c"}),
				child("!novia:"+id.RoomID(f.a.ServerName()), map[string]any{}),
			},
		})
		if err != nil {
			t.Fatal(err)
		}
		tests := []struct {
			name          string
			suggested     bool
			childrenState []id.RoomID // in the spec's order
			children      []id.RoomID
			inaccessible  []string
		}{
			{name: "all", childrenState: []id.RoomID{other.RoomID, f.room, unknown, private.RoomID},
				children: []id.RoomID{other.RoomID, f.room}, inaccessible: []string{private.RoomID.String()}},
			{name: "suggested only", suggested: true, childrenState: []id.RoomID{f.room}, children: []id.RoomID{f.room}, inaccessible: []string{}},
		}
		for _, tc := range tests {
			t.Run(tc.name, func(t *testing.T) {
				res, err := fc.RoomHierarchy(ctx, f.c.ServerName(), f.a.ServerName(), space.RoomID.String(), tc.suggested)
				if err != nil {
					t.Fatal(err)
				}
				if res.Room.RoomID != space.RoomID.String() || res.Room.RoomType != "m.space" || res.Room.Name != "Space" {
					t.Errorf("room %+v", res.Room.PublicRoom)
				}
				var cs []id.RoomID
				for _, c := range res.Room.ChildrenState {
					cs = append(cs, id.RoomID(c.StateKey))
					if c.Type != "m.space.child" || c.Sender != f.alice.UserID.String() || c.OriginServerTS == 0 {
						t.Errorf("children_state entry %+v", c)
					}
				}
				if !slices.Equal(cs, tc.childrenState) {
					t.Errorf("children_state %v, want %v", cs, tc.childrenState)
				}
				var children []id.RoomID
				for _, c := range res.Children {
					children = append(children, id.RoomID(c.RoomID))
				}
				if !slices.Equal(children, tc.children) {
					t.Errorf("children %v, want %v", children, tc.children)
				}
				if !slices.Equal(res.InaccessibleChildren, tc.inaccessible) {
					t.Errorf("inaccessible_children %v, want %v", res.InaccessibleChildren, tc.inaccessible)
				}
			})
		}
		t.Run("private room", func(t *testing.T) {
			// Asked directly: on a 404 the FederationClient tries the
			// unstable endpoint, which answers M_UNRECOGNIZED.
			resp := f.signedGetFrom(t, f.c, "/_matrix/federation/v1/hierarchy/"+url.PathEscape(private.RoomID.String()))
			if resp.status != http.StatusNotFound || resp.errcode() != "M_NOT_FOUND" {
				t.Fatalf("hierarchy of a private room: %d %s, want 404 M_NOT_FOUND", resp.status, resp.raw)
			}
			// Once bob of B is invited, B may see it.
			if _, err := f.alice.InviteUser(ctx, private.RoomID, &mautrix.ReqInviteUser{UserID: f.bob.UserID}); err != nil {
				t.Fatal(err)
			}
			res, err := f.b.Server().FederationClient.RoomHierarchy(ctx, f.b.ServerName(), f.a.ServerName(), private.RoomID.String(), false)
			if err != nil || res.Room.RoomID != private.RoomID.String() {
				t.Fatalf("hierarchy of a room B is invited to: %+v, %v", res.Room.PublicRoom, err)
			}
		})
	})
}

// signedGetFrom is signedGet from another server than B.
func (f *readsFixture) signedGetFrom(t *testing.T, from *testserver.Server, uri string) response {
	t.Helper()
	k := signingKey(t, from)
	return do(t, signedRequest(t, from.ServerName(), f.a.ServerName(), k.ID, k.PrivateKey, http.MethodGet, uri, nil))
}

func stringsOf(ids []id.RoomID) []string {
	out := make([]string, len(ids))
	for i, r := range ids {
		out[i] = r.String()
	}
	return out
}
