package clientapi_test

import (
	"encoding/json"
	"net/http"
	"net/url"
	"reflect"
	"testing"

	"github.com/tessera-hs/tessera/internal/testserver"
)

// Tests for server-side key backup: /room_keys/version and /room_keys/keys.
// https://spec.matrix.org/v1.19/client-server-api/#server-side-key-backups

const (
	kbPassword  = "password1"
	kbAlgorithm = "m.megolm_backup.v1.curve25519-aes-sha2"
	kbRoom      = "!room:tessera.test"
	kbRoom2     = "!other:tessera.test"
)

func kbVersionPath(version ...string) string {
	if len(version) == 0 {
		return v3 + "/room_keys/version"
	}
	return v3 + "/room_keys/version/" + url.PathEscape(version[0])
}

// kbKeysPath is /room_keys/keys[/roomID[/sessionID]]?version=version.
func kbKeysPath(version string, ids ...string) string {
	p := v3 + "/room_keys/keys"
	for _, id := range ids {
		p += "/" + url.PathEscape(id)
	}
	return p + "?version=" + url.QueryEscape(version)
}

func kbAuthData(publicKey string) map[string]any {
	return map[string]any{"public_key": publicKey, "signatures": map[string]any{}}
}

// kbCreate creates a backup version and returns it.
func kbCreate(t testing.TB, srv *testserver.Server, s session, publicKey string) string {
	t.Helper()
	r := post(t, srv, kbVersionPath(), s.AccessToken, map[string]any{
		"algorithm": kbAlgorithm, "auth_data": kbAuthData(publicKey),
	}).expect(t, http.StatusOK, "")
	v := r.str("version")
	if v == "" {
		t.Fatalf("no version in %s", r.Raw)
	}
	return v
}

// kbKey is a KeyBackupData whose session_data names the upload.
func kbKey(verified bool, firstIndex, forwarded int, tag string) map[string]any {
	return map[string]any{
		"first_message_index": firstIndex,
		"forwarded_count":     forwarded,
		"is_verified":         verified,
		"session_data":        map[string]any{"ciphertext": tag, "ephemeral": "e", "mac": "m"},
	}
}

// kbTag is the ciphertext of a returned KeyBackupData.
func kbTag(t testing.TB, k any) string {
	t.Helper()
	m, _ := k.(map[string]any)
	sd, _ := m["session_data"].(map[string]any)
	tag, _ := sd["ciphertext"].(string)
	if tag == "" {
		t.Fatalf("key without session_data.ciphertext: %v", k)
	}
	return tag
}

// kbUpdate checks a {etag, count} answer and returns the etag.
func kbUpdate(t testing.TB, r resp, count int) string {
	t.Helper()
	r.expect(t, http.StatusOK, "")
	if got, ok := r.Body["count"].(float64); !ok || int(got) != count {
		t.Fatalf("count = %v, want %d; body: %s", r.Body["count"], count, r.Raw)
	}
	etag := r.str("etag")
	if etag == "" {
		t.Fatalf("no etag in %s", r.Raw)
	}
	return etag
}

// kbInfo reads a version and checks its fields besides etag, which it
// returns.
func kbInfo(t testing.TB, srv *testserver.Server, s session, path, version, publicKey string, count int) string {
	t.Helper()
	r := get(t, srv, path, s.AccessToken).expect(t, http.StatusOK, "")
	if r.str("version") != version || r.str("algorithm") != kbAlgorithm {
		t.Fatalf("version/algorithm = %q/%q, want %q/%q; body: %s", r.str("version"), r.str("algorithm"), version, kbAlgorithm, r.Raw)
	}
	ad, _ := r.Body["auth_data"].(map[string]any)
	if ad["public_key"] != publicKey {
		t.Fatalf("auth_data = %v, want public_key %q", r.Body["auth_data"], publicKey)
	}
	return kbUpdate(t, r, count)
}

func TestKeyBackupVersions(t *testing.T) {
	srv := testserver.Start(t)
	alice := registerUser(t, srv, "alice", kbPassword)
	tok := alice.AccessToken

	get(t, srv, kbVersionPath(), tok).expect(t, http.StatusNotFound, "M_NOT_FOUND")

	v1 := kbCreate(t, srv, alice, "key1")
	if v1 != "1" {
		t.Fatalf("first version = %q, want \"1\"", v1)
	}
	etag1 := kbInfo(t, srv, alice, kbVersionPath(), "1", "key1", 0)
	kbInfo(t, srv, alice, kbVersionPath("1"), "1", "key1", 0)

	v2 := kbCreate(t, srv, alice, "key2")
	if v2 != "2" {
		t.Fatalf("second version = %q, want \"2\"", v2)
	}
	kbInfo(t, srv, alice, kbVersionPath(), "2", "key2", 0)
	// The older version can still be read.
	kbInfo(t, srv, alice, kbVersionPath("1"), "1", "key1", 0)

	// Update: only auth_data changes; the etag does not.
	put(t, srv, kbVersionPath("1"), tok, map[string]any{
		"algorithm": kbAlgorithm, "auth_data": kbAuthData("key1b"),
	}).expect(t, http.StatusOK, "")
	if got := kbInfo(t, srv, alice, kbVersionPath("1"), "1", "key1b", 0); got != etag1 {
		t.Fatalf("etag changed on auth_data update: %q -> %q", etag1, got)
	}
	put(t, srv, kbVersionPath("1"), tok, map[string]any{
		"algorithm": kbAlgorithm, "auth_data": kbAuthData("key1c"), "version": "1",
	}).expect(t, http.StatusOK, "")
	kbInfo(t, srv, alice, kbVersionPath("1"), "1", "key1c", 0)

	updates := []struct {
		name    string
		version string
		body    map[string]any
		status  int
		errcode string
	}{
		{"wrong algorithm", "1", map[string]any{"algorithm": "m.other", "auth_data": kbAuthData("x")}, 400, "M_INVALID_PARAM"},
		{"version mismatch", "1", map[string]any{"algorithm": kbAlgorithm, "auth_data": kbAuthData("x"), "version": "2"}, 400, "M_INVALID_PARAM"},
		{"version not a string", "1", map[string]any{"algorithm": kbAlgorithm, "auth_data": kbAuthData("x"), "version": 1}, 400, "M_BAD_JSON"},
		{"unknown version", "7", map[string]any{"algorithm": kbAlgorithm, "auth_data": kbAuthData("x")}, 404, "M_NOT_FOUND"},
		{"malformed version", "x1", map[string]any{"algorithm": kbAlgorithm, "auth_data": kbAuthData("x")}, 404, "M_NOT_FOUND"},
		{"missing algorithm", "1", map[string]any{"auth_data": kbAuthData("x")}, 400, "M_MISSING_PARAM"},
		{"missing auth_data", "1", map[string]any{"algorithm": kbAlgorithm}, 400, "M_MISSING_PARAM"},
	}
	for _, tc := range updates {
		t.Run("update/"+tc.name, func(t *testing.T) {
			put(t, srv, kbVersionPath(tc.version), tok, tc.body).expect(t, tc.status, tc.errcode)
		})
	}
	// None of the refused updates changed anything.
	kbInfo(t, srv, alice, kbVersionPath("1"), "1", "key1c", 0)

	// Malformed version strings name no backup.
	for _, v := range []string{"abc", "0", "-1", "01", "+1", "1.0", "99999999999999999999"} {
		get(t, srv, kbVersionPath(v), tok).expect(t, http.StatusNotFound, "M_NOT_FOUND")
		del(t, srv, kbVersionPath(v), tok, nil).expect(t, http.StatusNotFound, "M_NOT_FOUND")
	}

	// Delete the current version: the previous one becomes current.
	del(t, srv, kbVersionPath("2"), tok, nil).expect(t, http.StatusOK, "")
	get(t, srv, kbVersionPath("2"), tok).expect(t, http.StatusNotFound, "M_NOT_FOUND")
	put(t, srv, kbVersionPath("2"), tok, map[string]any{"algorithm": kbAlgorithm, "auth_data": kbAuthData("x")}).
		expect(t, http.StatusNotFound, "M_NOT_FOUND")
	kbInfo(t, srv, alice, kbVersionPath(), "1", "key1c", 0)
	// Deleting it again succeeds; a version that never existed is 404.
	del(t, srv, kbVersionPath("2"), tok, nil).expect(t, http.StatusOK, "")
	del(t, srv, kbVersionPath("3"), tok, nil).expect(t, http.StatusNotFound, "M_NOT_FOUND")

	// Version numbers are not reused.
	if v := kbCreate(t, srv, alice, "key3"); v != "3" {
		t.Fatalf("version after a deletion = %q, want \"3\"", v)
	}
	del(t, srv, kbVersionPath("3"), tok, nil).expect(t, http.StatusOK, "")
	del(t, srv, kbVersionPath("1"), tok, nil).expect(t, http.StatusOK, "")
	get(t, srv, kbVersionPath(), tok).expect(t, http.StatusNotFound, "M_NOT_FOUND")
}

func TestKeyBackupVersionBadBodies(t *testing.T) {
	srv := testserver.Start(t)
	alice := registerUser(t, srv, "alice", kbPassword)
	v := kbCreate(t, srv, alice, "key1")

	cases := []struct {
		name    string
		body    any
		errcode string
	}{
		{"not JSON", `{"algorithm":`, "M_NOT_JSON"},
		{"empty body", "", "M_NOT_JSON"},
		{"array", `[]`, "M_BAD_JSON"},
		{"missing algorithm", map[string]any{"auth_data": kbAuthData("k")}, "M_MISSING_PARAM"},
		{"null algorithm", map[string]any{"algorithm": nil, "auth_data": kbAuthData("k")}, "M_MISSING_PARAM"},
		{"missing auth_data", map[string]any{"algorithm": kbAlgorithm}, "M_MISSING_PARAM"},
		{"algorithm not a string", map[string]any{"algorithm": 1, "auth_data": kbAuthData("k")}, "M_BAD_JSON"},
		{"empty algorithm", map[string]any{"algorithm": "", "auth_data": kbAuthData("k")}, "M_BAD_JSON"},
		{"auth_data not an object", map[string]any{"algorithm": kbAlgorithm, "auth_data": "k"}, "M_BAD_JSON"},
		{"auth_data array", map[string]any{"algorithm": kbAlgorithm, "auth_data": []any{}}, "M_BAD_JSON"},
	}
	for _, tc := range cases {
		t.Run("create/"+tc.name, func(t *testing.T) {
			post(t, srv, kbVersionPath(), alice.AccessToken, tc.body).expect(t, http.StatusBadRequest, tc.errcode)
		})
		t.Run("update/"+tc.name, func(t *testing.T) {
			put(t, srv, kbVersionPath(v), alice.AccessToken, tc.body).expect(t, http.StatusBadRequest, tc.errcode)
		})
	}
	// No version was created by the refused requests.
	kbInfo(t, srv, alice, kbVersionPath(), v, "key1", 0)

	// No access token; guests have no backup.
	get(t, srv, kbVersionPath(), "").expect(t, http.StatusUnauthorized, "M_MISSING_TOKEN")
}

func TestKeyBackupGuestsRefused(t *testing.T) {
	srv := testserver.Start(t, guestsAllowed)
	g := sessionOf(t, post(t, srv, v3+"/register?kind=guest", "", map[string]any{}).expect(t, http.StatusOK, ""))
	post(t, srv, kbVersionPath(), g.AccessToken, map[string]any{"algorithm": kbAlgorithm, "auth_data": kbAuthData("k")}).
		expect(t, http.StatusForbidden, "M_GUEST_ACCESS_FORBIDDEN")
	get(t, srv, kbKeysPath("1"), g.AccessToken).expect(t, http.StatusForbidden, "M_GUEST_ACCESS_FORBIDDEN")
}

func TestRoomKeysPutGetDelete(t *testing.T) {
	srv := testserver.Start(t)
	alice := registerUser(t, srv, "alice", kbPassword)
	tok := alice.AccessToken
	v := kbCreate(t, srv, alice, "key1")

	// An empty backup.
	r := get(t, srv, kbKeysPath(v), tok).expect(t, http.StatusOK, "")
	if string(r.Raw) != `{"rooms":{}}` {
		t.Fatalf("empty backup = %s, want {\"rooms\":{}}", r.Raw)
	}
	r = get(t, srv, kbKeysPath(v, kbRoom), tok).expect(t, http.StatusOK, "")
	if string(r.Raw) != `{"sessions":{}}` {
		t.Fatalf("empty room = %s, want {\"sessions\":{}}", r.Raw)
	}
	get(t, srv, kbKeysPath(v, kbRoom, "s1"), tok).expect(t, http.StatusNotFound, "M_NOT_FOUND")

	// Upload at each level.
	kbUpdate(t, put(t, srv, kbKeysPath(v), tok, map[string]any{"rooms": map[string]any{
		kbRoom:  map[string]any{"sessions": map[string]any{"s1": kbKey(true, 0, 0, "r1s1"), "s2": kbKey(false, 3, 1, "r1s2")}},
		kbRoom2: map[string]any{"sessions": map[string]any{"s1": kbKey(false, 0, 0, "r2s1")}},
	}}), 3)
	kbUpdate(t, put(t, srv, kbKeysPath(v, kbRoom), tok, map[string]any{"sessions": map[string]any{
		"s3": kbKey(true, 5, 0, "r1s3"),
	}}), 4)
	kbUpdate(t, put(t, srv, kbKeysPath(v, kbRoom2, "s2"), tok, kbKey(true, 0, 2, "r2s2")), 5)
	// An upload with no sessions changes nothing.
	kbUpdate(t, put(t, srv, kbKeysPath(v), tok, map[string]any{"rooms": map[string]any{}}), 5)
	kbUpdate(t, put(t, srv, kbKeysPath(v, kbRoom), tok, map[string]any{"sessions": map[string]any{}}), 5)
	kbInfo(t, srv, alice, kbVersionPath(v), v, "key1", 5)

	// Read at each level.
	r = get(t, srv, kbKeysPath(v), tok).expect(t, http.StatusOK, "")
	got := map[string]map[string]string{}
	rooms, _ := r.Body["rooms"].(map[string]any)
	for rid, rb := range rooms {
		sessions, _ := rb.(map[string]any)["sessions"].(map[string]any)
		got[rid] = map[string]string{}
		for sid, k := range sessions {
			got[rid][sid] = kbTag(t, k)
		}
	}
	want := map[string]map[string]string{
		kbRoom:  {"s1": "r1s1", "s2": "r1s2", "s3": "r1s3"},
		kbRoom2: {"s1": "r2s1", "s2": "r2s2"},
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("all keys = %v, want %v", got, want)
	}
	r = get(t, srv, kbKeysPath(v, kbRoom2), tok).expect(t, http.StatusOK, "")
	sessions, _ := r.Body["sessions"].(map[string]any)
	if len(sessions) != 2 || kbTag(t, sessions["s1"]) != "r2s1" || kbTag(t, sessions["s2"]) != "r2s2" {
		t.Fatalf("room keys = %s", r.Raw)
	}
	r = get(t, srv, kbKeysPath(v, kbRoom, "s2"), tok).expect(t, http.StatusOK, "")
	var k struct {
		FirstMessageIndex *int            `json:"first_message_index"`
		ForwardedCount    *int            `json:"forwarded_count"`
		IsVerified        *bool           `json:"is_verified"`
		SessionData       json.RawMessage `json:"session_data"`
	}
	if err := json.Unmarshal(r.Raw, &k); err != nil || k.FirstMessageIndex == nil || *k.FirstMessageIndex != 3 ||
		k.ForwardedCount == nil || *k.ForwardedCount != 1 || k.IsVerified == nil || *k.IsVerified ||
		string(k.SessionData) != `{"ciphertext":"r1s2","ephemeral":"e","mac":"m"}` {
		t.Fatalf("session = %s (%v)", r.Raw, err)
	}
	get(t, srv, kbKeysPath(v, kbRoom, "nope"), tok).expect(t, http.StatusNotFound, "M_NOT_FOUND")
	get(t, srv, kbKeysPath(v, "!nope:tessera.test", "s1"), tok).expect(t, http.StatusNotFound, "M_NOT_FOUND")

	// Delete at each level.
	kbUpdate(t, del(t, srv, kbKeysPath(v, kbRoom, "s1"), tok, nil), 4)
	get(t, srv, kbKeysPath(v, kbRoom, "s1"), tok).expect(t, http.StatusNotFound, "M_NOT_FOUND")
	kbUpdate(t, del(t, srv, kbKeysPath(v, kbRoom2), tok, nil), 2)
	r = get(t, srv, kbKeysPath(v, kbRoom2), tok).expect(t, http.StatusOK, "")
	if string(r.Raw) != `{"sessions":{}}` {
		t.Fatalf("deleted room = %s", r.Raw)
	}
	kbInfo(t, srv, alice, kbVersionPath(), v, "key1", 2)
	kbUpdate(t, del(t, srv, kbKeysPath(v), tok, nil), 0)
	r = get(t, srv, kbKeysPath(v), tok).expect(t, http.StatusOK, "")
	if string(r.Raw) != `{"rooms":{}}` {
		t.Fatalf("after deleting all = %s", r.Raw)
	}
	kbInfo(t, srv, alice, kbVersionPath(), v, "key1", 0)
}

func TestRoomKeysReplacementRule(t *testing.T) {
	srv := testserver.Start(t)
	alice := registerUser(t, srv, "alice", kbPassword)
	tok := alice.AccessToken
	v := kbCreate(t, srv, alice, "key1")

	type meta struct {
		verified         bool
		first, forwarded int
	}
	cases := []struct {
		name            string
		stored, upload  meta
		wantReplacement bool
	}{
		{"verified beats unverified", meta{false, 0, 0}, meta{true, 5, 5}, true},
		{"unverified loses to verified", meta{true, 5, 5}, meta{false, 0, 0}, false},
		{"lower first_message_index wins", meta{true, 5, 0}, meta{true, 2, 9}, true},
		{"higher first_message_index loses", meta{false, 2, 9}, meta{false, 5, 0}, false},
		{"lower forwarded_count wins", meta{false, 3, 4}, meta{false, 3, 1}, true},
		{"higher forwarded_count loses", meta{true, 3, 1}, meta{true, 3, 4}, false},
		{"equal keeps the stored key", meta{true, 3, 1}, meta{true, 3, 1}, false},
	}
	count := 0
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			sid := "session" + string(rune('a'+i))
			path := kbKeysPath(v, kbRoom, sid)
			count++
			etag := kbUpdate(t, put(t, srv, path, tok, kbKey(tc.stored.verified, tc.stored.first, tc.stored.forwarded, "stored")), count)
			after := kbUpdate(t, put(t, srv, path, tok, kbKey(tc.upload.verified, tc.upload.first, tc.upload.forwarded, "upload")), count)
			r := get(t, srv, path, tok).expect(t, http.StatusOK, "")
			want, m := "stored", tc.stored
			if tc.wantReplacement {
				want, m = "upload", tc.upload
			}
			if got := kbTag(t, r.Body); got != want {
				t.Fatalf("stored key is %q, want %q", got, want)
			}
			if r.Body["is_verified"] != m.verified || r.Body["first_message_index"] != float64(m.first) ||
				r.Body["forwarded_count"] != float64(m.forwarded) {
				t.Fatalf("stored metadata = %s, want %+v", r.Raw, m)
			}
			if (after != etag) != tc.wantReplacement {
				t.Fatalf("etag %q -> %q, want a change: %v", etag, after, tc.wantReplacement)
			}
		})
	}

	// In a batch, each session follows the rule on its own.
	r := get(t, srv, kbKeysPath(v, kbRoom), tok).expect(t, http.StatusOK, "")
	before := len(r.Body["sessions"].(map[string]any))
	kbUpdate(t, put(t, srv, kbKeysPath(v, kbRoom), tok, map[string]any{"sessions": map[string]any{
		"sessiona": kbKey(false, 0, 0, "batch-worse"), // stored: verified 5/5
		"sessionb": kbKey(true, 0, 0, "batch-better"), // stored: verified 5/5
		"new":      kbKey(false, 0, 0, "batch-new"),
	}}), before+1)
	r = get(t, srv, kbKeysPath(v, kbRoom, "sessiona"), tok).expect(t, http.StatusOK, "")
	if got := kbTag(t, r.Body); got != "upload" {
		t.Fatalf("sessiona = %q, want the earlier upload kept", got)
	}
	r = get(t, srv, kbKeysPath(v, kbRoom, "sessionb"), tok).expect(t, http.StatusOK, "")
	if got := kbTag(t, r.Body); got != "batch-better" {
		t.Fatalf("sessionb = %q, want batch-better", got)
	}
}

func TestRoomKeysETagAndCount(t *testing.T) {
	srv := testserver.Start(t)
	alice := registerUser(t, srv, "alice", kbPassword)
	tok := alice.AccessToken
	v := kbCreate(t, srv, alice, "key1")
	e0 := kbInfo(t, srv, alice, kbVersionPath(v), v, "key1", 0)

	// Deleting nothing changes nothing.
	if e := kbUpdate(t, del(t, srv, kbKeysPath(v), tok, nil), 0); e != e0 {
		t.Fatalf("etag changed deleting nothing: %q -> %q", e0, e)
	}
	e1 := kbUpdate(t, put(t, srv, kbKeysPath(v, kbRoom, "s1"), tok, kbKey(false, 4, 0, "a")), 1)
	if e1 == e0 {
		t.Fatalf("etag did not change on a new key")
	}
	if e := kbInfo(t, srv, alice, kbVersionPath(), v, "key1", 1); e != e1 {
		t.Fatalf("GET version etag = %q, want %q", e, e1)
	}
	// The same key again, and a worse one, change nothing.
	for _, k := range []map[string]any{kbKey(false, 4, 0, "a"), kbKey(false, 6, 0, "b")} {
		if e := kbUpdate(t, put(t, srv, kbKeysPath(v, kbRoom, "s1"), tok, k), 1); e != e1 {
			t.Fatalf("etag changed on an upload that stored nothing: %q -> %q", e1, e)
		}
	}
	// Deleting a session that is not there changes nothing.
	if e := kbUpdate(t, del(t, srv, kbKeysPath(v, kbRoom, "nope"), tok, nil), 1); e != e1 {
		t.Fatalf("etag changed deleting nothing: %q -> %q", e1, e)
	}
	// A better key replaces it: same count, new etag.
	e2 := kbUpdate(t, put(t, srv, kbKeysPath(v, kbRoom, "s1"), tok, kbKey(false, 2, 0, "c")), 1)
	if e2 == e1 || e2 == e0 {
		t.Fatalf("etag did not change on a replacement: %q", e2)
	}
	e3 := kbUpdate(t, put(t, srv, kbKeysPath(v, kbRoom2, "s1"), tok, kbKey(false, 2, 0, "d")), 2)
	e4 := kbUpdate(t, del(t, srv, kbKeysPath(v, kbRoom), tok, nil), 1)
	seen := map[string]bool{}
	for _, e := range []string{e0, e1, e2, e3, e4} {
		if seen[e] {
			t.Fatalf("etag repeated: %v", []string{e0, e1, e2, e3, e4})
		}
		seen[e] = true
	}
	if e := kbInfo(t, srv, alice, kbVersionPath(), v, "key1", 1); e != e4 {
		t.Fatalf("GET version etag = %q, want %q", e, e4)
	}
}

func TestRoomKeysWrongVersion(t *testing.T) {
	srv := testserver.Start(t)
	alice := registerUser(t, srv, "alice", kbPassword)
	tok := alice.AccessToken

	// No backup at all.
	put(t, srv, kbKeysPath("1", kbRoom, "s1"), tok, kbKey(true, 0, 0, "x")).expect(t, http.StatusNotFound, "M_NOT_FOUND")
	get(t, srv, kbKeysPath("1"), tok).expect(t, http.StatusNotFound, "M_NOT_FOUND")
	del(t, srv, kbKeysPath("1"), tok, nil).expect(t, http.StatusNotFound, "M_NOT_FOUND")

	v1 := kbCreate(t, srv, alice, "key1")
	kbUpdate(t, put(t, srv, kbKeysPath(v1, kbRoom, "s1"), tok, kbKey(true, 0, 0, "v1")), 1)
	v2 := kbCreate(t, srv, alice, "key2")

	// Uploads to an older version are refused with the current version.
	for _, tc := range []struct {
		path string
		body any
	}{
		{kbKeysPath(v1, kbRoom, "s2"), kbKey(true, 0, 0, "x")},
		{kbKeysPath(v1, kbRoom), map[string]any{"sessions": map[string]any{"s2": kbKey(true, 0, 0, "x")}}},
		{kbKeysPath(v1), map[string]any{"rooms": map[string]any{}}},
	} {
		r := put(t, srv, tc.path, tok, tc.body).expect(t, http.StatusForbidden, "M_WRONG_ROOM_KEYS_VERSION")
		if r.str("current_version") != v2 {
			t.Fatalf("current_version = %q, want %q; body: %s", r.str("current_version"), v2, r.Raw)
		}
	}
	// The older version can still be read and cleaned up.
	r := get(t, srv, kbKeysPath(v1, kbRoom, "s1"), tok).expect(t, http.StatusOK, "")
	if kbTag(t, r.Body) != "v1" {
		t.Fatalf("old version key = %s", r.Raw)
	}
	// Unknown and malformed versions are 404.
	for _, v := range []string{"3", "abc", "", "0"} {
		put(t, srv, kbKeysPath(v, kbRoom, "s1"), tok, kbKey(true, 0, 0, "x")).expect(t, http.StatusNotFound, "M_NOT_FOUND")
		get(t, srv, kbKeysPath(v), tok).expect(t, http.StatusNotFound, "M_NOT_FOUND")
		del(t, srv, kbKeysPath(v, kbRoom), tok, nil).expect(t, http.StatusNotFound, "M_NOT_FOUND")
	}
	// A new version starts empty.
	r = get(t, srv, kbKeysPath(v2), tok).expect(t, http.StatusOK, "")
	if string(r.Raw) != `{"rooms":{}}` {
		t.Fatalf("new version keys = %s", r.Raw)
	}

	// Deleting v2 makes v1 current again; v2's keys are gone with it.
	kbUpdate(t, put(t, srv, kbKeysPath(v2, kbRoom, "s9"), tok, kbKey(true, 0, 0, "v2")), 1)
	del(t, srv, kbVersionPath(v2), tok, nil).expect(t, http.StatusOK, "")
	for _, p := range []string{kbKeysPath(v2), kbKeysPath(v2, kbRoom), kbKeysPath(v2, kbRoom, "s9")} {
		get(t, srv, p, tok).expect(t, http.StatusNotFound, "M_NOT_FOUND")
		del(t, srv, p, tok, nil).expect(t, http.StatusNotFound, "M_NOT_FOUND")
	}
	put(t, srv, kbKeysPath(v2, kbRoom, "s9"), tok, kbKey(true, 0, 0, "x")).expect(t, http.StatusNotFound, "M_NOT_FOUND")
	kbUpdate(t, put(t, srv, kbKeysPath(v1, kbRoom, "s2"), tok, kbKey(true, 0, 0, "v1b")), 2)

	// Deleting v1 deletes its keys: a later version does not see them.
	del(t, srv, kbVersionPath(v1), tok, nil).expect(t, http.StatusOK, "")
	get(t, srv, kbKeysPath(v1), tok).expect(t, http.StatusNotFound, "M_NOT_FOUND")
	v3v := kbCreate(t, srv, alice, "key3")
	kbInfo(t, srv, alice, kbVersionPath(), v3v, "key3", 0)
	put(t, srv, kbKeysPath(v1, kbRoom, "s1"), tok, kbKey(true, 0, 0, "x")).expect(t, http.StatusNotFound, "M_NOT_FOUND")
}

func TestRoomKeysBadRequests(t *testing.T) {
	srv := testserver.Start(t)
	alice := registerUser(t, srv, "alice", kbPassword)
	tok := alice.AccessToken
	v := kbCreate(t, srv, alice, "key1")

	// The version query parameter is required.
	for _, p := range []string{"/room_keys/keys", "/room_keys/keys/" + url.PathEscape(kbRoom), "/room_keys/keys/" + url.PathEscape(kbRoom) + "/s1"} {
		put(t, srv, v3+p, tok, kbKey(true, 0, 0, "x")).expect(t, http.StatusBadRequest, "M_MISSING_PARAM")
		get(t, srv, v3+p, tok).expect(t, http.StatusBadRequest, "M_MISSING_PARAM")
		del(t, srv, v3+p, tok, nil).expect(t, http.StatusBadRequest, "M_MISSING_PARAM")
	}

	good := kbKey(true, 0, 0, "x")
	with := func(key string, value any) map[string]any {
		k := map[string]any{}
		for kk, vv := range good {
			k[kk] = vv
		}
		if value == nil {
			delete(k, key)
		} else {
			k[key] = value
		}
		return k
	}
	session := func(k any) map[string]any { return map[string]any{"sessions": map[string]any{"s1": k}} }
	all := func(room any) map[string]any { return map[string]any{"rooms": map[string]any{kbRoom: room}} }

	// Each bad KeyBackupData, at each level.
	keyCases := []struct {
		name    string
		key     any
		errcode string
	}{
		{"missing first_message_index", with("first_message_index", nil), "M_MISSING_PARAM"},
		{"missing forwarded_count", with("forwarded_count", nil), "M_MISSING_PARAM"},
		{"missing is_verified", with("is_verified", nil), "M_MISSING_PARAM"},
		{"missing session_data", with("session_data", nil), "M_MISSING_PARAM"},
		{"first_message_index a string", with("first_message_index", "1"), "M_BAD_JSON"},
		{"first_message_index negative", with("first_message_index", -1), "M_BAD_JSON"},
		{"first_message_index fractional", with("first_message_index", 1.5), "M_BAD_JSON"},
		{"forwarded_count too large", with("forwarded_count", float64(1<<60)), "M_BAD_JSON"},
		{"is_verified a string", with("is_verified", "true"), "M_BAD_JSON"},
		{"session_data a string", with("session_data", "abc"), "M_BAD_JSON"},
		{"session_data an array", with("session_data", []any{}), "M_BAD_JSON"},
		{"key not an object", 7, "M_BAD_JSON"},
	}
	for _, tc := range keyCases {
		t.Run("session/"+tc.name, func(t *testing.T) {
			put(t, srv, kbKeysPath(v, kbRoom, "s1"), tok, tc.key).expect(t, http.StatusBadRequest, tc.errcode)
		})
		t.Run("room/"+tc.name, func(t *testing.T) {
			put(t, srv, kbKeysPath(v, kbRoom), tok, session(tc.key)).expect(t, http.StatusBadRequest, tc.errcode)
		})
		t.Run("all/"+tc.name, func(t *testing.T) {
			put(t, srv, kbKeysPath(v), tok, all(session(tc.key))).expect(t, http.StatusBadRequest, tc.errcode)
		})
	}

	bodyCases := []struct {
		name    string
		path    string
		body    any
		status  int
		errcode string
	}{
		{"not JSON", kbKeysPath(v), `{"rooms":`, 400, "M_NOT_JSON"},
		{"empty body", kbKeysPath(v, kbRoom, "s1"), "", 400, "M_NOT_JSON"},
		{"array", kbKeysPath(v, kbRoom), `[]`, 400, "M_BAD_JSON"},
		{"missing rooms", kbKeysPath(v), map[string]any{}, 400, "M_MISSING_PARAM"},
		{"rooms not an object", kbKeysPath(v), map[string]any{"rooms": []any{}}, 400, "M_BAD_JSON"},
		{"room not an object", kbKeysPath(v), map[string]any{"rooms": map[string]any{kbRoom: 1}}, 400, "M_BAD_JSON"},
		{"bad room ID in body", kbKeysPath(v), map[string]any{"rooms": map[string]any{"room": session(good)}}, 400, "M_BAD_JSON"},
		{"missing sessions", kbKeysPath(v), all(map[string]any{}), 400, "M_MISSING_PARAM"},
		{"missing sessions in room", kbKeysPath(v, kbRoom), map[string]any{}, 400, "M_MISSING_PARAM"},
		{"sessions not an object", kbKeysPath(v, kbRoom), map[string]any{"sessions": "x"}, 400, "M_BAD_JSON"},
		{"bad room ID in path", kbKeysPath(v, "room"), session(good), 400, "M_INVALID_PARAM"},
		{"bad room ID in session path", kbKeysPath(v, "room", "s1"), good, 400, "M_INVALID_PARAM"},
	}
	for _, tc := range bodyCases {
		t.Run(tc.name, func(t *testing.T) {
			put(t, srv, tc.path, tok, tc.body).expect(t, tc.status, tc.errcode)
		})
	}

	// A batch with one bad session stores none of it.
	put(t, srv, kbKeysPath(v), tok, map[string]any{"rooms": map[string]any{
		kbRoom:  session(good),
		kbRoom2: session(with("is_verified", nil)),
	}}).expect(t, http.StatusBadRequest, "M_MISSING_PARAM")
	kbInfo(t, srv, alice, kbVersionPath(v), v, "key1", 0)
}

func TestKeyBackupPerUser(t *testing.T) {
	srv := testserver.Start(t)
	alice := registerUser(t, srv, "alice", kbPassword)
	bob := registerUser(t, srv, "bob", kbPassword)
	v := kbCreate(t, srv, alice, "alicekey")
	kbUpdate(t, put(t, srv, kbKeysPath(v, kbRoom, "s1"), alice.AccessToken, kbKey(true, 0, 0, "alice")), 1)

	// Bob sees none of Alice's backup and cannot change it.
	b := bob.AccessToken
	get(t, srv, kbVersionPath(), b).expect(t, http.StatusNotFound, "M_NOT_FOUND")
	get(t, srv, kbVersionPath(v), b).expect(t, http.StatusNotFound, "M_NOT_FOUND")
	put(t, srv, kbVersionPath(v), b, map[string]any{"algorithm": kbAlgorithm, "auth_data": kbAuthData("bob")}).
		expect(t, http.StatusNotFound, "M_NOT_FOUND")
	get(t, srv, kbKeysPath(v), b).expect(t, http.StatusNotFound, "M_NOT_FOUND")
	get(t, srv, kbKeysPath(v, kbRoom, "s1"), b).expect(t, http.StatusNotFound, "M_NOT_FOUND")
	put(t, srv, kbKeysPath(v, kbRoom, "s1"), b, kbKey(true, 0, 0, "bob")).expect(t, http.StatusNotFound, "M_NOT_FOUND")
	del(t, srv, kbKeysPath(v), b, nil).expect(t, http.StatusNotFound, "M_NOT_FOUND")
	del(t, srv, kbVersionPath(v), b, nil).expect(t, http.StatusNotFound, "M_NOT_FOUND")

	// Bob's own backup has its own numbering and its own keys.
	if bv := kbCreate(t, srv, bob, "bobkey"); bv != "1" {
		t.Fatalf("bob's first version = %q, want \"1\"", bv)
	}
	kbUpdate(t, put(t, srv, kbKeysPath("1", kbRoom, "s1"), b, kbKey(false, 9, 9, "bob")), 1)
	kbUpdate(t, del(t, srv, kbKeysPath("1", kbRoom), b, nil), 0)
	del(t, srv, kbVersionPath("1"), b, nil).expect(t, http.StatusOK, "")

	// Alice's backup is untouched.
	kbInfo(t, srv, alice, kbVersionPath(), v, "alicekey", 1)
	r := get(t, srv, kbKeysPath(v, kbRoom, "s1"), alice.AccessToken).expect(t, http.StatusOK, "")
	if kbTag(t, r.Body) != "alice" {
		t.Fatalf("alice's key = %s", r.Raw)
	}
}
