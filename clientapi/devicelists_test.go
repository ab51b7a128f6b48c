package clientapi_test

import (
	"encoding/json"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/tessera-hs/tessera/internal/testserver"
)

// dlSync is an incremental sync's device_lists and key counts.
type dlSync struct {
	next      string
	changed   []string
	left      []string
	otk       map[string]int
	fallbacks []string
}

func dlSyncFrom(t *testing.T, srv *testserver.Server, s session, since string) dlSync {
	t.Helper()
	r := psSync(t, srv, s, since, 0)
	var body struct {
		NextBatch   string `json:"next_batch"`
		DeviceLists struct {
			Changed []string `json:"changed"`
			Left    []string `json:"left"`
		} `json:"device_lists"`
		OTK       map[string]int `json:"device_one_time_keys_count"`
		Fallbacks []string       `json:"device_unused_fallback_key_types"`
	}
	if err := json.Unmarshal(r.Raw, &body); err != nil {
		t.Fatal(err)
	}
	if body.Fallbacks == nil {
		t.Fatalf("device_unused_fallback_key_types missing: %s", r.Raw)
	}
	return dlSync{body.NextBatch, body.DeviceLists.Changed, body.DeviceLists.Left, body.OTK, body.Fallbacks}
}

func wantUsers(t *testing.T, what string, got []string, want ...string) {
	t.Helper()
	slices.Sort(got)
	slices.Sort(want)
	if len(want) == 0 {
		want = nil
	}
	if len(got) == 0 {
		got = nil
	}
	if !slices.Equal(got, want) {
		t.Fatalf("%s = %v, want %v", what, got, want)
	}
}

func dlKeyChanges(t *testing.T, srv *testserver.Server, s session, from, to string) (changed, left []string) {
	t.Helper()
	r := get(t, srv, v3+"/keys/changes?from="+url.QueryEscape(from)+"&to="+url.QueryEscape(to), s.AccessToken).
		expect(t, http.StatusOK, "")
	var body struct {
		Changed []string `json:"changed"`
		Left    []string `json:"left"`
	}
	if err := json.Unmarshal(r.Raw, &body); err != nil || body.Changed == nil || body.Left == nil {
		t.Fatalf("keys/changes body %s (%v)", r.Raw, err)
	}
	return body.Changed, body.Left
}

// TestDeviceListsInSync: device_lists tells a user whose keys to fetch
// again (changed) and whom to stop tracking (left), for users sharing a
// room and only them; /keys/changes says the same between two tokens; the
// device's key counts come with every sync.
func TestDeviceListsInSync(t *testing.T) {
	t.Parallel()
	srv := testserver.Start(t)
	alice := registerUser(t, srv, "alice", "password1")
	bob := registerUser(t, srv, "bob", "password1")
	carol := registerUser(t, srv, "carol", "password1")
	room := post(t, srv, v3+"/createRoom", alice.AccessToken, map[string]any{"preset": "public_chat"}).
		expect(t, http.StatusOK, "").str("room_id")

	start := dlSyncFrom(t, srv, alice, "")
	if len(start.changed)+len(start.left) > 0 {
		t.Fatalf("an initial sync has device_lists: %+v", start)
	}
	if n, ok := start.otk["signed_curve25519"]; !ok || n != 0 {
		t.Fatalf("device_one_time_keys_count without signed_curve25519: 0: %v", start.otk)
	}

	// Bob joins: he now shares a room with Alice, so his devices matter.
	post(t, srv, v3+"/join/"+url.PathEscape(room), bob.AccessToken, map[string]any{}).expect(t, http.StatusOK, "")
	s1 := dlSyncFrom(t, srv, alice, start.next)
	wantUsers(t, "changed after bob joined", s1.changed, bob.UserID)

	// Bob uploads keys: changed for Alice. Carol, who shares no room, is
	// not told; her own upload is not told to Alice.
	bobDev := kxNewDevice(t, bob)
	bobDev.upload(t, srv, map[string]any{"device_keys": bobDev.deviceKeys(t)}).expect(t, http.StatusOK, "")
	carolDev := kxNewDevice(t, carol)
	carolDev.upload(t, srv, map[string]any{"device_keys": carolDev.deviceKeys(t)}).expect(t, http.StatusOK, "")
	s2 := dlSyncFrom(t, srv, alice, s1.next)
	wantUsers(t, "changed after bob's key upload", s2.changed, bob.UserID)
	wantUsers(t, "left", s2.left)

	// A long-poll wakes for the change.
	done := make(chan dlSync, 1)
	go func() {
		r := psSync(t, srv, alice, s2.next, 10*time.Second)
		var body struct {
			DeviceLists struct{ Changed []string } `json:"device_lists"`
			NextBatch   string                     `json:"next_batch"`
		}
		_ = json.Unmarshal(r.Raw, &body)
		done <- dlSync{next: body.NextBatch, changed: body.DeviceLists.Changed}
	}()
	time.Sleep(200 * time.Millisecond)
	bob2 := login(t, srv, "bob", "password1", nil)
	bob2Dev := kxNewDevice(t, bob2)
	start2 := time.Now()
	bob2Dev.upload(t, srv, map[string]any{"device_keys": bob2Dev.deviceKeys(t)}).expect(t, http.StatusOK, "")
	var woke dlSync
	select {
	case woke = <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("the long-poll did not wake for a device list change")
	}
	if d := time.Since(start2); d > 5*time.Second {
		t.Fatalf("woke after %v", d)
	}
	wantUsers(t, "changed in the woken long-poll", woke.changed, bob.UserID)

	// Bob's own other device hears of his new device too.
	bobSync := dlSyncFrom(t, srv, bob, s1.next)
	if !slices.Contains(bobSync.changed, bob.UserID) {
		t.Fatalf("bob not told of his own new device: %v", bobSync.changed)
	}

	// Bob deletes his second device: its keys go, and Alice is told.
	withPasswordUIA(t, srv, http.MethodDelete, v3+"/devices/"+bob2.DeviceID, bob.AccessToken, nil, "bob", "password1").
		expect(t, http.StatusOK, "")
	sDel := dlSyncFrom(t, srv, alice, woke.next)
	wantUsers(t, "changed after bob deleted a device", sDel.changed, bob.UserID)
	q := kxQuery(t, srv, alice.AccessToken, map[string][]string{bob.UserID: {}})
	if kxPath(q.Body, "device_keys", bob.UserID, bob2.DeviceID) != nil {
		t.Fatalf("a deleted device's keys: %s", q.Raw)
	}
	woke.next = sDel.next

	// /keys/changes says what the sync said, between the same tokens.
	changed, left := dlKeyChanges(t, srv, alice, s1.next, s2.next)
	wantUsers(t, "keys/changes changed", changed, bob.UserID)
	wantUsers(t, "keys/changes left", left)

	// Bob leaves: Alice stops tracking him.
	post(t, srv, v3+"/rooms/"+url.PathEscape(room)+"/leave", bob.AccessToken, map[string]any{}).expect(t, http.StatusOK, "")
	s3 := dlSyncFrom(t, srv, alice, woke.next)
	wantUsers(t, "left after bob left", s3.left, bob.UserID)
	wantUsers(t, "changed after bob left", s3.changed)

	// /keys/changes over the same window.
	changed, left = dlKeyChanges(t, srv, alice, woke.next, s3.next)
	wantUsers(t, "keys/changes changed after the leave", changed)
	wantUsers(t, "keys/changes left after the leave", left, bob.UserID)
	get(t, srv, v3+"/keys/changes?from="+url.QueryEscape(s1.next), alice.AccessToken).expect(t, http.StatusBadRequest, "M_MISSING_PARAM")
	get(t, srv, v3+"/keys/changes?from=nope&to="+url.QueryEscape(s1.next), alice.AccessToken).expect(t, http.StatusBadRequest, "M_INVALID_PARAM")

	// Key counts: what the device has left, after uploads and claims.
	otks := map[string]any{}
	for i := range 3 {
		otks["signed_curve25519:k"+string(rune('a'+i))] = bobDev.otk(t, false)
	}
	bobDev.upload(t, srv, map[string]any{"one_time_keys": otks,
		"fallback_keys": map[string]any{"signed_curve25519:fb": bobDev.otk(t, true)}}).expect(t, http.StatusOK, "")
	kxClaim(t, srv, alice.AccessToken, map[string]map[string]string{bob.UserID: {bob.DeviceID: "signed_curve25519"}})
	counts := dlSyncFrom(t, srv, bob, "")
	if counts.otk["signed_curve25519"] != 2 || !slices.Equal(counts.fallbacks, []string{"signed_curve25519"}) {
		t.Fatalf("bob's counts: %v, fallback types %v", counts.otk, counts.fallbacks)
	}
}

// TestDehydratedDevice: MSC3814. A user stores a device with no token and
// its keys; others can claim its keys and send it to-device messages; a
// new login reads its data and drains its messages page by page.
func TestDehydratedDevice(t *testing.T) {
	t.Parallel()
	srv := testserver.Start(t)
	alice := registerUser(t, srv, "alice", "password1")
	bob := registerUser(t, srv, "bob", "password1")
	const base = "/_matrix/client/unstable/org.matrix.msc3814.v1/dehydrated_device"

	get(t, srv, base, alice.AccessToken).expect(t, http.StatusNotFound, "M_NOT_FOUND")
	del(t, srv, base, alice.AccessToken, nil).expect(t, http.StatusNotFound, "M_NOT_FOUND")

	dehydrated := kxNewDevice(t, session{UserID: alice.UserID, DeviceID: "DEHYDRATED1"})
	body := func(d kxDevice) map[string]any {
		return map[string]any{
			"device_id": d.DeviceID, "device_data": map[string]any{"algorithm": "m.dehydration.v1.olm", "device_pickle": "opaque"},
			"initial_device_display_name": "Dehydrated device",
			"device_keys":                 d.deviceKeys(t),
			"one_time_keys":               map[string]any{"signed_curve25519:o1": d.otk(t, false)},
			"fallback_keys":               map[string]any{"signed_curve25519:f1": d.otk(t, true)},
		}
	}
	// Bad input: no device_id, device_data not an object, keys of another
	// device, a device ID already in use.
	bad := []struct {
		name    string
		mutate  func(map[string]any)
		errcode string
	}{
		{"no device_id", func(b map[string]any) { delete(b, "device_id") }, "M_MISSING_PARAM"},
		{"device_data not an object", func(b map[string]any) { b["device_data"] = "x" }, "M_BAD_JSON"},
		{"keys for another device", func(b map[string]any) { b["device_id"] = "OTHER" }, "M_BAD_JSON"},
		{"an existing device's ID", func(b map[string]any) { b["device_id"] = alice.DeviceID }, "M_INVALID_PARAM"},
	}
	for _, tt := range bad {
		b := body(dehydrated)
		tt.mutate(b)
		put(t, srv, base, alice.AccessToken, b).expect(t, http.StatusBadRequest, tt.errcode)
		get(t, srv, base, alice.AccessToken).expect(t, http.StatusNotFound, "M_NOT_FOUND")
	}

	r := put(t, srv, base, alice.AccessToken, body(dehydrated)).expect(t, http.StatusOK, "")
	if r.str("device_id") != "DEHYDRATED1" {
		t.Fatalf("PUT answered %s", r.Raw)
	}
	got := get(t, srv, base, alice.AccessToken).expect(t, http.StatusOK, "")
	if got.str("device_id") != "DEHYDRATED1" || kxPath(got.Body, "device_data", "device_pickle") != "opaque" {
		t.Fatalf("GET answered %s", got.Raw)
	}
	// Others see its keys and can claim one.
	q := kxQuery(t, srv, bob.AccessToken, map[string][]string{alice.UserID: {}})
	if kxPath(q.Body, "device_keys", alice.UserID, "DEHYDRATED1", "unsigned", "device_display_name") != "Dehydrated device" {
		t.Fatalf("the dehydrated device is not in /keys/query: %s", q.Raw)
	}
	claim := kxClaim(t, srv, bob.AccessToken, map[string]map[string]string{alice.UserID: {"DEHYDRATED1": "signed_curve25519"}})
	if kxPath(claim.Body, "one_time_keys", alice.UserID, "DEHYDRATED1") == nil {
		t.Fatalf("no key claimed: %s", claim.Raw)
	}
	// Bob sends it 150 to-device messages; the rehydrating login drains
	// them in pages, each next_batch acknowledging the page before.
	for i := range 150 {
		msgs := map[string]any{alice.UserID: map[string]any{"DEHYDRATED1": map[string]any{"n": i}}}
		put(t, srv, v3+"/sendToDevice/m.room.encrypted/dh"+strconv.Itoa(i), bob.AccessToken, map[string]any{"messages": msgs}).
			expect(t, http.StatusOK, "")
	}
	events := base + "/DEHYDRATED1/events"
	post(t, srv, base+"/"+alice.DeviceID+"/events", alice.AccessToken, map[string]any{}).expect(t, http.StatusForbidden, "M_FORBIDDEN")
	var seen []float64
	next := ""
	for range 5 {
		b := map[string]any{}
		if next != "" {
			b["next_batch"] = next
		}
		page := post(t, srv, events, alice.AccessToken, b).expect(t, http.StatusOK, "")
		evs, _ := page.Body["events"].([]any)
		if len(evs) == 0 {
			break
		}
		for _, e := range evs {
			n, _ := kxPath(e, "content", "n").(float64)
			seen = append(seen, n)
		}
		next = page.str("next_batch")
	}
	if len(seen) != 150 || seen[0] != 0 || seen[149] != 149 {
		t.Fatalf("drained %d messages (%v...)", len(seen), seen[:min(len(seen), 3)])
	}
	// Every page is acknowledged: nothing is left after the last one.
	again := post(t, srv, events, alice.AccessToken, map[string]any{"next_batch": next}).expect(t, http.StatusOK, "")
	if evs, _ := again.Body["events"].([]any); len(evs) != 0 {
		t.Fatalf("messages after the last page: %s", again.Raw)
	}

	// Replacing it deletes the old device and its keys.
	second := kxNewDevice(t, session{UserID: alice.UserID, DeviceID: "DEHYDRATED2"})
	put(t, srv, base, alice.AccessToken, body(second)).expect(t, http.StatusOK, "")
	q = kxQuery(t, srv, bob.AccessToken, map[string][]string{alice.UserID: {}})
	if kxPath(q.Body, "device_keys", alice.UserID, "DEHYDRATED1") != nil || kxPath(q.Body, "device_keys", alice.UserID, "DEHYDRATED2") == nil {
		t.Fatalf("after replacing: %s", q.Raw)
	}
	r = del(t, srv, base, alice.AccessToken, nil).expect(t, http.StatusOK, "")
	if r.str("device_id") != "DEHYDRATED2" {
		t.Fatalf("DELETE answered %s", r.Raw)
	}
	get(t, srv, base, alice.AccessToken).expect(t, http.StatusNotFound, "M_NOT_FOUND")
	q = kxQuery(t, srv, bob.AccessToken, map[string][]string{alice.UserID: {}})
	if kxPath(q.Body, "device_keys", alice.UserID, "DEHYDRATED2") != nil {
		t.Fatalf("deleted dehydrated device still has keys: %s", q.Raw)
	}
}

// TestDeactivationDropsKeys: a deactivated account's device and
// cross-signing keys disappear from /keys/query.
func TestDeactivationDropsKeys(t *testing.T) {
	t.Parallel()
	srv := testserver.Start(t)
	alice := kxNewDevice(t, registerUser(t, srv, "alice", "password1"))
	bob := registerUser(t, srv, "bob", "password1")
	alice.upload(t, srv, map[string]any{"device_keys": alice.deviceKeys(t)}).expect(t, http.StatusOK, "")
	cs := kxNewCrossSigning(t, alice.UserID)
	post(t, srv, kxCSPath, alice.AccessToken, cs.body(t)).expect(t, http.StatusOK, "")
	q := kxQuery(t, srv, bob.AccessToken, map[string][]string{alice.UserID: {}})
	if kxPath(q.Body, "master_keys", alice.UserID) == nil || kxPath(q.Body, "device_keys", alice.UserID, alice.DeviceID) == nil {
		t.Fatalf("keys missing before deactivation: %s", q.Raw)
	}
	withPasswordUIA(t, srv, http.MethodPost, v3+"/account/deactivate", alice.AccessToken, nil, "alice", "password1").
		expect(t, http.StatusOK, "")
	q = kxQuery(t, srv, bob.AccessToken, map[string][]string{alice.UserID: {}})
	if kxPath(q.Body, "master_keys", alice.UserID) != nil || kxPath(q.Body, "self_signing_keys", alice.UserID) != nil ||
		kxPath(q.Body, "device_keys", alice.UserID, alice.DeviceID) != nil {
		t.Fatalf("keys of a deactivated account: %s", q.Raw)
	}
}
