package clientapi_test

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/url"
	"testing"

	"maunium.net/go/mautrix"

	"github.com/tessera-hs/tessera/internal/testserver"
)

// https://spec.matrix.org/v1.19/client-server-api/#filtering

func filterPath(userID string, filterID ...string) string {
	p := v3 + "/user/" + url.PathEscape(userID) + "/filter"
	if len(filterID) > 0 {
		p += "/" + url.PathEscape(filterID[0])
	}
	return p
}

func TestFilterRoundTrip(t *testing.T) {
	t.Parallel()
	srv := testserver.Start(t)
	alice := registerUser(t, srv, "alice", "password1")

	// The filter comes back as uploaded, including fields this server does
	// not know.
	const filter = `{"event_fields":["type","content.body"],"event_format":"client",` +
		`"presence":{"not_types":["*"]},"room":{"timeline":{"limit":10,"lazy_load_members":true,` +
		`"types":["m.room.message"]},"state":{"lazy_load_members":true},"include_leave":false},` +
		`"org.example.future":{"x":1}}`
	r := post(t, srv, filterPath(alice.UserID), alice.AccessToken, filter).expect(t, http.StatusOK, "")
	id1 := r.str("filter_id")
	if id1 == "" {
		t.Fatalf("no filter_id: %s", r.Raw)
	}
	g := get(t, srv, filterPath(alice.UserID, id1), alice.AccessToken).expect(t, http.StatusOK, "")
	var want, got bytes.Buffer
	_ = json.Compact(&want, []byte(filter))
	_ = json.Compact(&got, g.Raw)
	if got.String() != want.String() {
		t.Fatalf("filter = %s\nwant     %s", got.String(), want.String())
	}

	// A second filter gets another ID; the first is unchanged.
	r = post(t, srv, filterPath(alice.UserID), alice.AccessToken, map[string]any{}).expect(t, http.StatusOK, "")
	if id2 := r.str("filter_id"); id2 == "" || id2 == id1 {
		t.Fatalf("second filter_id = %q (first %q)", id2, id1)
	}

	// With mautrix.
	c := client(srv, alice)
	limit := 5
	res, err := c.CreateFilter(ctx, &mautrix.Filter{Room: &mautrix.RoomFilter{Timeline: &mautrix.FilterPart{Limit: limit}}})
	must(t, err, "create filter")
	var back mautrix.Filter
	_, err = c.MakeRequest(ctx, http.MethodGet, c.BuildClientURL("v3", "user", alice.UserID, "filter", res.FilterID), nil, &back)
	must(t, err, "get filter")
	if back.Room == nil || back.Room.Timeline == nil || back.Room.Timeline.Limit != limit {
		t.Fatalf("filter back = %+v", back)
	}
}

func TestFilterErrors(t *testing.T) {
	t.Parallel()
	srv := testserver.Start(t)
	alice := registerUser(t, srv, "alice", "password1")
	bob := registerUser(t, srv, "bob", "password1")
	fid := post(t, srv, filterPath(bob.UserID), bob.AccessToken, map[string]any{}).expect(t, http.StatusOK, "").str("filter_id")

	// Another user's filter: neither readable nor creatable.
	get(t, srv, filterPath(bob.UserID, fid), alice.AccessToken).expect(t, http.StatusForbidden, "M_FORBIDDEN")
	post(t, srv, filterPath(bob.UserID), alice.AccessToken, map[string]any{}).expect(t, http.StatusForbidden, "M_FORBIDDEN")
	// Alice has no filter with Bob's ID, nor with one that was never issued.
	get(t, srv, filterPath(alice.UserID, fid), alice.AccessToken).expect(t, http.StatusNotFound, "M_NOT_FOUND")
	get(t, srv, filterPath(alice.UserID, "12345"), alice.AccessToken).expect(t, http.StatusNotFound, "M_NOT_FOUND")
	get(t, srv, filterPath(alice.UserID, "not-a-number"), alice.AccessToken).expect(t, http.StatusNotFound, "M_NOT_FOUND")
	get(t, srv, filterPath(bob.UserID, fid), "").expect(t, http.StatusUnauthorized, "M_MISSING_TOKEN")

	bad := []struct {
		name    string
		body    any
		errcode string
	}{
		{"limit not a number", `{"room":{"timeline":{"limit":"x"}}}`, "M_BAD_JSON"},
		{"limit negative", `{"room":{"timeline":{"limit":-1}}}`, "M_BAD_JSON"},
		{"presence limit negative", `{"presence":{"limit":-1}}`, "M_BAD_JSON"},
		{"event_format xml", `{"event_format":"xml"}`, "M_BAD_JSON"},
		{"types not a list", `{"account_data":{"types":"m.direct"}}`, "M_BAD_JSON"},
		{"rooms not a list", `{"room":{"rooms":"!a:b"}}`, "M_BAD_JSON"},
		{"array", `[]`, "M_BAD_JSON"},
		{"not JSON", `{"room":`, "M_NOT_JSON"},
		{"empty body", ``, "M_NOT_JSON"},
	}
	for _, tc := range bad {
		t.Run(tc.name, func(t *testing.T) {
			post(t, srv, filterPath(alice.UserID), alice.AccessToken, tc.body).expect(t, http.StatusBadRequest, tc.errcode)
		})
	}
}
