package clientapi_test

// Simplified sliding sync extensions: to_device, e2ee, account_data,
// receipts and typing, and the lists/rooms filters of the last three.

import (
	"net/http"
	"slices"
	"strconv"
	"sync/atomic"
	"testing"

	"github.com/tessera-hs/tessera/internal/testserver"
)

// ssExt is a body with the given lists (may be nil) and extensions.
func ssExt(lists map[string]any, ext map[string]any) map[string]any {
	b := map[string]any{"extensions": ext}
	if lists != nil {
		b["lists"] = lists
	}
	return b
}

func ssOn(kv ...any) map[string]any {
	m := map[string]any{"enabled": true}
	for i := 0; i+1 < len(kv); i += 2 {
		m[kv[i].(string)] = kv[i+1]
	}
	return m
}

var ssTxn atomic.Int64

// ssToDevice sends a to-device message of type org.example.ping with
// content {"n": n} from s to the device of to.
func ssToDevice(t testing.TB, srv *testserver.Server, s session, to session, n int) {
	t.Helper()
	put(t, srv, v3+"/sendToDevice/org.example.ping/sstxn"+strconv.FormatInt(ssTxn.Add(1), 10), s.AccessToken,
		map[string]any{"messages": map[string]any{to.UserID: map[string]any{to.DeviceID: map[string]any{"n": n}}}}).
		expect(t, http.StatusOK, "")
}

// ssToDeviceNs lists the n of the to_device extension's events (checking
// their type and sender) and returns next_batch.
func ssToDeviceNs(t testing.TB, r ssResp, sender string) ([]string, string) {
	t.Helper()
	td := r.ext("to_device")
	if td == nil {
		t.Fatalf("no to_device extension in %s", r.Raw)
	}
	nb, _ := td["next_batch"].(string)
	if nb == "" {
		t.Fatalf("to_device without next_batch: %s", r.Raw)
	}
	out := []string{}
	evs, _ := td["events"].([]any)
	for _, e := range evs {
		m, _ := e.(map[string]any)
		if m["type"] != "org.example.ping" || m["sender"] != sender {
			t.Fatalf("to-device event = %v", m)
		}
		out = append(out, strconv.Itoa(ssNum(m, "content", "n")))
	}
	return out, nb
}

// TestSlidingSyncToDevice: messages arrive, are deleted once acknowledged
// with since, and limit caps a response.
func TestSlidingSyncToDevice(t *testing.T) {
	t.Parallel()
	srv := testserver.Start(t)
	alice := registerUser(t, srv, "alice", ssPassword)
	bob := registerUser(t, srv, "bob", ssPassword)
	c := newSSConn(t, srv, alice)
	ssToDevice(t, srv, bob, alice, 1)
	r := c.sync(ssExt(nil, map[string]any{"to_device": ssOn()}))
	got, nb := ssToDeviceNs(t, r, bob.UserID)
	wantSeq(t, "first batch", got, "1")

	// Not acknowledged yet: the same since gives it again.
	r = c.sync(ssExt(nil, map[string]any{"to_device": ssOn()}))
	got, _ = ssToDeviceNs(t, r, bob.UserID)
	wantSeq(t, "unacknowledged batch again", got, "1")

	// Acknowledged: gone.
	r = c.sync(ssExt(nil, map[string]any{"to_device": ssOn("since", nb)}))
	got, nb = ssToDeviceNs(t, r, bob.UserID)
	wantSeq(t, "after since", got)

	for i := 2; i <= 4; i++ {
		ssToDevice(t, srv, bob, alice, i)
	}
	r = c.sync(ssExt(nil, map[string]any{"to_device": ssOn("since", nb, "limit", 2)}))
	got, nb2 := ssToDeviceNs(t, r, bob.UserID)
	wantSeq(t, "first page of 2", got, "2", "3")
	r = c.sync(ssExt(nil, map[string]any{"to_device": ssOn("since", nb2, "limit", 2)}))
	got, nb3 := ssToDeviceNs(t, r, bob.UserID)
	wantSeq(t, "second page", got, "4")
	// The older since does not bring back what the newer one deleted.
	r = c.sync(ssExt(nil, map[string]any{"to_device": ssOn("since", nb)}))
	got, _ = ssToDeviceNs(t, r, bob.UserID)
	if slices.Contains(got, "2") || slices.Contains(got, "3") {
		t.Fatalf("acknowledged messages delivered again: %v", got)
	}
	r = c.sync(ssExt(nil, map[string]any{"to_device": ssOn("since", nb3)}))
	got, _ = ssToDeviceNs(t, r, bob.UserID)
	wantSeq(t, "all acknowledged", got)

	// Disabled: no extension in the response.
	ssToDevice(t, srv, bob, alice, 5)
	r = c.sync(ssAll(0))
	if r.ext("to_device") != nil {
		t.Fatalf("to_device in a response to a request without it: %s", r.Raw)
	}
}

// TestSlidingSyncE2EE: device list changes, one-time key counts and
// unused fallback key types.
func TestSlidingSyncE2EE(t *testing.T) {
	t.Parallel()
	srv := testserver.Start(t)
	alice := kxNewDevice(t, registerUser(t, srv, "alice", ssPassword))
	bob := kxNewDevice(t, registerUser(t, srv, "bob", ssPassword))
	room := ssRoomWith(t, srv, alice.session, "name", "E2EE")
	ssJoin(t, srv, bob.session, room, &alice.session)
	body := ssExt(nil, map[string]any{"e2ee": ssOn()})
	c := newSSConn(t, srv, alice.session)
	r := c.sync(body)
	e := r.ext("e2ee")
	if e == nil {
		t.Fatalf("no e2ee extension: %s", r.Raw)
	}
	if _, ok := e["device_lists"]; ok {
		t.Fatalf("device_lists on a connection's first request: %s", r.Raw)
	}
	if n := ssNum(e, "device_one_time_keys_count", "signed_curve25519"); n > 0 {
		t.Fatalf("one-time key count %d before any upload", n)
	}

	alice.upload(t, srv, map[string]any{"device_keys": alice.deviceKeys(t), "one_time_keys": map[string]any{
		"signed_curve25519:A1": alice.otk(t, false), "signed_curve25519:A2": alice.otk(t, false),
		"signed_curve25519:A3": alice.otk(t, false)}}).expect(t, http.StatusOK, "")
	r = c.sync(body)
	e = r.ext("e2ee")
	if n := ssNum(e, "device_one_time_keys_count", "signed_curve25519"); n != 3 {
		t.Fatalf("device_one_time_keys_count = %v, want signed_curve25519: 3", e["device_one_time_keys_count"])
	}
	if fb, _ := e["device_unused_fallback_key_types"].([]any); len(fb) != 0 {
		t.Fatalf("device_unused_fallback_key_types = %v before a fallback key", fb)
	}

	alice.upload(t, srv, map[string]any{"fallback_keys": map[string]any{"signed_curve25519:F1": alice.otk(t, true)}}).
		expect(t, http.StatusOK, "")
	r = c.sync(body)
	e = r.ext("e2ee")
	if fb, _ := e["device_unused_fallback_key_types"].([]any); !slices.Contains(fb, any("signed_curve25519")) {
		t.Fatalf("device_unused_fallback_key_types = %v, want signed_curve25519", e["device_unused_fallback_key_types"])
	}

	changed := func(r ssResp) []string {
		var out []string
		l, _ := obj(r.Extensions, "e2ee", "device_lists")["changed"].([]any)
		for _, u := range l {
			s, _ := u.(string)
			out = append(out, s)
		}
		return out
	}
	left := func(r ssResp) []string {
		var out []string
		l, _ := obj(r.Extensions, "e2ee", "device_lists")["left"].([]any)
		for _, u := range l {
			s, _ := u.(string)
			out = append(out, s)
		}
		return out
	}
	bob.upload(t, srv, map[string]any{"device_keys": bob.deviceKeys(t)}).expect(t, http.StatusOK, "")
	r = c.syncWait(body, 3000)
	if !slices.Contains(changed(r), bob.UserID) {
		t.Fatalf("device_lists.changed = %v after bob uploaded keys, want bob: %s", changed(r), r.Raw)
	}
	r = c.sync(body)
	if slices.Contains(changed(r), bob.UserID) {
		t.Fatalf("device_lists.changed = %v with no new change", changed(r))
	}

	// A new device of bob's, once it has keys (as /sync counts it).
	bob2 := kxNewDevice(t, login(t, srv, "bob", ssPassword, nil))
	bob2.upload(t, srv, map[string]any{"device_keys": bob2.deviceKeys(t)}).expect(t, http.StatusOK, "")
	r = c.syncWait(body, 3000)
	if !slices.Contains(changed(r), bob.UserID) {
		t.Fatalf("device_lists.changed = %v after bob's new device, want bob: %s", changed(r), r.Raw)
	}

	rmOp(t, srv, bob.session, room, "leave", nil).expect(t, http.StatusOK, "")
	r = c.syncWait(body, 3000)
	if !slices.Contains(left(r), bob.UserID) {
		t.Fatalf("device_lists.left = %v after bob left the only shared room, want bob: %s", left(r), r.Raw)
	}
}

// ssRoomAccountData lists the types of an account_data extension's
// global events (room "") or of a room's.
func ssAccountDataTypes(t testing.TB, r ssResp, roomID string) []string {
	t.Helper()
	ad := r.ext("account_data")
	if ad == nil {
		t.Fatalf("no account_data extension: %s", r.Raw)
	}
	var list []any
	if roomID == "" {
		list, _ = ad["global"].([]any)
	} else {
		list, _ = obj(ad, "rooms")[roomID].([]any)
	}
	out := []string{}
	for _, e := range list {
		m, _ := e.(map[string]any)
		typ, _ := m["type"].(string)
		if _, ok := m["content"].(map[string]any); !ok {
			t.Fatalf("account data event without content: %v", m)
		}
		out = append(out, typ)
	}
	return out
}

// TestSlidingSyncAccountData: everything first, then changes only.
func TestSlidingSyncAccountData(t *testing.T) {
	t.Parallel()
	srv := testserver.Start(t)
	alice := registerUser(t, srv, "alice", ssPassword)
	room := ssRoomWith(t, srv, alice, "name", "AD")
	other := ssRoomWith(t, srv, alice, "name", "other AD")
	ssSetAccountData(t, srv, alice, "", "org.example.a", map[string]any{"v": 1})
	ssSetAccountData(t, srv, alice, room, "org.example.r", map[string]any{"v": 1})
	body := ssExt(map[string]any{"all": ssList(0, nil)}, map[string]any{"account_data": ssOn()})
	c := newSSConn(t, srv, alice)
	r := c.sync(body)
	if g := ssAccountDataTypes(t, r, ""); !slices.Contains(g, "org.example.a") {
		t.Fatalf("global account data %v lacks org.example.a", g)
	}
	wantSet(t, "room account data", ssAccountDataTypes(t, r, room), "org.example.r")

	ssSetAccountData(t, srv, alice, "", "org.example.b", map[string]any{"v": 2})
	r = c.sync(body)
	wantSet(t, "global changes", ssAccountDataTypes(t, r, ""), "org.example.b")
	wantSet(t, "room changes", ssAccountDataTypes(t, r, room))

	ssSetAccountData(t, srv, alice, room, "org.example.r2", map[string]any{"v": 2})
	r = c.sync(body)
	wantSet(t, "global with no change", ssAccountDataTypes(t, r, ""))
	wantSet(t, "room changes", ssAccountDataTypes(t, r, room), "org.example.r2")
	if got := obj(r.ext("account_data"), "rooms")[other]; got != nil {
		t.Fatalf("account data of an unchanged room: %v", got)
	}
	ad := obj(r.ext("account_data"), "rooms")[room].([]any)
	if c := obj(ad[0], "content"); ssNum(c, "v") != 2 {
		t.Fatalf("room account data content = %v", c)
	}

	// A filter naming another list leaves out the room's changes, but
	// not the global ones.
	filtered := ssExt(map[string]any{"all": ssList(0, nil)}, map[string]any{"account_data": ssOn("lists", []string{"nope"}, "rooms", []string{})})
	ssSetAccountData(t, srv, alice, room, "org.example.r3", map[string]any{})
	ssSetAccountData(t, srv, alice, "", "org.example.c", map[string]any{})
	r = c.sync(filtered)
	wantSet(t, "global with a list filter", ssAccountDataTypes(t, r, ""), "org.example.c")
	wantSet(t, "filtered-out room", ssAccountDataTypes(t, r, room))
}

// TestSlidingSyncReceiptsTyping: receipts and typing notices, and the
// lists/rooms filters of extensions.
func TestSlidingSyncReceiptsTyping(t *testing.T) {
	t.Parallel()
	srv := testserver.Start(t)
	alice := registerUser(t, srv, "alice", ssPassword)
	bob := registerUser(t, srv, "bob", ssPassword)
	dm := ssRoomWith(t, srv, alice, "is_direct", true)
	group := ssRoomWith(t, srv, alice, "name", "Group")
	ssJoin(t, srv, bob, dm, &alice)
	ssJoin(t, srv, bob, group, &alice)
	ssSetAccountData(t, srv, alice, "", "m.direct", map[string]any{bob.UserID: []string{dm}})
	lists := map[string]any{
		"dms":  ssList(1, nil, "filters", map[string]any{"is_dm": true}),
		"rest": ssList(1, nil, "filters", map[string]any{"is_dm": false}),
	}
	typing := func(room string, on bool) {
		t.Helper()
		put(t, srv, rmRoom(room, "typing", bob.UserID), bob.AccessToken, map[string]any{"typing": on, "timeout": 30000}).
			expect(t, http.StatusOK, "")
	}
	typers := func(r ssResp, room string) ([]string, bool) {
		t.Helper()
		e := obj(r.ext("typing"), "rooms", room)
		if e == nil {
			return nil, false
		}
		if e["type"] != "m.typing" {
			t.Fatalf("typing event type = %v", e["type"])
		}
		out := []string{}
		ids, _ := obj(e, "content")["user_ids"].([]any)
		for _, u := range ids {
			out = append(out, u.(string))
		}
		return out, true
	}
	readers := func(r ssResp, room, eventID string) (bool, bool) {
		t.Helper()
		e := obj(r.ext("receipts"), "rooms", room)
		if e == nil {
			return false, false
		}
		if e["type"] != "m.receipt" {
			t.Fatalf("receipt event type = %v", e["type"])
		}
		return obj(e, "content", eventID, "m.read")[bob.UserID] != nil, true
	}

	t.Run("typing and receipts", func(t *testing.T) {
		c := newSSConn(t, srv, alice)
		body := ssExt(lists, map[string]any{"typing": ssOn(), "receipts": ssOn()})
		c.sync(body)
		m := rmSend(t, srv, bob, group, "read me")
		psReceipt(t, srv, bob, group, "m.read", m, nil)
		typing(group, true)
		r := c.sync(body)
		if got, ok := typers(r, group); !ok || !slices.Equal(got, []string{bob.UserID}) {
			t.Fatalf("typing in group = %v (present %v), want bob: %s", got, ok, r.Raw)
		}
		if got, ok := readers(r, group, m); !ok || !got {
			t.Fatalf("receipts lack bob's m.read on %s: %s", m, r.Raw)
		}
		if _, ok := typers(r, dm); ok {
			t.Fatalf("typing for the dm where nobody types: %s", r.Raw)
		}
		typing(group, false)
		r = c.sync(body)
		if got, ok := typers(r, group); !ok || len(got) != 0 {
			t.Fatalf("typing after bob stopped = %v (present %v), want []: %s", got, ok, r.Raw)
		}
		if _, ok := readers(r, group, m); ok {
			t.Fatalf("receipt sent again: %s", r.Raw)
		}
	})

	cases := []struct {
		name      string
		lists     []string
		rooms     []string
		subscribe bool
		dm, group bool
	}{
		{"default: every list", nil, nil, false, true, true},
		{"list dms", []string{"dms"}, []string{}, false, true, false},
		{"list rest", []string{"rest"}, []string{}, false, false, true},
		{"no lists, no rooms", []string{}, []string{}, false, false, false},
		{"subscribed rooms only", []string{}, []string{"*"}, true, false, true},
		{"a subscribed room by ID", []string{}, []string{group}, true, false, true},
	}
	for _, tc := range cases {
		t.Run("filter "+tc.name, func(t *testing.T) {
			cfg := func() map[string]any {
				m := ssOn()
				if tc.lists != nil {
					m["lists"] = tc.lists
				}
				if tc.rooms != nil {
					m["rooms"] = tc.rooms
				}
				return m
			}
			body := ssExt(map[string]any{"dms": lists["dms"]}, map[string]any{"typing": cfg(), "receipts": cfg()})
			if !tc.subscribe {
				body["lists"] = lists
			} else {
				body["room_subscriptions"] = map[string]any{group: map[string]any{"timeline_limit": 1}}
			}
			c := newSSConn(t, srv, alice)
			c.sync(body)
			md := rmSend(t, srv, bob, dm, "dm message")
			mg := rmSend(t, srv, bob, group, "group message")
			psReceipt(t, srv, bob, dm, "m.read", md, nil)
			psReceipt(t, srv, bob, group, "m.read", mg, nil)
			typing(dm, true)
			typing(group, true)
			r := c.sync(body)
			for _, x := range []struct {
				room string
				msg  string
				want bool
			}{{dm, md, tc.dm}, {group, mg, tc.group}} {
				_, tOK := typers(r, x.room)
				rOK, _ := readers(r, x.room, x.msg)
				if tOK != x.want || rOK != x.want {
					t.Fatalf("room %s: typing %v receipts %v, want %v: %s", x.room, tOK, rOK, x.want, r.Raw)
				}
			}
			typing(dm, false)
			typing(group, false)
		})
	}
}

// TestSlidingSyncExtensionsPrivacy: private read receipts reach only their
// owner; to-device messages and one-time key counts are the device's own.
func TestSlidingSyncExtensionsPrivacy(t *testing.T) {
	t.Parallel()
	srv := testserver.Start(t)
	alice := kxNewDevice(t, registerUser(t, srv, "alice", ssPassword))
	phone := kxNewDevice(t, login(t, srv, "alice", ssPassword, nil))
	bob := registerUser(t, srv, "bob", ssPassword)
	room := ssRoomWith(t, srv, alice.session, "name", "Private")
	ssJoin(t, srv, bob, room, &alice.session)
	m := rmSend(t, srv, bob, room, "read me privately")
	body := ssExt(map[string]any{"all": ssList(1, nil)}, map[string]any{"receipts": ssOn(), "to_device": ssOn(), "e2ee": ssOn()})
	c := newSSConn(t, srv, alice.session)
	c.sync(body)

	psReceipt(t, srv, bob, room, "m.read.private", m, nil)
	psReceipt(t, srv, alice.session, room, "m.read.private", m, nil)
	ssToDevice(t, srv, bob, phone.session, 1)
	phone.upload(t, srv, map[string]any{"device_keys": phone.deviceKeys(t),
		"one_time_keys": map[string]any{"signed_curve25519:P1": phone.otk(t, false)}}).expect(t, http.StatusOK, "")
	r := c.sync(body)
	content := obj(r.ext("receipts"), "rooms", room, "content", m)
	if obj(content, "m.read.private")[bob.UserID] != nil {
		t.Fatalf("bob's private receipt shown to alice: %s", r.Raw)
	}
	if obj(content, "m.read.private")[alice.UserID] == nil {
		t.Fatalf("alice's own private receipt missing: %s", r.Raw)
	}
	if got, _ := ssToDeviceNs(t, r, bob.UserID); len(got) != 0 {
		t.Fatalf("a to-device message for alice's phone reached her other device: %v", got)
	}
	if n := ssNum(r.ext("e2ee"), "device_one_time_keys_count", "signed_curve25519"); n > 0 {
		t.Fatalf("the phone's one-time keys counted for the other device: %d", n)
	}
	pr := newSSConn(t, srv, phone.session).sync(ssExt(nil, map[string]any{"to_device": ssOn(), "e2ee": ssOn()}))
	if got, _ := ssToDeviceNs(t, pr, bob.UserID); !slices.Equal(got, []string{"1"}) {
		t.Fatalf("the phone's to-device messages = %v, want [1]", got)
	}
	if n := ssNum(pr.ext("e2ee"), "device_one_time_keys_count", "signed_curve25519"); n != 1 {
		t.Fatalf("the phone's one-time key count = %d, want 1", n)
	}
}
