package clientapi_test

// Helpers shared by the account API tests: a raw HTTP client that returns
// status, body and headers (mautrix hides the status of successful calls and
// cannot send malformed requests), assertions on Matrix errors, and the
// user-interactive-auth dances the account endpoints need.

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/id"

	"github.com/tessera-hs/tessera/internal/config"
	"github.com/tessera-hs/tessera/internal/testserver"
)

var ctx = context.Background()

// Paths below the v3 client prefix.
const v3 = "/_matrix/client/v3"

// resp is a raw HTTP response with its body decoded as a JSON object (nil if
// it is not one).
type resp struct {
	Status int
	Body   map[string]any
	Raw    []byte
	Header http.Header
}

// req describes a raw request. Body is sent as is when it is a string or a
// []byte, as JSON otherwise; nil sends no body.
type req struct {
	Method  string
	Path    string // path and query, below srv.URL
	Token   string // sent as "Authorization: Bearer <Token>" when not empty
	Body    any
	Headers map[string]string
}

var httpClient = &http.Client{Timeout: 30 * time.Second}

// do sends r to srv and returns the response.
func do(t testing.TB, srv *testserver.Server, r req) resp {
	t.Helper()
	out, err := tryDo(srv, r)
	if err != nil {
		t.Fatalf("%s %s: %v", r.Method, r.Path, err)
	}
	return out
}

// tryDo is do for goroutines other than the test's: it returns the error.
func tryDo(srv *testserver.Server, r req) (resp, error) {
	var body io.Reader
	switch b := r.Body.(type) {
	case nil:
	case string:
		body = strings.NewReader(b)
	case []byte:
		body = bytes.NewReader(b)
	case io.Reader:
		body = b
	default:
		buf, err := json.Marshal(b)
		if err != nil {
			return resp{}, fmt.Errorf("marshal request body: %w", err)
		}
		body = bytes.NewReader(buf)
	}
	hr, err := http.NewRequestWithContext(ctx, r.Method, srv.URL+r.Path, body)
	if err != nil {
		return resp{}, err
	}
	if r.Body != nil {
		hr.Header.Set("Content-Type", "application/json")
	}
	if r.Token != "" {
		hr.Header.Set("Authorization", "Bearer "+r.Token)
	}
	for k, v := range r.Headers {
		hr.Header.Set(k, v)
	}
	res, err := httpClient.Do(hr)
	if err != nil {
		return resp{}, err
	}
	defer res.Body.Close()
	raw, err := io.ReadAll(res.Body)
	if err != nil {
		return resp{}, fmt.Errorf("read body: %w", err)
	}
	out := resp{Status: res.StatusCode, Raw: raw, Header: res.Header}
	_ = json.Unmarshal(raw, &out.Body)
	return out, nil
}

func get(t testing.TB, srv *testserver.Server, path, token string) resp {
	t.Helper()
	return do(t, srv, req{Method: http.MethodGet, Path: path, Token: token})
}

func post(t testing.TB, srv *testserver.Server, path, token string, body any) resp {
	t.Helper()
	return do(t, srv, req{Method: http.MethodPost, Path: path, Token: token, Body: body})
}

func put(t testing.TB, srv *testserver.Server, path, token string, body any) resp {
	t.Helper()
	return do(t, srv, req{Method: http.MethodPut, Path: path, Token: token, Body: body})
}

func del(t testing.TB, srv *testserver.Server, path, token string, body any) resp {
	t.Helper()
	return do(t, srv, req{Method: http.MethodDelete, Path: path, Token: token, Body: body})
}

// expect checks the status and the errcode of r. An empty errcode means
// the body must have none (a success, or a UIA challenge before any stage
// failed). Every error body must also carry a human-readable "error".
func (r resp) expect(t testing.TB, status int, errcode string) resp {
	t.Helper()
	if r.Status != status {
		t.Fatalf("status = %d, want %d; body: %s", r.Status, status, r.Raw)
	}
	got, _ := r.Body["errcode"].(string)
	if got != errcode {
		t.Fatalf("errcode = %q, want %q; body: %s", got, errcode, r.Raw)
	}
	if errcode != "" {
		if msg, _ := r.Body["error"].(string); msg == "" {
			t.Fatalf("error response without an \"error\" message: %s", r.Raw)
		}
	}
	if r.Body == nil {
		t.Fatalf("response is not a JSON object: %q", r.Raw)
	}
	return r
}

// str returns a top-level string field of the body.
func (r resp) str(key string) string {
	s, _ := r.Body[key].(string)
	return s
}

// boolean returns a top-level boolean field and whether it is present.
func (r resp) boolean(key string) (bool, bool) {
	b, ok := r.Body[key].(bool)
	return b, ok
}

// wantErr checks that err is a Matrix error from the server with the given
// HTTP status and errcode ("" for a UIA challenge, which has none).
func wantErr(t testing.TB, err error, status int, errcode string) *mautrix.RespError {
	t.Helper()
	if err == nil {
		t.Fatalf("got success, want %d %s", status, errcode)
	}
	var he mautrix.HTTPError
	if !errors.As(err, &he) || he.Response == nil {
		t.Fatalf("error is not an HTTP error from the server: %v", err)
	}
	if he.Response.StatusCode != status {
		t.Fatalf("status = %d, want %d (%v)", he.Response.StatusCode, status, err)
	}
	var re mautrix.RespError
	if !errors.As(err, &re) {
		if errcode == "" {
			// A UIA challenge: a 401 without errcode, which mautrix
			// reports without a RespError.
			return nil
		}
		t.Fatalf("error has no Matrix error body: %v", err)
	}
	if re.ErrCode != errcode {
		t.Fatalf("errcode = %q, want %q (%v)", re.ErrCode, errcode, err)
	}
	return &re
}

// must fails the test on err.
func must(t testing.TB, err error, what string) {
	t.Helper()
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
}

// session is a logged-in device as the raw client sees it.
type session struct {
	UserID       string
	DeviceID     string
	AccessToken  string
	RefreshToken string
}

func sessionOf(t testing.TB, r resp) session {
	t.Helper()
	s := session{UserID: r.str("user_id"), DeviceID: r.str("device_id"), AccessToken: r.str("access_token"),
		RefreshToken: r.str("refresh_token")}
	if s.UserID == "" || s.DeviceID == "" || s.AccessToken == "" {
		t.Fatalf("incomplete session in %s", r.Raw)
	}
	return s
}

// login logs in with m.login.password and the m.id.user identifier; extra
// fields are merged into the body. It does not check the result.
func loginRaw(t testing.TB, srv *testserver.Server, user, password string, extra map[string]any) resp {
	t.Helper()
	body := map[string]any{
		"type":       "m.login.password",
		"identifier": map[string]any{"type": "m.id.user", "user": user},
		"password":   password,
	}
	for k, v := range extra {
		body[k] = v
	}
	return post(t, srv, v3+"/login", "", body)
}

// login logs in and returns the new session, failing the test otherwise.
func login(t testing.TB, srv *testserver.Server, user, password string, extra map[string]any) session {
	t.Helper()
	return sessionOf(t, loginRaw(t, srv, user, password, extra).expect(t, http.StatusOK, ""))
}

// wantFlows checks that r is a UIA challenge (401, no errcode unless
// errcode is given) offering exactly the single-stage flow stage, and
// returns its session ID.
func wantFlows(t testing.TB, r resp, errcode, stage string) string {
	t.Helper()
	r.expect(t, http.StatusUnauthorized, errcode)
	flows, _ := r.Body["flows"].([]any)
	var stages []string
	for _, f := range flows {
		fm, _ := f.(map[string]any)
		ss, _ := fm["stages"].([]any)
		if len(ss) == 1 {
			s, _ := ss[0].(string)
			stages = append(stages, s)
		}
	}
	if !slices.Equal(stages, []string{stage}) {
		t.Fatalf("flows = %v, want one flow [%s]; body: %s", flows, stage, r.Raw)
	}
	if _, ok := r.Body["params"].(map[string]any); !ok {
		t.Fatalf("UIA response without params object: %s", r.Raw)
	}
	sess := r.str("session")
	if sess == "" {
		t.Fatalf("UIA response without session: %s", r.Raw)
	}
	return sess
}

// passwordAuth is an m.login.password auth dict for user.
func passwordAuth(sessionID, user, password string) map[string]any {
	return map[string]any{
		"type":       "m.login.password",
		"session":    sessionID,
		"identifier": map[string]any{"type": "m.id.user", "user": user},
		"password":   password,
	}
}

// withPasswordUIA sends body to method path twice: first without auth,
// which must be answered with the m.login.password challenge, then with the
// password. It returns the second response.
func withPasswordUIA(t testing.TB, srv *testserver.Server, method, path, token string, body map[string]any, user, password string) resp {
	t.Helper()
	if body == nil {
		body = map[string]any{}
	}
	first := do(t, srv, req{Method: method, Path: path, Token: token, Body: body})
	sess := wantFlows(t, first, "", "m.login.password")
	second := map[string]any{}
	for k, v := range body {
		second[k] = v
	}
	second["auth"] = passwordAuth(sess, user, password)
	return do(t, srv, req{Method: method, Path: path, Token: token, Body: second})
}

// register runs /register with the m.login.dummy flow: a first request that
// must be answered with the challenge, then the same body with the dummy
// stage. It returns the second response.
func register(t testing.TB, srv *testserver.Server, body map[string]any) resp {
	t.Helper()
	first := post(t, srv, v3+"/register", "", body)
	sess := wantFlows(t, first, "", "m.login.dummy")
	second := map[string]any{}
	for k, v := range body {
		second[k] = v
	}
	second["auth"] = map[string]any{"type": "m.login.dummy", "session": sess}
	return post(t, srv, v3+"/register", "", second)
}

// registerUser creates localpart with password and returns its session.
func registerUser(t testing.TB, srv *testserver.Server, localpart, password string) session {
	t.Helper()
	r := register(t, srv, map[string]any{"username": localpart, "password": password})
	return sessionOf(t, r.expect(t, http.StatusOK, ""))
}

// whoami returns the whoami response for token.
func whoami(t testing.TB, srv *testserver.Server, token string) resp {
	t.Helper()
	return get(t, srv, v3+"/account/whoami", token)
}

// tokenWorks fails the test unless token authenticates as userID.
func tokenWorks(t testing.TB, srv *testserver.Server, token, userID string) {
	t.Helper()
	r := whoami(t, srv, token).expect(t, http.StatusOK, "")
	if r.str("user_id") != userID {
		t.Fatalf("whoami user_id = %q, want %q", r.str("user_id"), userID)
	}
}

// tokenDead fails the test unless token is refused with 401
// M_UNKNOWN_TOKEN and the given soft_logout.
func tokenDead(t testing.TB, srv *testserver.Server, token string, softLogout bool) {
	t.Helper()
	r := whoami(t, srv, token).expect(t, http.StatusUnauthorized, "M_UNKNOWN_TOKEN")
	if got, ok := r.boolean("soft_logout"); got != softLogout || (softLogout && !ok) {
		t.Fatalf("soft_logout = %v (present %v), want %v; body: %s", got, ok, softLogout, r.Raw)
	}
}

// deviceIDs lists the device IDs of the token's user.
func deviceIDs(t testing.TB, srv *testserver.Server, token string) []string {
	t.Helper()
	r := get(t, srv, v3+"/devices", token).expect(t, http.StatusOK, "")
	devs, ok := r.Body["devices"].([]any)
	if !ok {
		t.Fatalf("devices is not a list: %s", r.Raw)
	}
	var ids []string
	for _, d := range devs {
		dm, _ := d.(map[string]any)
		s, _ := dm["device_id"].(string)
		ids = append(ids, s)
	}
	slices.Sort(ids)
	return ids
}

// sorted returns a sorted copy of ss.
func sorted(ss ...string) []string {
	out := slices.Clone(ss)
	slices.Sort(out)
	return out
}

// client returns a mautrix client for a session.
func client(srv *testserver.Server, s session) *mautrix.Client {
	c := srv.Client(id.UserID(s.UserID), s.AccessToken)
	c.DeviceID = id.DeviceID(s.DeviceID)
	return c
}

// Test server options.

func registrationClosed(c *config.Config) { c.Registration.Open = false }
func guestsAllowed(c *config.Config)      { c.Registration.AllowGuests = true }
func withTokens(tokens ...config.RegistrationToken) testserver.Option {
	return func(c *config.Config) { c.Registration.Tokens = tokens }
}
func accessTokenLifetime(d time.Duration) testserver.Option {
	return func(c *config.Config) { c.Auth.AccessTokenLifetime = config.Duration(d) }
}
