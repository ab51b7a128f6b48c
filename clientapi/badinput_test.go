package clientapi_test

import (
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/tessera-hs/tessera/internal/config"
	"github.com/tessera-hs/tessera/internal/testserver"
)

// onlyReader hides a reader's concrete type, so net/http cannot learn the
// length and sends the body chunked, with no Content-Length.
type onlyReader struct{ io.Reader }

// TestBadInput covers the answers to malformed or misdirected requests,
// and that every answer carries the CORS headers browsers need.
// https://spec.matrix.org/v1.19/client-server-api/#api-standards
// https://spec.matrix.org/v1.19/client-server-api/#web-browser-clients
func TestBadInput(t *testing.T) {
	t.Parallel()
	const maxBody = 2048
	srv := testserver.Start(t, func(c *config.Config) { c.HTTP.MaxRequestBodyBytes = maxBody })
	alice := registerUser(t, srv, "alice", "password1")
	big := `{"type":"m.login.password","password":"` + strings.Repeat("p", maxBody) + `"}`

	cases := []struct {
		name    string
		req     req
		status  int
		errcode string
	}{
		{"malformed JSON", req{Method: "POST", Path: v3 + "/login", Body: `{"type": "m.login.password",`},
			http.StatusBadRequest, "M_NOT_JSON"},
		{"not JSON at all", req{Method: "POST", Path: v3 + "/login", Body: `type=m.login.password`},
			http.StatusBadRequest, "M_NOT_JSON"},
		{"empty body", req{Method: "POST", Path: v3 + "/login", Body: ``},
			http.StatusBadRequest, "M_NOT_JSON"},
		{"JSON array", req{Method: "POST", Path: v3 + "/login", Body: `[{"type":"m.login.password"}]`},
			http.StatusBadRequest, "M_BAD_JSON"},
		{"JSON string", req{Method: "POST", Path: v3 + "/login", Body: `"m.login.password"`},
			http.StatusBadRequest, "M_BAD_JSON"},
		{"wrong field type", req{Method: "POST", Path: v3 + "/login", Body: `{"type": 5}`},
			http.StatusBadRequest, "M_BAD_JSON"},
		{"wrong nested field type", req{Method: "POST", Path: v3 + "/login",
			Body: `{"type":"m.login.password","identifier":{"type":"m.id.user","user":7}}`},
			http.StatusBadRequest, "M_BAD_JSON"},
		{"wrong field type in register", req{Method: "POST", Path: v3 + "/register", Body: `{"username": ["a"]}`},
			http.StatusBadRequest, "M_BAD_JSON"},
		{"wrong field type in UIA auth", req{Method: "POST", Path: v3 + "/account/password", Token: alice.AccessToken,
			Body: `{"new_password":"password2","auth":"m.login.password"}`}, http.StatusBadRequest, "M_BAD_JSON"},
		{"body over the limit", req{Method: "POST", Path: v3 + "/login", Body: big},
			http.StatusRequestEntityTooLarge, "M_TOO_LARGE"},
		{"chunked body over the limit", req{Method: "POST", Path: v3 + "/login",
			Body: onlyReader{strings.NewReader(big)}}, http.StatusRequestEntityTooLarge, "M_TOO_LARGE"},
		{"authed body over the limit", req{Method: "PUT", Path: profilePath(alice.UserID, "displayname"),
			Token: alice.AccessToken, Body: onlyReader{strings.NewReader(`{"displayname":"` + strings.Repeat("n", maxBody) + `"}`)}},
			http.StatusRequestEntityTooLarge, "M_TOO_LARGE"},
		{"unknown endpoint", req{Method: "GET", Path: v3 + "/no/such/endpoint"},
			http.StatusNotFound, "M_UNRECOGNIZED"},
		{"unknown API version", req{Method: "GET", Path: "/_matrix/client/v9/login"},
			http.StatusNotFound, "M_UNRECOGNIZED"},
		// "/" is the web client (web/), on by default; a path beside the
		// APIs that nothing serves is still the Matrix 404.
		{"unknown top-level path", req{Method: "GET", Path: "/_nothing/here"}, http.StatusNotFound, "M_UNRECOGNIZED"},
		{"wrong method", req{Method: "PUT", Path: v3 + "/login", Body: `{}`},
			http.StatusMethodNotAllowed, "M_UNRECOGNIZED"},
		{"wrong method, authed endpoint", req{Method: "DELETE", Path: v3 + "/account/whoami"},
			http.StatusMethodNotAllowed, "M_UNRECOGNIZED"},
		{"no token", req{Method: "GET", Path: v3 + "/account/whoami"},
			http.StatusUnauthorized, "M_MISSING_TOKEN"},
		{"not a bearer token", req{Method: "GET", Path: v3 + "/account/whoami",
			Headers: map[string]string{"Authorization": "Basic YWxpY2U6cGFzc3dvcmQx"}},
			http.StatusUnauthorized, "M_MISSING_TOKEN"},
		{"bearer without a token", req{Method: "GET", Path: v3 + "/account/whoami",
			Headers: map[string]string{"Authorization": "Bearer "}}, http.StatusUnauthorized, "M_MISSING_TOKEN"},
		{"unknown bearer token", req{Method: "GET", Path: v3 + "/account/whoami", Token: "tsa_bogus"},
			http.StatusUnauthorized, "M_UNKNOWN_TOKEN"},
		{"unknown token in the query", req{Method: "GET", Path: v3 + "/account/whoami?access_token=tsa_bogus"},
			http.StatusUnauthorized, "M_UNKNOWN_TOKEN"},
		{"lowercase bearer scheme", req{Method: "GET", Path: v3 + "/account/whoami",
			Headers: map[string]string{"Authorization": "bearer " + alice.AccessToken}}, http.StatusOK, ""},
		{"preflight of a known endpoint", req{Method: "OPTIONS", Path: v3 + "/login",
			Headers: map[string]string{"Origin": "https://app.example.org", "Access-Control-Request-Method": "POST"}},
			http.StatusOK, ""},
		{"preflight of an authed endpoint", req{Method: "OPTIONS", Path: v3 + "/account/whoami",
			Headers: map[string]string{"Origin": "https://app.example.org", "Access-Control-Request-Method": "GET",
				"Access-Control-Request-Headers": "authorization"}}, http.StatusOK, ""},
		{"preflight of any path", req{Method: "OPTIONS", Path: "/_matrix/client/v3/rooms/!r:x/send/m.room.message/1"},
			http.StatusOK, ""},
		{"a normal success", req{Method: "GET", Path: v3 + "/login"}, http.StatusOK, ""},
		{"the r0 prefix older clients use", req{Method: "GET", Path: "/_matrix/client/r0/login"}, http.StatusOK, ""},
		{"an error under r0", req{Method: "GET", Path: "/_matrix/client/r0/account/whoami"},
			http.StatusUnauthorized, "M_MISSING_TOKEN"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := do(t, srv, tc.req).expect(t, tc.status, tc.errcode)
			if got := r.Header.Get("Access-Control-Allow-Origin"); got != "*" {
				t.Errorf("Access-Control-Allow-Origin = %q, want *", got)
			}
			if ct := r.Header.Get("Content-Type"); ct != "application/json" {
				t.Errorf("Content-Type = %q, want application/json", ct)
			}
			if tc.req.Method == http.MethodOptions {
				methods := r.Header.Get("Access-Control-Allow-Methods")
				for _, m := range []string{"GET", "POST", "PUT", "DELETE", "OPTIONS"} {
					if !strings.Contains(methods, m) {
						t.Errorf("Access-Control-Allow-Methods = %q, lacks %s", methods, m)
					}
				}
				headers := strings.ToLower(r.Header.Get("Access-Control-Allow-Headers"))
				for _, h := range []string{"authorization", "content-type", "x-requested-with"} {
					if !strings.Contains(headers, h) {
						t.Errorf("Access-Control-Allow-Headers = %q, lacks %s", headers, h)
					}
				}
			}
		})
	}
	// Nothing above logged Alice out or changed her password.
	tokenWorks(t, srv, alice.AccessToken, alice.UserID)
	login(t, srv, "alice", "password1", nil)
}
