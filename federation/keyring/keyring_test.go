package keyring

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"errors"
	"io"
	"sync"
	"testing"
	"time"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"
	"github.com/sirupsen/logrus"

	"github.com/tessera-hs/tessera/internal/database"
	"github.com/tessera-hs/tessera/internal/database/dbtest"
)

// fakeServer is another homeserver as the key ring sees it: a name, a
// signing key, and whether it answers.
type fakeServer struct {
	name  spec.ServerName
	keyID gomatrixserverlib.KeyID
	priv  ed25519.PrivateKey
}

func newFakeServer(t *testing.T, name string) *fakeServer {
	t.Helper()
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return &fakeServer{name: spec.ServerName(name), keyID: "ed25519:k1", priv: priv}
}

// keys is the server's signed /_matrix/key/v2/server response.
func (s *fakeServer) keys(t *testing.T, validUntil time.Time) gomatrixserverlib.ServerKeys {
	t.Helper()
	return signedKeys(t, s.name, s.keyID, s.priv, validUntil)
}

func signedKeys(t *testing.T, name spec.ServerName, keyID gomatrixserverlib.KeyID, priv ed25519.PrivateKey, validUntil time.Time) gomatrixserverlib.ServerKeys {
	t.Helper()
	var k gomatrixserverlib.ServerKeys
	k.ServerName = name
	k.ValidUntilTS = spec.AsTimestamp(validUntil)
	k.VerifyKeys = map[gomatrixserverlib.KeyID]gomatrixserverlib.VerifyKey{
		keyID: {Key: spec.Base64Bytes(priv.Public().(ed25519.PublicKey))},
	}
	k.OldVerifyKeys = map[gomatrixserverlib.KeyID]gomatrixserverlib.OldVerifyKey{}
	raw, err := json.Marshal(k.ServerKeyFields)
	if err != nil {
		t.Fatal(err)
	}
	raw, err = gomatrixserverlib.SignJSON(string(name), keyID, priv, raw)
	if err != nil {
		t.Fatal(err)
	}
	var out gomatrixserverlib.ServerKeys
	if err := json.Unmarshal(raw, &out); err != nil {
		t.Fatal(err)
	}
	return out
}

func (s *fakeServer) sign(t *testing.T, msg string) []byte {
	t.Helper()
	signed, err := gomatrixserverlib.SignJSON(string(s.name), s.keyID, s.priv, []byte(msg))
	if err != nil {
		t.Fatal(err)
	}
	return signed
}

// fakeClient answers GetServerKeys for the servers it knows and
// LookupServerKeys from a notary's answers; it counts the requests.
type fakeClient struct {
	mu       sync.Mutex
	direct   map[spec.ServerName]gomatrixserverlib.ServerKeys
	notary   map[spec.ServerName][]gomatrixserverlib.ServerKeys
	requests []spec.ServerName // every server asked, in order
}

func (c *fakeClient) GetServerKeys(_ context.Context, s spec.ServerName) (gomatrixserverlib.ServerKeys, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.requests = append(c.requests, s)
	keys, ok := c.direct[s]
	if !ok {
		return keys, errors.New("connection refused")
	}
	return keys, nil
}

func (c *fakeClient) LookupServerKeys(_ context.Context, s spec.ServerName, _ map[gomatrixserverlib.PublicKeyLookupRequest]spec.Timestamp) ([]gomatrixserverlib.ServerKeys, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.requests = append(c.requests, s)
	keys, ok := c.notary[s]
	if !ok {
		return nil, errors.New("connection refused")
	}
	return keys, nil
}

func (c *fakeClient) asked() []spec.ServerName {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]spec.ServerName(nil), c.requests...)
}

func (c *fakeClient) reset() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.requests = nil
}

type harness struct {
	db     *database.DB
	ring   *KeyRing
	client *fakeClient
	self   *fakeServer
}

func newHarness(t *testing.T, adjust func(*Config)) *harness {
	t.Helper()
	db := dbtest.Open(t)
	t.Cleanup(func() { db.Close() })
	self := newFakeServer(t, "self.test")
	cfg := Config{
		ServerName:  self.name,
		KeyID:       self.keyID,
		PublicKey:   self.priv.Public().(ed25519.PublicKey),
		KeyValidity: 24 * time.Hour,
	}
	if adjust != nil {
		adjust(&cfg)
	}
	client := &fakeClient{direct: map[spec.ServerName]gomatrixserverlib.ServerKeys{}, notary: map[spec.ServerName][]gomatrixserverlib.ServerKeys{}}
	log := logrus.New()
	log.SetOutput(io.Discard)
	ring, err := New(context.Background(), db, cfg, client, log)
	if err != nil {
		t.Fatal(err)
	}
	return &harness{db: db, ring: ring, client: client, self: self}
}

// verify checks one message signed by server, as the key ring sees it.
func (h *harness) verify(t *testing.T, server spec.ServerName, msg []byte) error {
	t.Helper()
	res, err := h.ring.VerifyJSONs(context.Background(), []gomatrixserverlib.VerifyJSONRequest{{
		ServerName: server, AtTS: spec.AsTimestamp(time.Now()), Message: msg,
		ValidityCheckingFunc: gomatrixserverlib.StrictValiditySignatureCheck,
	}})
	if err != nil {
		t.Fatalf("VerifyJSONs: %v", err)
	}
	return res[0].Error
}

func TestOwnKeyIsNeverFetched(t *testing.T) {
	h := newHarness(t, nil)
	if err := h.verify(t, h.self.name, h.self.sign(t, `{"a":1}`)); err != nil {
		t.Fatalf("our own signature: %v", err)
	}
	// A key ID we do not have is refused without asking anyone.
	other := newFakeServer(t, string(h.self.name))
	other.keyID = "ed25519:other"
	if err := h.verify(t, h.self.name, other.sign(t, `{"a":1}`)); err == nil {
		t.Fatal("a signature with a key we do not have verified")
	}
	if got := h.client.asked(); len(got) != 0 {
		t.Fatalf("the network was asked about our own keys: %v", got)
	}
	var n int
	if err := h.db.QueryRowContext(context.Background(), `SELECT COUNT(*) FROM server_signing_keys`).Scan(&n); err != nil || n != 0 {
		t.Fatalf("stored keys: %d, %v; our key must not be stored", n, err)
	}
}

func TestFetchDirectThenCached(t *testing.T) {
	h := newHarness(t, nil)
	remote := newFakeServer(t, "remote.test:8448")
	h.client.direct[remote.name] = remote.keys(t, time.Now().Add(time.Hour))

	msg := remote.sign(t, `{"hello":"world"}`)
	if err := h.verify(t, remote.name, msg); err != nil {
		t.Fatalf("first verification: %v", err)
	}
	if got := h.client.asked(); len(got) != 1 || got[0] != remote.name {
		t.Fatalf("asked %v, want [%s]", got, remote.name)
	}
	var from string
	var validUntil int64
	err := h.db.QueryRowContext(context.Background(), `SELECT fetched_from, valid_until_ts FROM server_signing_keys
		WHERE server_name = $1 AND key_id = $2`, string(remote.name), string(remote.keyID)).Scan(&from, &validUntil)
	if err != nil || from != string(remote.name) || validUntil <= time.Now().UnixMilli() {
		t.Fatalf("stored key: from %q valid until %d, %v", from, validUntil, err)
	}

	// Again: from the cache, no request.
	h.client.reset()
	if err := h.verify(t, remote.name, msg); err != nil {
		t.Fatalf("second verification: %v", err)
	}
	// A tampered message fails with the cached key.
	bad := []byte(string(msg[:len(msg)-1]) + `,"x":1}`)
	if err := h.verify(t, remote.name, bad); err == nil {
		t.Fatal("a tampered message verified")
	}
	// The tampered message makes the key ring look for newer keys; the
	// untampered one never did.
	if got := h.client.asked(); len(got) > 1 {
		t.Fatalf("asked %v, want at most one refetch", got)
	}

	// A fresh store on the same database (a restart) has the key.
	store, err := NewStore(context.Background(), h.db)
	if err != nil {
		t.Fatal(err)
	}
	req := gomatrixserverlib.PublicKeyLookupRequest{ServerName: remote.name, KeyID: remote.keyID}
	got, err := store.FetchKeys(context.Background(), map[gomatrixserverlib.PublicKeyLookupRequest]spec.Timestamp{req: 0})
	if err != nil || string(got[req].Key) != string(remote.priv.Public().(ed25519.PublicKey)) {
		t.Fatalf("after restart: %v, %v", got, err)
	}
}

func TestFallsBackToTrustedKeyServer(t *testing.T) {
	notary := newFakeServer(t, "notary.test")
	h := newHarness(t, func(c *Config) {
		c.TrustedKeyServers = []TrustedKeyServer{{
			ServerName: notary.name,
			Keys:       map[gomatrixserverlib.KeyID]ed25519.PublicKey{notary.keyID: notary.priv.Public().(ed25519.PublicKey)},
		}}
	})
	remote := newFakeServer(t, "offline.test")
	// The notary passes on remote's response, signed by itself too.
	resp := remote.keys(t, time.Now().Add(time.Hour))
	raw, err := gomatrixserverlib.SignJSON(string(notary.name), notary.keyID, notary.priv, resp.Raw)
	if err != nil {
		t.Fatal(err)
	}
	var vouched gomatrixserverlib.ServerKeys
	if err := json.Unmarshal(raw, &vouched); err != nil {
		t.Fatal(err)
	}
	h.client.notary[notary.name] = []gomatrixserverlib.ServerKeys{vouched}

	if err := h.verify(t, remote.name, remote.sign(t, `{"a":"b"}`)); err != nil {
		t.Fatalf("verification through the notary: %v", err)
	}
	var from string
	err = h.db.QueryRowContext(context.Background(), `SELECT fetched_from FROM server_signing_keys WHERE server_name = $1`,
		string(remote.name)).Scan(&from)
	if err != nil || from != string(notary.name) {
		t.Fatalf("fetched_from = %q, %v; want %s", from, err, notary.name)
	}
}

func TestDeniedServerIsNotContacted(t *testing.T) {
	remote := newFakeServer(t, "denied.test")
	h := newHarness(t, func(c *Config) {
		c.Allowed = func(s spec.ServerName) bool { return s != remote.name }
	})
	h.client.direct[remote.name] = remote.keys(t, time.Now().Add(time.Hour))
	if err := h.verify(t, remote.name, remote.sign(t, `{}`)); err == nil {
		t.Fatal("a denied server's signature verified")
	}
	keys, err := h.ring.NotaryKeys(context.Background(), remote.name, nil, 0)
	if err != nil || len(keys) != 0 {
		t.Fatalf("NotaryKeys for a denied server: %v, %v", keys, err)
	}
	if got := h.client.asked(); len(got) != 0 {
		t.Fatalf("a denied server was contacted: %v", got)
	}
}

func TestStoreKeepsLongestValidity(t *testing.T) {
	h := newHarness(t, nil)
	ctx := context.Background()
	req := gomatrixserverlib.PublicKeyLookupRequest{ServerName: "x.test", KeyID: "ed25519:a"}
	key := func(validUntil, expired spec.Timestamp) map[gomatrixserverlib.PublicKeyLookupRequest]gomatrixserverlib.PublicKeyLookupResult {
		return map[gomatrixserverlib.PublicKeyLookupRequest]gomatrixserverlib.PublicKeyLookupResult{
			req: {VerifyKey: gomatrixserverlib.VerifyKey{Key: make([]byte, 32)}, ValidUntilTS: validUntil, ExpiredTS: expired},
		}
	}
	steps := []struct {
		name                  string
		validUntil, expired   spec.Timestamp
		wantValid, wantExpire spec.Timestamp
	}{
		{"first", 2000, 0, 2000, 0},
		{"longer replaces", 3000, 0, 3000, 0},
		{"shorter is ignored", 1000, 0, 3000, 0},
		{"expiry replaces", 0, 2500, 0, 2500},
	}
	for _, st := range steps {
		if err := h.ring.Store().StoreKeys(ctx, key(st.validUntil, st.expired)); err != nil {
			t.Fatalf("%s: %v", st.name, err)
		}
		// Through the cache, and through a fresh store (the database).
		fresh, err := NewStore(ctx, h.db)
		if err != nil {
			t.Fatal(err)
		}
		for which, s := range map[string]*Store{"cache": h.ring.Store(), "database": fresh} {
			got, err := s.FetchKeys(ctx, map[gomatrixserverlib.PublicKeyLookupRequest]spec.Timestamp{req: 0})
			if err != nil {
				t.Fatal(err)
			}
			if got[req].ValidUntilTS != st.wantValid || got[req].ExpiredTS != st.wantExpire {
				t.Errorf("%s (%s): valid_until %d expired %d, want %d %d", st.name, which,
					got[req].ValidUntilTS, got[req].ExpiredTS, st.wantValid, st.wantExpire)
			}
		}
	}
}

func TestNotaryKeys(t *testing.T) {
	ctx := context.Background()
	h := newHarness(t, nil)
	remote := newFakeServer(t, "remote.test")
	h.client.direct[remote.name] = remote.keys(t, time.Now().Add(24*time.Hour))

	check := func(keys []gomatrixserverlib.ServerKeys) {
		t.Helper()
		if len(keys) != 1 || keys[0].ServerName != remote.name {
			t.Fatalf("got %d responses, want remote's one", len(keys))
		}
		if err := gomatrixserverlib.VerifyJSON(string(remote.name), remote.keyID, remote.priv.Public().(ed25519.PublicKey), keys[0].Raw); err != nil {
			t.Fatalf("response is not signed by the server: %v", err)
		}
	}
	keys, err := h.ring.NotaryKeys(ctx, remote.name, nil, spec.AsTimestamp(time.Now()))
	if err != nil {
		t.Fatal(err)
	}
	check(keys)
	if got := h.client.asked(); len(got) != 1 {
		t.Fatalf("asked %v, want one fetch", got)
	}

	// Cached: by key ID, and with no key ID.
	h.client.reset()
	for _, ids := range [][]gomatrixserverlib.KeyID{{remote.keyID}, nil} {
		keys, err := h.ring.NotaryKeys(ctx, remote.name, ids, spec.AsTimestamp(time.Now().Add(time.Hour)))
		if err != nil {
			t.Fatal(err)
		}
		check(keys)
	}
	if got := h.client.asked(); len(got) != 0 {
		t.Fatalf("asked %v, want answers from the database", got)
	}

	// The server goes away: stored answers are still given.
	delete(h.client.direct, remote.name)
	keys, err = h.ring.NotaryKeys(ctx, remote.name, nil, spec.AsTimestamp(time.Now().Add(48*time.Hour)))
	if err != nil {
		t.Fatal(err)
	}
	check(keys)

	// Our own server and unknown servers get nothing.
	for _, s := range []spec.ServerName{h.self.name, "unknown.test", "bad name"} {
		keys, err := h.ring.NotaryKeys(ctx, s, nil, 0)
		if err != nil || len(keys) != 0 {
			t.Fatalf("NotaryKeys(%q) = %d responses, %v; want none", s, len(keys), err)
		}
	}
}

func TestSatisfied(t *testing.T) {
	now := time.Now()
	resp := func(id string, fetchedAgo, validFor time.Duration) storedResponse {
		fetched := now.Add(-fetchedAgo)
		return storedResponse{keyID: gomatrixserverlib.KeyID(id), fetched: fetched, validUntil: spec.AsTimestamp(fetched.Add(validFor))}
	}
	day := 24 * time.Hour
	tests := []struct {
		name   string
		stored []storedResponse
		ids    []gomatrixserverlib.KeyID
		min    time.Time
		want   bool
	}{
		{"nothing stored", nil, nil, now, false},
		{"fresh", []storedResponse{resp("ed25519:a", time.Hour, day)}, nil, now, true},
		{"past half life", []storedResponse{resp("ed25519:a", 13*time.Hour, day)}, nil, now, false},
		{"minimum beyond validity", []storedResponse{resp("ed25519:a", time.Hour, day)}, nil, now.Add(2 * day), false},
		{"fetched just now", []storedResponse{resp("ed25519:a", time.Second, time.Second)}, nil, now.Add(2 * day), true},
		{"key id present", []storedResponse{resp("ed25519:a", time.Hour, day)}, []gomatrixserverlib.KeyID{"ed25519:a"}, now, true},
		{"key id missing", []storedResponse{resp("ed25519:a", time.Hour, day)}, []gomatrixserverlib.KeyID{"ed25519:b"}, now, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := satisfied(tt.stored, tt.ids, spec.AsTimestamp(tt.min), now); got != tt.want {
				t.Fatalf("satisfied = %v, want %v", got, tt.want)
			}
		})
	}
}

func TestNewTrustedKeyServer(t *testing.T) {
	tests := []struct {
		name string
		keys map[string]string
		ok   bool
	}{
		{"unpadded", map[string]string{"ed25519:auto": "Noi6WqcDj0QmPxCNQqgezwTlBKrfqehY1u2FyWP9uYw"}, true},
		{"padded", map[string]string{"ed25519:auto": "Noi6WqcDj0QmPxCNQqgezwTlBKrfqehY1u2FyWP9uYw="}, true},
		{"short", map[string]string{"ed25519:auto": "c2hvcnQ"}, false},
		{"not base64", map[string]string{"ed25519:auto": "!!"}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ts, err := NewTrustedKeyServer("matrix.org", tt.keys)
			if (err == nil) != tt.ok {
				t.Fatalf("err = %v, want ok=%v", err, tt.ok)
			}
			if tt.ok && len(ts.Keys["ed25519:auto"]) != ed25519.PublicKeySize {
				t.Fatalf("keys: %v", ts.Keys)
			}
		})
	}
}
