package keys

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"slices"
	"sync"
	"testing"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/sirupsen/logrus"

	"github.com/tessera-hs/tessera/internal/config"
	"github.com/tessera-hs/tessera/internal/database/dbtest"
	"github.com/tessera-hs/tessera/users"
)

// Unit tests of what sync relies on: the device list stream, one-time key
// counts, unused fallback key types and the deletion of devices' keys.

var ctx = context.Background()

func newTestService(t *testing.T) *Service {
	t.Helper()
	db := dbtest.Open(t)
	t.Cleanup(func() { db.Close() })
	us, err := users.New(ctx, db, users.Config{
		ServerName: "tessera.test",
		Passwords:  config.Passwords{HashMemoryKiB: 64, HashIterations: 1},
	})
	if err != nil {
		t.Fatalf("users.New: %v", err)
	}
	s, err := New(ctx, db, us, logrus.New())
	if err != nil {
		t.Fatalf("keys.New: %v", err)
	}
	return s
}

type testDevice struct {
	user, device string
	pub          string
	priv         ed25519.PrivateKey
}

func newTestDevice(t *testing.T, user, device string) testDevice {
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return testDevice{user: user, device: device, pub: base64.RawStdEncoding.EncodeToString(pub), priv: priv}
}

func (d testDevice) sign(t *testing.T, obj map[string]any) json.RawMessage {
	t.Helper()
	raw, _ := json.Marshal(obj)
	out, err := gomatrixserverlib.SignJSON(d.user, gomatrixserverlib.KeyID("ed25519:"+d.device), d.priv, raw)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func (d testDevice) deviceKeys(t *testing.T) json.RawMessage {
	return d.sign(t, map[string]any{
		"user_id": d.user, "device_id": d.device, "algorithms": []string{"m.olm.v1.curve25519-aes-sha2"},
		"keys": map[string]string{"ed25519:" + d.device: d.pub},
	})
}

func TestDeviceListStream(t *testing.T) {
	s := newTestService(t)
	var mu sync.Mutex
	var woken []string
	s.SetChangeHook(func(_ context.Context, userID string) {
		mu.Lock()
		defer mu.Unlock()
		woken = append(woken, userID)
	})
	alice := newTestDevice(t, "@alice:tessera.test", "A")
	bob := newTestDevice(t, "@bob:tessera.test", "B")
	if s.StreamPos() != 0 {
		t.Fatalf("initial position = %d", s.StreamPos())
	}

	// First device keys: a change. The same again: none.
	up := UploadRequest{DeviceKeys: alice.deviceKeys(t), OneTimeKeys: map[string]json.RawMessage{
		"signed_curve25519:1": alice.sign(t, map[string]any{"key": "k1"}),
		"signed_curve25519:2": alice.sign(t, map[string]any{"key": "k2"}),
	}, FallbackKeys: map[string]json.RawMessage{
		"signed_curve25519:F": alice.sign(t, map[string]any{"key": "f", "fallback": true}),
	}}
	if _, err := s.Upload(ctx, alice.user, alice.device, up); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Upload(ctx, alice.user, alice.device, up); err != nil {
		t.Fatal(err)
	}
	if s.StreamPos() != 1 {
		t.Fatalf("position after alice's keys = %d, want 1", s.StreamPos())
	}
	if _, err := s.Upload(ctx, bob.user, bob.device, UploadRequest{DeviceKeys: bob.deviceKeys(t)}); err != nil {
		t.Fatal(err)
	}
	if s.StreamPos() != 2 {
		t.Fatalf("position after bob's keys = %d, want 2", s.StreamPos())
	}
	for _, tc := range []struct {
		from, to int64
		want     []string
	}{
		{0, 2, []string{alice.user, bob.user}},
		{1, 2, []string{bob.user}},
		{0, 1, []string{alice.user}},
		{2, 2, []string{}},
	} {
		got, err := s.ChangedUsers(ctx, tc.from, tc.to)
		if err != nil || !slices.Equal(got, tc.want) {
			t.Fatalf("ChangedUsers(%d, %d) = %v, %v; want %v", tc.from, tc.to, got, err, tc.want)
		}
	}

	counts, err := s.OneTimeKeyCounts(ctx, alice.user, alice.device)
	if err != nil || counts["signed_curve25519"] != 2 || len(counts) != 1 {
		t.Fatalf("counts = %v, %v", counts, err)
	}
	fb, err := s.UnusedFallbackKeyTypes(ctx, alice.user, alice.device)
	if err != nil || !slices.Equal(fb, []string{"signed_curve25519"}) {
		t.Fatalf("unused fallback = %v, %v", fb, err)
	}
	// Claims: the two one-time keys, then the fallback key, which is then
	// used (and still claimable).
	claim := map[string]map[string]string{alice.user: {alice.device: "signed_curve25519"}}
	for i, want := range []string{"signed_curve25519:1", "signed_curve25519:2", "signed_curve25519:F", "signed_curve25519:F"} {
		r, err := s.Claim(ctx, claim)
		if err != nil {
			t.Fatal(err)
		}
		if _, ok := r.OneTimeKeys[alice.user][alice.device][want]; !ok {
			t.Fatalf("claim %d = %v, want %s", i, r.OneTimeKeys, want)
		}
	}
	fb, err = s.UnusedFallbackKeyTypes(ctx, alice.user, alice.device)
	if err != nil || len(fb) != 0 {
		t.Fatalf("unused fallback after claim = %v, %v", fb, err)
	}
	// A new fallback key is unused again.
	if _, err := s.Upload(ctx, alice.user, alice.device, UploadRequest{FallbackKeys: map[string]json.RawMessage{
		"signed_curve25519:G": alice.sign(t, map[string]any{"key": "g", "fallback": true}),
	}}); err != nil {
		t.Fatal(err)
	}
	if fb, _ = s.UnusedFallbackKeyTypes(ctx, alice.user, alice.device); !slices.Equal(fb, []string{"signed_curve25519"}) {
		t.Fatalf("unused fallback after a new one = %v", fb)
	}
	if s.StreamPos() != 2 {
		t.Fatalf("one-time and fallback keys moved the stream to %d", s.StreamPos())
	}

	// Deleting the device: its keys go, one change for alice.
	if err := s.DevicesDeleted(ctx, alice.user, []string{alice.device}); err != nil {
		t.Fatal(err)
	}
	if s.StreamPos() != 3 {
		t.Fatalf("position after deletion = %d, want 3", s.StreamPos())
	}
	if got, _ := s.ChangedUsers(ctx, 2, 3); !slices.Equal(got, []string{alice.user}) {
		t.Fatalf("changed after deletion = %v", got)
	}
	if js, _, _ := deviceKey(ctx, s.db, alice.user, alice.device); js != nil {
		t.Fatal("device keys kept after deletion")
	}
	if fb, _ = s.UnusedFallbackKeyTypes(ctx, alice.user, alice.device); len(fb) != 0 {
		t.Fatalf("fallback keys kept after deletion: %v", fb)
	}
	mu.Lock()
	defer mu.Unlock()
	if !slices.Equal(woken, []string{alice.user, bob.user, alice.user}) {
		t.Fatalf("hook calls = %v", woken)
	}

	// The position survives a restart of the service.
	s2, err := New(ctx, s.db, s.users, logrus.New())
	if err != nil || s2.StreamPos() != 3 {
		t.Fatalf("position after restart = %d, %v", s2.StreamPos(), err)
	}
}

// TestUserDeactivated: a deactivated user's cross-signing keys and the
// signatures they made or received go, and the users they had signed are
// told their device list changed.
func TestUserDeactivated(t *testing.T) {
	s := newTestService(t)
	for _, q := range []string{
		`INSERT INTO keys_cross_signing_keys (user_id, key_type, public_key, key_json) VALUES ('@a:x', 'master', 'A', '{}')`,
		`INSERT INTO keys_cross_signing_keys (user_id, key_type, public_key, key_json) VALUES ('@b:x', 'master', 'B', '{}')`,
		`INSERT INTO keys_signatures VALUES ('@b:x', 'B', '@a:x', 'ed25519:AU', 'sig1')`,
		`INSERT INTO keys_signatures VALUES ('@a:x', 'A', '@c:x', 'ed25519:CU', 'sig2')`,
		`INSERT INTO keys_signatures VALUES ('@b:x', 'DEV', '@b:x', 'ed25519:BS', 'sig3')`,
	} {
		if _, err := s.db.ExecContext(ctx, q); err != nil {
			t.Fatal(err)
		}
	}
	before := s.StreamPos()
	if err := s.UserDeactivated(ctx, "@a:x"); err != nil {
		t.Fatal(err)
	}
	var keys, sigs int
	if err := s.db.QueryRowContext(ctx, `SELECT COUNT(*) FROM keys_cross_signing_keys WHERE user_id = '@a:x'`).Scan(&keys); err != nil {
		t.Fatal(err)
	}
	if err := s.db.QueryRowContext(ctx, `SELECT COUNT(*) FROM keys_signatures`).Scan(&sigs); err != nil {
		t.Fatal(err)
	}
	if keys != 0 || sigs != 1 {
		t.Fatalf("after deactivation: %d cross-signing keys of @a:x, %d signatures (want 0 and bob's own 1)", keys, sigs)
	}
	changed, err := s.ChangedUsers(ctx, before, s.StreamPos())
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(changed)
	if !slices.Equal(changed, []string{"@a:x", "@b:x"}) {
		t.Fatalf("changed users %v, want @a:x and @b:x", changed)
	}
}
