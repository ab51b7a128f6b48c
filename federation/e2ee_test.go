package federation_test

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"testing"
	"time"

	"github.com/matrix-org/gomatrix"
	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"
	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"

	"github.com/tessera-hs/tessera/internal/testserver"
)

// e2eeSigner is an ed25519 key a test client signs its keys with.
type e2eeSigner struct {
	pub  string
	priv ed25519.PrivateKey
}

func newE2EESigner(t *testing.T) e2eeSigner {
	t.Helper()
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return e2eeSigner{pub: base64.RawStdEncoding.EncodeToString(pub), priv: priv}
}

// sign signs obj as userID with the key named "ed25519:<keyName>".
func (s e2eeSigner) sign(t *testing.T, userID, keyName string, obj map[string]any) map[string]any {
	t.Helper()
	raw, err := json.Marshal(obj)
	if err != nil {
		t.Fatal(err)
	}
	signed, err := gomatrixserverlib.SignJSON(userID, gomatrixserverlib.KeyID("ed25519:"+keyName), s.priv, raw)
	if err != nil {
		t.Fatal(err)
	}
	var out map[string]any
	if err := json.Unmarshal(signed, &out); err != nil {
		t.Fatal(err)
	}
	return out
}

// e2eeCall makes a client API request and returns its JSON answer.
func e2eeCall(t *testing.T, c *mautrix.Client, method string, path []any, body any) map[string]any {
	t.Helper()
	var out map[string]any
	if _, err := c.MakeRequest(context.Background(), method, c.BuildClientURL(append([]any{"v3"}, path...)...), body, &out); err != nil {
		t.Fatalf("%s: %s %v: %v", c.UserID, method, path, err)
	}
	return out
}

// e2eeUploadDeviceKeys publishes device keys and n signed one-time keys for
// c's device, and returns its key.
func e2eeUploadDeviceKeys(t *testing.T, c *mautrix.Client, n int) e2eeSigner {
	t.Helper()
	dev := newE2EESigner(t)
	user, device := c.UserID.String(), c.DeviceID.String()
	otks := map[string]any{}
	for i := range n {
		otks[fmt.Sprintf("signed_curve25519:K%d", i)] = dev.sign(t, user, device, map[string]any{"key": fmt.Sprintf("otk-%s-%d", device, i)})
	}
	e2eeCall(t, c, http.MethodPost, []any{"keys", "upload"}, map[string]any{
		"device_keys": dev.sign(t, user, device, map[string]any{
			"user_id": user, "device_id": device,
			"algorithms": []string{"m.olm.v1.curve25519-aes-sha2", "m.megolm.v1.aes-sha2"},
			"keys":       map[string]string{"ed25519:" + device: dev.pub, "curve25519:" + device: "curve-" + device},
		}),
		"one_time_keys": otks,
	})
	return dev
}

// e2eeUploadCrossSigningKeys publishes master, self-signing and user-signing
// keys for c's user, and returns the master and self-signing keys.
func e2eeUploadCrossSigningKeys(t *testing.T, c *mautrix.Client) (master, selfSigning e2eeSigner) {
	t.Helper()
	user := c.UserID.String()
	master, selfSigning, userSigning := newE2EESigner(t), newE2EESigner(t), newE2EESigner(t)
	key := func(s e2eeSigner, usage string) map[string]any {
		return map[string]any{"user_id": user, "usage": []string{usage}, "keys": map[string]string{"ed25519:" + s.pub: s.pub}}
	}
	e2eeCall(t, c, http.MethodPost, []any{"keys", "device_signing", "upload"}, map[string]any{
		"master_key":       key(master, "master"),
		"self_signing_key": master.sign(t, user, master.pub, key(selfSigning, "self_signing")),
		"user_signing_key": master.sign(t, user, master.pub, key(userSigning, "user_signing")),
	})
	return master, selfSigning
}

// e2eePath walks a decoded JSON value.
func e2eePath(v any, keys ...string) any {
	for _, k := range keys {
		m, ok := v.(map[string]any)
		if !ok {
			return nil
		}
		v = m[k]
	}
	return v
}

// e2eeSyncFrom syncs c from since until cond holds for a response, and
// returns that response's next_batch.
func e2eeSyncFrom(t *testing.T, c *mautrix.Client, since, what string, cond func(*mautrix.RespSync) bool) string {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		resp, err := c.SyncRequest(context.Background(), 1000, since, "", false, event.PresenceOnline)
		if err != nil {
			t.Fatalf("%s: sync: %v", c.UserID, err)
		}
		since = resp.NextBatch
		if cond(resp) {
			return since
		}
	}
	t.Fatalf("%s never saw %s", c.UserID, what)
	return ""
}

// e2eeToDeviceCount counts the to-device events of type typ carrying n.
func e2eeToDeviceCount(resp *mautrix.RespSync, typ string, n float64) int {
	count := 0
	for _, ev := range resp.ToDevice.Events {
		if ev.Type.Type == typ && ev.Content.Raw["n"] == n {
			count++
		}
	}
	return count
}

// TestE2EEAcrossServers: bob, on B, shares a room with alice, on A. He
// gets alice's device and cross-signing keys and claims a one-time key of
// hers through his server; his to-device message reaches her device once,
// however often it is sent; her new device shows in his device_lists, and
// then in his key queries; an unreachable server is a failure. A answers
// B's queries about its own users only.
func TestE2EEAcrossServers(t *testing.T) {
	ctx := context.Background()
	a := testserver.Start(t, testserver.Federation("127.0.0.1"))
	b := testserver.Start(t, testserver.Federation("127.0.0.2"))
	alice := a.Register("alice", "password-alice")
	bob := b.Register("bob", "password-bob")
	created, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "public_chat", Name: "Keys"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := bob.JoinRoom(ctx, created.RoomID.String(), &mautrix.ReqJoinRoom{Via: []string{a.Config.ServerName}}); err != nil {
		t.Fatalf("bob joins through A: %v", err)
	}
	aliceDev := e2eeUploadDeviceKeys(t, alice, 3)
	master, selfSigning := e2eeUploadCrossSigningKeys(t, alice)
	aliceID, aliceDevice := alice.UserID.String(), alice.DeviceID.String()

	t.Run("query", func(t *testing.T) {
		res := e2eeCall(t, bob, http.MethodPost, []any{"keys", "query"}, map[string]any{"device_keys": map[string]any{aliceID: []string{}}})
		if f, _ := res["failures"].(map[string]any); len(f) != 0 {
			t.Errorf("failures: %v", f)
		}
		if got := e2eePath(res, "device_keys", aliceID, aliceDevice, "keys", "ed25519:"+aliceDevice); got != aliceDev.pub {
			t.Errorf("alice's device key = %v, want %s", got, aliceDev.pub)
		}
		if got := e2eePath(res, "device_keys", aliceID, aliceDevice, "signatures", aliceID, "ed25519:"+aliceDevice); got == nil {
			t.Error("alice's device keys lost their signature")
		}
		if got := e2eePath(res, "master_keys", aliceID, "keys", "ed25519:"+master.pub); got != master.pub {
			t.Errorf("alice's master key = %v, want %s", e2eePath(res, "master_keys", aliceID), master.pub)
		}
		if got := e2eePath(res, "self_signing_keys", aliceID, "keys", "ed25519:"+selfSigning.pub); got != selfSigning.pub {
			t.Errorf("alice's self-signing key = %v, want %s", e2eePath(res, "self_signing_keys", aliceID), selfSigning.pub)
		}
		if got := e2eePath(res, "user_signing_keys", aliceID); got != nil {
			t.Errorf("bob sees alice's user-signing key %v", got)
		}
	})

	t.Run("claim", func(t *testing.T) {
		seen := map[string]bool{}
		for range 2 {
			res := e2eeCall(t, bob, http.MethodPost, []any{"keys", "claim"}, map[string]any{
				"one_time_keys": map[string]any{aliceID: map[string]string{aliceDevice: "signed_curve25519"}}})
			keys, _ := e2eePath(res, "one_time_keys", aliceID, aliceDevice).(map[string]any)
			if len(keys) != 1 {
				t.Fatalf("claimed %v, want one key", res)
			}
			for keyID, k := range keys {
				if seen[keyID] {
					t.Errorf("%s claimed twice", keyID)
				}
				seen[keyID] = true
				raw, _ := json.Marshal(k)
				pub, _ := base64.RawStdEncoding.DecodeString(aliceDev.pub)
				if err := gomatrixserverlib.VerifyJSON(aliceID, gomatrixserverlib.KeyID("ed25519:"+aliceDevice), pub, raw); err != nil {
					t.Errorf("claimed key %s: %v", keyID, err)
				}
			}
		}
	})

	t.Run("to-device", func(t *testing.T) {
		since := e2eeSyncFrom(t, alice, "", "an initial sync", func(*mautrix.RespSync) bool { return true })
		send := func(txnID string, n int) {
			t.Helper()
			e2eeCall(t, bob, http.MethodPut, []any{"sendToDevice", "m.test", txnID}, map[string]any{
				"messages": map[string]any{aliceID: map[string]any{aliceDevice: map[string]any{"n": n}}}})
		}
		send("t1", 1)
		send("t1", 1) // a retry: not sent again
		got := 0
		since = e2eeSyncFrom(t, alice, since, "bob's to-device message", func(r *mautrix.RespSync) bool {
			got += e2eeToDeviceCount(r, "m.test", 1)
			return got > 0
		})

		// B sends its transaction again under another ID (as after a
		// lost answer, with a queue that lost its record), and one more.
		edu, _ := json.Marshal(gomatrixserverlib.ToDeviceMessage{Sender: bob.UserID.String(), Type: "m.test", MessageID: "dup-1",
			Messages: map[string]map[string]json.RawMessage{aliceID: {"*": json.RawMessage(`{"n": 2}`)}}})
		for _, txnID := range []string{"again-1", "again-2"} {
			if _, err := b.Server().FederationClient.SendTransaction(ctx, gomatrixserverlib.Transaction{
				TransactionID: gomatrixserverlib.TransactionID(txnID), Origin: b.ServerName(), Destination: a.ServerName(),
				OriginServerTS: spec.AsTimestamp(time.Now()),
				EDUs:           []gomatrixserverlib.EDU{{Type: spec.MDirectToDevice, Origin: string(b.ServerName()), Content: edu}},
			}); err != nil {
				t.Fatalf("transaction %s: %v", txnID, err)
			}
		}
		dups := 0
		since = e2eeSyncFrom(t, alice, since, "the retransmitted message", func(r *mautrix.RespSync) bool {
			got += e2eeToDeviceCount(r, "m.test", 1)
			dups += e2eeToDeviceCount(r, "m.test", 2)
			return dups > 0
		})
		// Anything more would have come with the next sync.
		resp, err := alice.SyncRequest(ctx, 1000, since, "", false, event.PresenceOnline)
		if err != nil {
			t.Fatal(err)
		}
		got += e2eeToDeviceCount(resp, "m.test", 1)
		dups += e2eeToDeviceCount(resp, "m.test", 2)
		if got != 1 || dups != 1 {
			t.Errorf("alice got bob's message %d times and the retransmitted one %d times, want once each", got, dups)
		}
	})

	t.Run("device list update", func(t *testing.T) {
		since := e2eeSyncFrom(t, bob, "", "an initial sync", func(*mautrix.RespSync) bool { return true })
		alice2 := a.Client("", "")
		login, err := alice2.Login(ctx, &mautrix.ReqLogin{Type: mautrix.AuthTypePassword,
			Identifier: mautrix.UserIdentifier{Type: mautrix.IdentifierTypeUser, User: "alice"},
			Password:   "password-alice", StoreCredentials: true})
		if err != nil {
			t.Fatal(err)
		}
		e2eeUploadDeviceKeys(t, alice2, 1)
		e2eeSyncFrom(t, bob, since, "alice in device_lists.changed", func(r *mautrix.RespSync) bool {
			return slices.Contains(r.DeviceLists.Changed, alice.UserID)
		})
		res := e2eeCall(t, bob, http.MethodPost, []any{"keys", "query"}, map[string]any{"device_keys": map[string]any{aliceID: []string{}}})
		devs, _ := e2eePath(res, "device_keys", aliceID).(map[string]any)
		if _, ok := devs[login.DeviceID.String()]; !ok || len(devs) != 2 {
			t.Errorf("bob sees alice's devices %v, want %s and %s", devs, aliceDevice, login.DeviceID)
		}
	})

	t.Run("unreachable server", func(t *testing.T) {
		const gone = "127.0.0.3:1"
		res := e2eeCall(t, bob, http.MethodPost, []any{"keys", "query"}, map[string]any{"device_keys": map[string]any{
			aliceID: []string{}, "@nobody:" + gone: []string{}}})
		if e2eePath(res, "failures", gone) == nil {
			t.Errorf("failures = %v, want %s", res["failures"], gone)
		}
		if e2eePath(res, "device_keys", aliceID, aliceDevice) == nil {
			t.Error("alice's keys are missing beside the failure")
		}
		claim := e2eeCall(t, bob, http.MethodPost, []any{"keys", "claim"}, map[string]any{"one_time_keys": map[string]any{
			"@nobody:" + gone: map[string]string{"X": "signed_curve25519"}}})
		if e2eePath(claim, "failures", gone) == nil {
			t.Errorf("claim failures = %v, want %s", claim["failures"], gone)
		}
	})

	t.Run("federation endpoints", func(t *testing.T) {
		fc := b.Server().FederationClient
		devs, err := fc.GetUserDevices(ctx, b.ServerName(), a.ServerName(), aliceID)
		if err != nil {
			t.Fatal(err)
		}
		if devs.UserID != aliceID || len(devs.Devices) != 2 || devs.StreamID < 2 || devs.MasterKey == nil || devs.SelfSigningKey == nil {
			t.Errorf("user/devices = %+v", devs)
		}
		for _, tc := range []struct {
			name string
			call func() error
		}{
			{"devices of another server's user", func() error {
				_, err := fc.GetUserDevices(ctx, b.ServerName(), a.ServerName(), bob.UserID.String())
				return err
			}},
			{"query of another server's user", func() error {
				_, err := fc.QueryKeys(ctx, b.ServerName(), a.ServerName(), map[string][]string{bob.UserID.String(): nil})
				return err
			}},
			{"claim of another server's user", func() error {
				_, err := fc.ClaimKeys(ctx, b.ServerName(), a.ServerName(), map[string]map[string]string{bob.UserID.String(): {"X": "signed_curve25519"}})
				return err
			}},
		} {
			var he gomatrix.HTTPError
			if err := tc.call(); !errors.As(err, &he) || he.Code != http.StatusBadRequest {
				t.Errorf("%s: %v, want 400", tc.name, err)
			}
		}
	})
}
