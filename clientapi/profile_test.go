package clientapi_test

import (
	"encoding/json"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"maunium.net/go/mautrix/id"

	"github.com/tessera-hs/tessera/internal/testserver"
)

// https://spec.matrix.org/v1.19/client-server-api/#profiles

func profilePath(userID string, key ...string) string {
	p := v3 + "/profile/" + url.PathEscape(userID)
	for _, k := range key {
		p += "/" + url.PathEscape(k)
	}
	return p
}

func TestProfileDefaults(t *testing.T) {
	t.Parallel()
	srv := testserver.Start(t)
	alice := registerUser(t, srv, "alice", "password1")

	// Profiles are public: no token needed. The display name defaults to
	// the localpart; there is no avatar until one is set.
	r := get(t, srv, profilePath(alice.UserID), "").expect(t, http.StatusOK, "")
	if r.str("displayname") != "alice" {
		t.Fatalf("default displayname = %q, want alice", r.str("displayname"))
	}
	if _, ok := r.Body["avatar_url"]; ok {
		t.Fatalf("avatar_url present before being set: %s", r.Raw)
	}
	r = get(t, srv, profilePath(alice.UserID, "displayname"), "").expect(t, http.StatusOK, "")
	if len(r.Body) != 1 || r.str("displayname") != "alice" {
		t.Fatalf("GET displayname = %s", r.Raw)
	}
	get(t, srv, profilePath(alice.UserID, "avatar_url"), "").expect(t, http.StatusNotFound, "M_NOT_FOUND")

	// Unknown users, remote users and malformed IDs.
	get(t, srv, profilePath("@nobody:tessera.test"), "").expect(t, http.StatusNotFound, "M_NOT_FOUND")
	get(t, srv, profilePath("@nobody:tessera.test", "displayname"), "").expect(t, http.StatusNotFound, "M_NOT_FOUND")
	get(t, srv, profilePath("@alice:elsewhere.test"), "").expect(t, http.StatusNotFound, "M_NOT_FOUND")
	get(t, srv, profilePath("alice"), "").expect(t, http.StatusBadRequest, "M_INVALID_PARAM")

	// mautrix reads it the same way.
	p, err := srv.Client("", "").GetProfile(ctx, id.UserID(alice.UserID))
	must(t, err, "get profile")
	if p.DisplayName != "alice" || !p.AvatarURL.IsEmpty() {
		t.Fatalf("profile = %+v", p)
	}
	_, err = srv.Client("", "").GetProfile(ctx, "@nobody:tessera.test")
	wantErr(t, err, http.StatusNotFound, "M_NOT_FOUND")
}

func TestProfileSetAndDelete(t *testing.T) {
	t.Parallel()
	srv := testserver.Start(t)
	alice := registerUser(t, srv, "alice", "password1")
	c := client(srv, alice)

	must(t, c.SetDisplayName(ctx, "Alice Liddell"), "set displayname")
	avatar := id.ContentURI{Homeserver: "tessera.test", FileID: "abcdef"}
	must(t, c.SetAvatarURL(ctx, avatar), "set avatar")
	custom := map[string]any{"title": "Queen", "since": float64(1865)}
	must(t, c.SetProfileField(ctx, "com.example.field", custom), "set custom field")
	put(t, srv, profilePath(alice.UserID, "m.tz"), alice.AccessToken, map[string]any{"m.tz": "Europe/London"}).
		expect(t, http.StatusOK, "")

	name, err := c.GetDisplayName(ctx, id.UserID(alice.UserID))
	must(t, err, "get displayname")
	if name.DisplayName != "Alice Liddell" {
		t.Fatalf("displayname = %q", name.DisplayName)
	}
	got, err := c.GetAvatarURL(ctx, id.UserID(alice.UserID))
	must(t, err, "get avatar")
	if got != avatar {
		t.Fatalf("avatar_url = %v, want %v", got, avatar)
	}
	// The response is an object with just the one key.
	var field map[string]any
	must(t, c.GetProfileField(ctx, id.UserID(alice.UserID), "com.example.field", &field), "get custom field")
	if b, _ := json.Marshal(field); string(b) != `{"com.example.field":{"since":1865,"title":"Queen"}}` {
		t.Fatalf("GET com.example.field = %s", b)
	}

	r := get(t, srv, profilePath(alice.UserID), "").expect(t, http.StatusOK, "")
	want := map[string]any{
		"displayname": "Alice Liddell", "avatar_url": "mxc://tessera.test/abcdef",
		"com.example.field": custom, "m.tz": "Europe/London",
	}
	wantJSON, _ := json.Marshal(want)
	gotJSON, _ := json.Marshal(r.Body)
	if string(gotJSON) != string(wantJSON) {
		t.Fatalf("profile = %s, want %s", gotJSON, wantJSON)
	}

	// Overwrite, then delete.
	put(t, srv, profilePath(alice.UserID, "com.example.field"), alice.AccessToken,
		map[string]any{"com.example.field": "plain"}).expect(t, http.StatusOK, "")
	r = get(t, srv, profilePath(alice.UserID, "com.example.field"), "").expect(t, http.StatusOK, "")
	if r.str("com.example.field") != "plain" {
		t.Fatalf("after overwrite: %s", r.Raw)
	}
	must(t, c.DeleteProfileField(ctx, "com.example.field"), "delete custom field")
	get(t, srv, profilePath(alice.UserID, "com.example.field"), "").expect(t, http.StatusNotFound, "M_NOT_FOUND")
	del(t, srv, profilePath(alice.UserID, "displayname"), alice.AccessToken, nil).expect(t, http.StatusOK, "")
	r = get(t, srv, profilePath(alice.UserID), "").expect(t, http.StatusOK, "")
	if _, ok := r.Body["displayname"]; ok {
		t.Fatalf("displayname still there after DELETE: %s", r.Raw)
	}
	if _, ok := r.Body["com.example.field"]; ok {
		t.Fatalf("custom field still there after DELETE: %s", r.Raw)
	}
	// Deleting what is not there is fine.
	del(t, srv, profilePath(alice.UserID, "org.example.absent"), alice.AccessToken, nil).expect(t, http.StatusOK, "")

	// Clearing the avatar with an empty string is allowed.
	put(t, srv, profilePath(alice.UserID, "avatar_url"), alice.AccessToken, map[string]any{"avatar_url": ""}).
		expect(t, http.StatusOK, "")
}

func TestProfileErrors(t *testing.T) {
	t.Parallel()
	srv := testserver.Start(t)
	alice := registerUser(t, srv, "alice", "password1")
	bob := registerUser(t, srv, "bob", "password1")
	tok := alice.AccessToken
	me := alice.UserID

	cases := []struct {
		name, user, key, token string
		body                   any
		status                 int
		errcode                string
	}{
		{"another user's profile", bob.UserID, "displayname", tok, map[string]any{"displayname": "Mallory"},
			http.StatusForbidden, "M_FORBIDDEN"},
		{"a remote user's profile", "@bob:elsewhere.test", "displayname", tok, map[string]any{"displayname": "M"},
			http.StatusForbidden, "M_FORBIDDEN"},
		{"no token", me, "displayname", "", map[string]any{"displayname": "x"},
			http.StatusUnauthorized, "M_MISSING_TOKEN"},
		{"invalid key: no namespace", me, "nodots", tok, map[string]any{"nodots": "x"},
			http.StatusBadRequest, "M_INVALID_PARAM"},
		{"invalid key: uppercase", me, "com.Example.field", tok, map[string]any{"com.Example.field": "x"},
			http.StatusBadRequest, "M_INVALID_PARAM"},
		{"invalid key, body without it", me, "nodots", tok, map[string]any{},
			http.StatusBadRequest, "M_INVALID_PARAM"},
		{"key too long", me, "com.example." + strings.Repeat("k", 250), tok,
			map[string]any{"com.example." + strings.Repeat("k", 250): "x"}, http.StatusBadRequest, "M_KEY_TOO_LARGE"},
		{"body without the key", me, "displayname", tok, map[string]any{"avatar_url": "mxc://a/b"},
			http.StatusBadRequest, "M_MISSING_PARAM"},
		{"empty body object", me, "displayname", tok, map[string]any{},
			http.StatusBadRequest, "M_MISSING_PARAM"},
		{"not JSON", me, "displayname", tok, "{displayname:", http.StatusBadRequest, "M_NOT_JSON"},
		{"displayname not a string", me, "displayname", tok, map[string]any{"displayname": 42},
			http.StatusBadRequest, "M_BAD_JSON"},
		{"displayname too long", me, "displayname", tok, map[string]any{"displayname": strings.Repeat("n", 257)},
			http.StatusBadRequest, "M_INVALID_PARAM"},
		// The spec: "For avatar_url, the value MUST be an MXC URI string";
		// a value the key does not allow is M_BAD_JSON ("invalid values for
		// keys" in the spec's list of common error codes).
		{"avatar_url not mxc", me, "avatar_url", tok, map[string]any{"avatar_url": "https://example.org/a.png"},
			http.StatusBadRequest, "M_BAD_JSON"},
		{"avatar_url not a string", me, "avatar_url", tok, map[string]any{"avatar_url": []string{"mxc://a/b"}},
			http.StatusBadRequest, "M_BAD_JSON"},
		{"m.tz not a string", me, "m.tz", tok, map[string]any{"m.tz": 1}, http.StatusBadRequest, "M_BAD_JSON"},
		{"profile over 64 KiB", me, "com.example.big", tok,
			map[string]any{"com.example.big": strings.Repeat("b", 65*1024)}, http.StatusBadRequest, "M_PROFILE_TOO_LARGE"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			put(t, srv, profilePath(tc.user, tc.key), tc.token, tc.body).expect(t, tc.status, tc.errcode)
		})
	}

	del(t, srv, profilePath(bob.UserID, "displayname"), tok, nil).expect(t, http.StatusForbidden, "M_FORBIDDEN")
	del(t, srv, profilePath(me, "nodots"), tok, nil).expect(t, http.StatusBadRequest, "M_INVALID_PARAM")
	del(t, srv, profilePath(me, "displayname"), "", nil).expect(t, http.StatusUnauthorized, "M_MISSING_TOKEN")

	// None of the refused writes landed.
	r := get(t, srv, profilePath(bob.UserID), "").expect(t, http.StatusOK, "")
	if r.str("displayname") != "bob" {
		t.Fatalf("bob's profile = %s", r.Raw)
	}
	r = get(t, srv, profilePath(me), "").expect(t, http.StatusOK, "")
	if len(r.Body) != 1 || r.str("displayname") != "alice" {
		t.Fatalf("alice's profile = %s", r.Raw)
	}
}

// User IDs in paths may be percent-encoded, and a '/' in a localpart must be
// (as %2F) without splitting the path.
func TestProfileEncodedUserIDs(t *testing.T) {
	t.Parallel()
	srv := testserver.Start(t)
	slash := registerUser(t, srv, "with/slash", "password1")
	if slash.UserID != "@with/slash:tessera.test" {
		t.Fatalf("user_id = %q", slash.UserID)
	}
	put(t, srv, v3+"/profile/%40with%2Fslash%3Atessera.test/displayname", slash.AccessToken,
		map[string]any{"displayname": "Slashy"}).expect(t, http.StatusOK, "")
	for _, p := range []string{
		v3 + "/profile/%40with%2Fslash%3Atessera.test",
		v3 + "/profile/@with%2Fslash:tessera.test",
	} {
		r := get(t, srv, p, "").expect(t, http.StatusOK, "")
		if r.str("displayname") != "Slashy" {
			t.Fatalf("GET %s = %s", p, r.Raw)
		}
	}
	r := get(t, srv, v3+"/profile/%40with%2Fslash%3Atessera.test/displayname", "").expect(t, http.StatusOK, "")
	if r.str("displayname") != "Slashy" {
		t.Fatalf("GET displayname = %s", r.Raw)
	}
	// Unencoded, the slash splits the path into user "@with" (malformed)
	// and key "slash:tessera.test".
	get(t, srv, v3+"/profile/@with/slash:tessera.test", "").expect(t, http.StatusBadRequest, "M_INVALID_PARAM")

	// Filter paths take encoded user IDs too.
	fid := post(t, srv, v3+"/user/%40with%2Fslash%3Atessera.test/filter", slash.AccessToken, map[string]any{}).
		expect(t, http.StatusOK, "").str("filter_id")
	get(t, srv, v3+"/user/%40with%2Fslash%3Atessera.test/filter/"+fid, slash.AccessToken).expect(t, http.StatusOK, "")
}
