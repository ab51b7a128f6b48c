package federation_test

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/tls"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/matrix-org/gomatrix"
	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/fclient"
	"github.com/matrix-org/gomatrixserverlib/spec"
	"maunium.net/go/mautrix"

	"github.com/tessera-hs/tessera/internal/config"
	"github.com/tessera-hs/tessera/internal/signingkey"
	"github.com/tessera-hs/tessera/internal/testserver"
)

// insecureHTTP talks to test servers' self-signed federation listeners.
var insecureHTTP = &http.Client{
	Timeout:   30 * time.Second,
	Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}},
}

// response is a decoded JSON response.
type response struct {
	status int
	body   map[string]any
	raw    []byte
}

func (r response) errcode() string { s, _ := r.body["errcode"].(string); return s }

func do(t *testing.T, req *http.Request) response {
	t.Helper()
	resp, err := insecureHTTP.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", req.Method, req.URL, err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	out := response{status: resp.StatusCode, raw: raw}
	if err := json.Unmarshal(raw, &out.body); err != nil {
		t.Fatalf("%s %s: response is not a JSON object: %q", req.Method, req.URL, raw)
	}
	return out
}

func request(t *testing.T, method, url string, body []byte) response {
	t.Helper()
	req, err := http.NewRequest(method, url, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	return do(t, req)
}

// signingKey is a test server's signing key, read from its data directory.
func signingKey(t *testing.T, s *testserver.Server) *signingkey.Key {
	t.Helper()
	k, err := signingkey.Load(s.Config.SigningKeyPath)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// signedRequest is a federation request from origin to dest signed with
// key, as an http.Request to dest's federation listener.
func signedRequest(t *testing.T, origin, dest spec.ServerName, keyID gomatrixserverlib.KeyID, key ed25519.PrivateKey, method, uri string, content any) *http.Request {
	t.Helper()
	fr := fclient.NewFederationRequest(method, origin, dest, uri)
	if content != nil {
		if err := fr.SetContent(content); err != nil {
			t.Fatal(err)
		}
	}
	if err := fr.Sign(origin, keyID, key); err != nil {
		t.Fatal(err)
	}
	req, err := fr.HTTPRequest()
	if err != nil {
		t.Fatal(err)
	}
	req.URL.Scheme = "https" // dest's name is its federation address
	return req
}

// fedError is the status and errcode of a failed FederationClient call.
func fedError(t *testing.T, err error) (int, string) {
	t.Helper()
	var he gomatrix.HTTPError
	if !errors.As(err, &he) {
		t.Fatalf("error %v is not an HTTP error", err)
	}
	var body struct {
		ErrCode string `json:"errcode"`
	}
	_ = json.Unmarshal(he.Contents, &body)
	return he.Code, body.ErrCode
}

// startPair starts servers A (127.0.0.1) and B (127.0.0.2) with federation.
func startPair(t *testing.T) (a, b *testserver.Server) {
	t.Helper()
	return testserver.Start(t, testserver.Federation("127.0.0.1")), testserver.Start(t, testserver.Federation("127.0.0.2"))
}

func TestServerKeys(t *testing.T) {
	a := testserver.Start(t, testserver.Federation("127.0.0.1"))
	key := signingKey(t, a)
	tests := []struct{ name, url string }{
		{"federation listener", a.FederationURL + "/_matrix/key/v2/server"},
		{"client listener", a.URL + "/_matrix/key/v2/server"},
		{"deprecated key ID form", a.FederationURL + "/_matrix/key/v2/server/" + url.PathEscape(string(key.ID))},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := time.Now()
			resp := request(t, http.MethodGet, tt.url, nil)
			if resp.status != http.StatusOK {
				t.Fatalf("status %d: %s", resp.status, resp.raw)
			}
			var keys gomatrixserverlib.ServerKeys
			if err := json.Unmarshal(resp.raw, &keys); err != nil {
				t.Fatal(err)
			}
			checks, ed := gomatrixserverlib.CheckKeys(a.ServerName(), time.Now(), keys)
			if !checks.AllChecksOK {
				t.Fatalf("key response fails gomatrixserverlib's checks: %+v", checks)
			}
			pub := key.PrivateKey.Public().(ed25519.PublicKey)
			if !bytes.Equal(ed[key.ID], pub) {
				t.Fatalf("verify_keys = %v, want our key %s", keys.VerifyKeys, key.ID)
			}
			// Default key_validity is 24h.
			until := keys.ValidUntilTS.Time()
			if until.Before(before.Add(24*time.Hour-time.Minute)) || until.After(time.Now().Add(24*time.Hour+time.Minute)) {
				t.Fatalf("valid_until_ts %v is not 24h from now", until)
			}
			if old, ok := resp.body["old_verify_keys"].(map[string]any); !ok || len(old) != 0 {
				t.Fatalf("old_verify_keys = %v, want {}", resp.body["old_verify_keys"])
			}
		})
	}
}

func TestKeyRingFetchesRemoteKey(t *testing.T) {
	a, b := startPair(t)
	aKey := signingKey(t, a)
	msg, err := gomatrixserverlib.SignJSON(string(a.ServerName()), aKey.ID, aKey.PrivateKey, []byte(`{"hello":"from A"}`))
	if err != nil {
		t.Fatal(err)
	}
	_, stranger, _ := ed25519.GenerateKey(rand.Reader)
	forged, err := gomatrixserverlib.SignJSON(string(a.ServerName()), aKey.ID, stranger, []byte(`{"hello":"from A"}`))
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name  string
		msg   []byte
		valid bool
	}{
		{"signed by A", msg, true},
		{"signed by A again, from the cache", msg, true},
		{"tampered", bytes.Replace(msg, []byte("from A"), []byte("from Z"), 1), false},
		{"signed with another key under A's key ID", forged, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res, err := b.Server().KeyRing.VerifyJSONs(context.Background(), []gomatrixserverlib.VerifyJSONRequest{{
				ServerName: a.ServerName(), AtTS: spec.AsTimestamp(time.Now()), Message: tt.msg,
				ValidityCheckingFunc: gomatrixserverlib.StrictValiditySignatureCheck,
			}})
			if err != nil {
				t.Fatal(err)
			}
			if (res[0].Error == nil) != tt.valid {
				t.Fatalf("verification error = %v, want valid=%v", res[0].Error, tt.valid)
			}
		})
	}
}

func TestNotaryQuery(t *testing.T) {
	a, b := startPair(t)
	aPub := signingKey(t, a).PrivateKey.Public().(ed25519.PublicKey)
	bKey := signingKey(t, b)
	bPub := bKey.PrivateKey.Public().(ed25519.PublicKey)
	aKeyID := signingKey(t, a).ID
	future := time.Now().Add(time.Hour).UnixMilli()

	postBody := func(servers map[spec.ServerName]map[string]any) []byte {
		raw, _ := json.Marshal(map[string]any{"server_keys": servers})
		return raw
	}
	tests := []struct {
		name, method, url string
		body              []byte
		// want maps each expected response's server to the keys that
		// must have signed it.
		want map[spec.ServerName]map[gomatrixserverlib.KeyID]ed25519.PublicKey
	}{
		{
			name: "POST for A", method: http.MethodPost, url: b.FederationURL + "/_matrix/key/v2/query",
			body: postBody(map[spec.ServerName]map[string]any{a.ServerName(): {}}),
			want: map[spec.ServerName]map[gomatrixserverlib.KeyID]ed25519.PublicKey{a.ServerName(): {aKeyID: aPub}},
		},
		{
			name: "POST for A's key ID with a minimum validity", method: http.MethodPost, url: b.FederationURL + "/_matrix/key/v2/query",
			body: postBody(map[spec.ServerName]map[string]any{a.ServerName(): {string(aKeyID): map[string]any{"minimum_valid_until_ts": future}}}),
			want: map[spec.ServerName]map[gomatrixserverlib.KeyID]ed25519.PublicKey{a.ServerName(): {aKeyID: aPub}},
		},
		{
			name: "GET for A", method: http.MethodGet,
			url:  b.FederationURL + "/_matrix/key/v2/query/" + url.PathEscape(string(a.ServerName())) + "?minimum_valid_until_ts=" + strconv.FormatInt(time.Now().UnixMilli(), 10),
			want: map[spec.ServerName]map[gomatrixserverlib.KeyID]ed25519.PublicKey{a.ServerName(): {aKeyID: aPub}},
		},
		{
			name: "POST for B itself and an unreachable server", method: http.MethodPost, url: b.FederationURL + "/_matrix/key/v2/query",
			body: postBody(map[spec.ServerName]map[string]any{b.ServerName(): {}, "127.0.0.3:1": {}}),
			want: map[spec.ServerName]map[gomatrixserverlib.KeyID]ed25519.PublicKey{b.ServerName(): {}},
		},
		{
			name: "POST for nothing", method: http.MethodPost, url: b.FederationURL + "/_matrix/key/v2/query",
			body: postBody(map[spec.ServerName]map[string]any{}),
			want: map[spec.ServerName]map[gomatrixserverlib.KeyID]ed25519.PublicKey{},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp := request(t, tt.method, tt.url, tt.body)
			if resp.status != http.StatusOK {
				t.Fatalf("status %d: %s", resp.status, resp.raw)
			}
			var out struct {
				ServerKeys []json.RawMessage `json:"server_keys"`
			}
			if err := json.Unmarshal(resp.raw, &out); err != nil || out.ServerKeys == nil {
				t.Fatalf("server_keys missing: %s (%v)", resp.raw, err)
			}
			if len(out.ServerKeys) != len(tt.want) {
				t.Fatalf("got %d responses, want %d: %s", len(out.ServerKeys), len(tt.want), resp.raw)
			}
			for _, raw := range out.ServerKeys {
				var keys gomatrixserverlib.ServerKeys
				if err := json.Unmarshal(raw, &keys); err != nil {
					t.Fatal(err)
				}
				signers, ok := tt.want[keys.ServerName]
				if !ok {
					t.Fatalf("unexpected response for %s", keys.ServerName)
				}
				if checks, _ := gomatrixserverlib.CheckKeys(keys.ServerName, time.Now(), keys); !checks.AllChecksOK {
					t.Fatalf("response for %s fails its own checks: %+v", keys.ServerName, checks)
				}
				for id, pub := range signers {
					if err := gomatrixserverlib.VerifyJSON(string(keys.ServerName), id, pub, raw); err != nil {
						t.Fatalf("not signed by %s: %v", keys.ServerName, err)
					}
				}
				// Every answer is signed by the notary, B.
				if err := gomatrixserverlib.VerifyJSON(string(b.ServerName()), bKey.ID, bPub, raw); err != nil {
					t.Fatalf("response for %s is not signed by the notary: %v", keys.ServerName, err)
				}
			}
		})
	}
}

func TestNotaryQueryBadRequests(t *testing.T) {
	b := testserver.Start(t, testserver.Federation("127.0.0.2"))
	tests := []struct {
		name, method, path string
		body               string
		status             int
		errcode            string
	}{
		{"not JSON", http.MethodPost, "/_matrix/key/v2/query", "{nope", http.StatusBadRequest, "M_NOT_JSON"},
		{"empty body", http.MethodPost, "/_matrix/key/v2/query", "", http.StatusBadRequest, "M_NOT_JSON"},
		{"no server_keys", http.MethodPost, "/_matrix/key/v2/query", "{}", http.StatusBadRequest, "M_BAD_JSON"},
		{"server_keys of the wrong type", http.MethodPost, "/_matrix/key/v2/query", `{"server_keys":[]}`, http.StatusBadRequest, "M_BAD_JSON"},
		{"bad minimum", http.MethodGet, "/_matrix/key/v2/query/example.org?minimum_valid_until_ts=soon", "", http.StatusBadRequest, "M_INVALID_PARAM"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp := request(t, tt.method, b.FederationURL+tt.path, []byte(tt.body))
			if resp.status != tt.status || resp.errcode() != tt.errcode {
				t.Fatalf("got %d %s, want %d %s: %s", resp.status, resp.errcode(), tt.status, tt.errcode, resp.raw)
			}
		})
	}
}

func TestSignedQueries(t *testing.T) {
	a, b := startPair(t)
	ctx := context.Background()
	alice := a.Register("alice", "password-alice")
	if err := alice.SetDisplayName(ctx, "Alice A."); err != nil {
		t.Fatal(err)
	}
	room, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{RoomAliasName: "lobby"})
	if err != nil {
		t.Fatal(err)
	}
	fc := b.Server().FederationClient
	aliceID := string(a.UserID("alice"))

	t.Run("profile", func(t *testing.T) {
		for _, field := range []string{"", "displayname"} {
			prof, err := fc.LookupProfile(ctx, b.ServerName(), a.ServerName(), aliceID, field)
			if err != nil {
				t.Fatalf("field %q: %v", field, err)
			}
			if prof.DisplayName != "Alice A." {
				t.Fatalf("field %q: displayname %q, want %q", field, prof.DisplayName, "Alice A.")
			}
		}
		prof, err := fc.LookupProfile(ctx, b.ServerName(), a.ServerName(), aliceID, "avatar_url")
		if err != nil || prof.DisplayName != "" || prof.AvatarURL != "" {
			t.Fatalf("unset avatar_url: %+v, %v; want an empty profile", prof, err)
		}
	})
	t.Run("directory", func(t *testing.T) {
		dir, err := fc.LookupRoomAlias(ctx, b.ServerName(), a.ServerName(), "#lobby:"+string(a.ServerName()))
		if err != nil {
			t.Fatal(err)
		}
		if dir.RoomID != room.RoomID.String() || len(dir.Servers) != 1 || dir.Servers[0] != a.ServerName() {
			t.Fatalf("directory = %+v, want room %s on [%s]", dir, room.RoomID, a.ServerName())
		}
	})

	failures := []struct {
		name    string
		call    func() error
		status  int
		errcode string
	}{
		{"unknown user", func() error {
			_, err := fc.LookupProfile(ctx, b.ServerName(), a.ServerName(), "@nobody:"+string(a.ServerName()), "")
			return err
		}, http.StatusNotFound, "M_NOT_FOUND"},
		{"user of another server", func() error {
			_, err := fc.LookupProfile(ctx, b.ServerName(), a.ServerName(), string(b.UserID("bob")), "")
			return err
		}, http.StatusBadRequest, "M_INVALID_PARAM"},
		{"invalid user ID", func() error {
			_, err := fc.LookupProfile(ctx, b.ServerName(), a.ServerName(), "alice", "")
			return err
		}, http.StatusBadRequest, "M_INVALID_PARAM"},
		{"unknown alias", func() error {
			_, err := fc.LookupRoomAlias(ctx, b.ServerName(), a.ServerName(), "#nowhere:"+string(a.ServerName()))
			return err
		}, http.StatusNotFound, "M_NOT_FOUND"},
	}
	for _, tt := range failures {
		t.Run(tt.name, func(t *testing.T) {
			status, code := fedError(t, tt.call())
			if status != tt.status || code != tt.errcode {
				t.Fatalf("got %d %s, want %d %s", status, code, tt.status, tt.errcode)
			}
		})
	}
}

func TestRequestAuthentication(t *testing.T) {
	a, b := startPair(t)
	bKey := signingKey(t, b)
	_, wrongKey, _ := ed25519.GenerateKey(rand.Reader)
	profilePath := "/_matrix/federation/v1/query/profile?user_id=" + url.QueryEscape(string(a.UserID("alice")))
	a.Register("alice", "password-alice")

	tests := []struct {
		name    string
		req     func() *http.Request
		status  int
		errcode string
	}{
		{"signed by B", func() *http.Request {
			return signedRequest(t, b.ServerName(), a.ServerName(), bKey.ID, bKey.PrivateKey, http.MethodGet, profilePath, nil)
		}, http.StatusOK, ""},
		{"unsigned", func() *http.Request {
			req, _ := http.NewRequest(http.MethodGet, a.FederationURL+profilePath, nil)
			return req
		}, http.StatusUnauthorized, "M_UNAUTHORIZED"},
		{"not X-Matrix", func() *http.Request {
			req, _ := http.NewRequest(http.MethodGet, a.FederationURL+profilePath, nil)
			req.Header.Set("Authorization", "Bearer abc")
			return req
		}, http.StatusUnauthorized, "M_UNAUTHORIZED"},
		{"X-Matrix without a signature", func() *http.Request {
			req, _ := http.NewRequest(http.MethodGet, a.FederationURL+profilePath, nil)
			req.Header.Set("Authorization", `X-Matrix origin="`+string(b.ServerName())+`",key="`+string(bKey.ID)+`"`)
			return req
		}, http.StatusUnauthorized, "M_UNAUTHORIZED"},
		{"signed with a wrong key", func() *http.Request {
			return signedRequest(t, b.ServerName(), a.ServerName(), bKey.ID, wrongKey, http.MethodGet, profilePath, nil)
		}, http.StatusUnauthorized, "M_UNAUTHORIZED"},
		{"signed with a key ID B does not have", func() *http.Request {
			return signedRequest(t, b.ServerName(), a.ServerName(), "ed25519:nope", wrongKey, http.MethodGet, profilePath, nil)
		}, http.StatusUnauthorized, "M_UNAUTHORIZED"},
		{"signed for another destination", func() *http.Request {
			req := signedRequest(t, b.ServerName(), "127.0.0.3:1", bKey.ID, bKey.PrivateKey, http.MethodGet, profilePath, nil)
			req.URL.Host, req.Host = string(a.ServerName()), string(a.ServerName())
			return req
		}, http.StatusUnauthorized, "M_UNAUTHORIZED"},
		{"signed for another URI", func() *http.Request {
			req := signedRequest(t, b.ServerName(), a.ServerName(), bKey.ID, bKey.PrivateKey, http.MethodGet, profilePath, nil)
			req.URL.RawQuery += "&field=displayname"
			return req
		}, http.StatusUnauthorized, "M_UNAUTHORIZED"},
		{"body signed, then changed", func() *http.Request {
			req := signedRequest(t, b.ServerName(), a.ServerName(), bKey.ID, bKey.PrivateKey, http.MethodGet, profilePath, map[string]any{"a": 1})
			req.Body = io.NopCloser(strings.NewReader(`{"a":2}`))
			req.ContentLength = 7
			return req
		}, http.StatusUnauthorized, "M_UNAUTHORIZED"},
		{"body not JSON", func() *http.Request {
			req := signedRequest(t, b.ServerName(), a.ServerName(), bKey.ID, bKey.PrivateKey, http.MethodGet, profilePath, nil)
			req.Body = io.NopCloser(strings.NewReader(`{"a":`))
			req.ContentLength = 5
			return req
		}, http.StatusBadRequest, "M_NOT_JSON"},
		{"body not an object", func() *http.Request {
			req := signedRequest(t, b.ServerName(), a.ServerName(), bKey.ID, bKey.PrivateKey, http.MethodGet, profilePath, nil)
			req.Body = io.NopCloser(strings.NewReader(`[1]`))
			req.ContentLength = 3
			return req
		}, http.StatusBadRequest, "M_BAD_JSON"},
		{"body too large", func() *http.Request {
			big := `{"x":"` + strings.Repeat("a", 5<<20) + `"}`
			req := signedRequest(t, b.ServerName(), a.ServerName(), bKey.ID, bKey.PrivateKey, http.MethodGet, profilePath, nil)
			req.Body = io.NopCloser(strings.NewReader(big))
			req.ContentLength = int64(len(big))
			return req
		}, http.StatusRequestEntityTooLarge, "M_TOO_LARGE"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp := do(t, tt.req())
			if resp.status != tt.status || resp.errcode() != tt.errcode {
				t.Fatalf("got %d %s, want %d %s: %s", resp.status, resp.errcode(), tt.status, tt.errcode, resp.raw)
			}
		})
	}
}

func TestAllowAndDenyLists(t *testing.T) {
	b := testserver.Start(t, testserver.Federation("127.0.0.2"))
	tests := []struct {
		name   string
		adjust func(*config.Config)
	}{
		{"denied", func(c *config.Config) { c.Federation.DenyServers = []string{string(b.ServerName())} }},
		{"denied by host", func(c *config.Config) { c.Federation.DenyServers = []string{"127.0.0.2"} }},
		{"not allowed", func(c *config.Config) { c.Federation.AllowServers = []string{"friend.example.org"} }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := testserver.Start(t, testserver.Federation("127.0.0.3"), tt.adjust)
			c.Register("carol", "password-carol")
			_, err := b.Server().FederationClient.LookupProfile(context.Background(), b.ServerName(), c.ServerName(), string(c.UserID("carol")), "")
			if status, code := fedError(t, err); status != http.StatusForbidden || code != "M_FORBIDDEN" {
				t.Fatalf("got %d %s, want 403 M_FORBIDDEN", status, code)
			}
		})
	}
}

func TestUnsignedEndpoints(t *testing.T) {
	a := testserver.Start(t, testserver.Federation("127.0.0.1"))
	tests := []struct {
		name, method, path string
		status             int
		errcode            string
	}{
		{"version", http.MethodGet, "/_matrix/federation/v1/version", http.StatusOK, ""},
		{"unknown federation endpoint", http.MethodGet, "/_matrix/federation/v1/nonexistent", http.StatusNotFound, "M_UNRECOGNIZED"},
		{"unknown key endpoint", http.MethodGet, "/_matrix/key/v3/server", http.StatusNotFound, "M_UNRECOGNIZED"},
		{"unknown path", http.MethodGet, "/nope", http.StatusNotFound, "M_UNRECOGNIZED"},
		{"wrong method", http.MethodPost, "/_matrix/key/v2/server", http.StatusMethodNotAllowed, "M_UNRECOGNIZED"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp := request(t, tt.method, a.FederationURL+tt.path, nil)
			if resp.status != tt.status || resp.errcode() != tt.errcode {
				t.Fatalf("got %d %s, want %d %s: %s", resp.status, resp.errcode(), tt.status, tt.errcode, resp.raw)
			}
		})
	}
	resp := request(t, http.MethodGet, a.FederationURL+"/_matrix/federation/v1/version", nil)
	server, _ := resp.body["server"].(map[string]any)
	if server["name"] != "Tessera" || server["version"] == "" || server["version"] == nil {
		t.Fatalf("version = %s", resp.raw)
	}
}

func TestRestartKeepsServerName(t *testing.T) {
	a, b := startPair(t)
	a.Register("alice", "password-alice")
	name := a.ServerName()
	a.Restart()
	if a.ServerName() != name {
		t.Fatalf("server name changed from %s to %s", name, a.ServerName())
	}
	// B still reaches A at its name, and A still knows B's key.
	if _, err := b.Server().FederationClient.LookupProfile(context.Background(), b.ServerName(), name, string(a.UserID("alice")), ""); err != nil {
		t.Fatalf("profile after restart: %v", err)
	}
}
