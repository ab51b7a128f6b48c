package clientapi_test

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"

	"github.com/matrix-org/gomatrixserverlib"

	"github.com/tessera-hs/tessera/internal/testserver"
)

// End-to-end encryption keys: /keys/upload, /keys/query, /keys/claim,
// cross-signing and signatures uploads, with real ed25519 keys.

var kxB64 = base64.RawStdEncoding

// kxKey is an ed25519 key pair.
type kxKey struct {
	pub  string
	priv ed25519.PrivateKey
}

func kxNewKey(t testing.TB) kxKey {
	t.Helper()
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return kxKey{pub: kxB64.EncodeToString(pub), priv: priv}
}

func kxRandom() string {
	b := make([]byte, 32)
	_, _ = rand.Read(b)
	return kxB64.EncodeToString(b)
}

// kxSign signs obj as signer with key under the key ID ed25519:<keyName>.
func kxSign(t testing.TB, obj map[string]any, signer, keyName string, key ed25519.PrivateKey) map[string]any {
	t.Helper()
	raw, err := json.Marshal(obj)
	if err != nil {
		t.Fatal(err)
	}
	out, err := gomatrixserverlib.SignJSON(signer, gomatrixserverlib.KeyID("ed25519:"+keyName), key, raw)
	if err != nil {
		t.Fatalf("sign: %v", err)
	}
	var m map[string]any
	if err := json.Unmarshal(out, &m); err != nil {
		t.Fatal(err)
	}
	return m
}

// kxDevice is a logged-in device with its identity keys.
type kxDevice struct {
	session
	ed    kxKey
	curve string
}

func kxNewDevice(t testing.TB, s session) kxDevice {
	return kxDevice{session: s, ed: kxNewKey(t), curve: kxRandom()}
}

// deviceKeys is the device's DeviceKeys object, self-signed.
func (d kxDevice) deviceKeys(t testing.TB) map[string]any {
	t.Helper()
	return kxSign(t, map[string]any{
		"user_id":    d.UserID,
		"device_id":  d.DeviceID,
		"algorithms": []string{"m.olm.v1.curve25519-aes-sha2", "m.megolm.v1.aes-sha2"},
		"keys": map[string]any{
			"curve25519:" + d.DeviceID: d.curve,
			"ed25519:" + d.DeviceID:    d.ed.pub,
		},
	}, d.UserID, d.DeviceID, d.ed.priv)
}

// otk is a signed_curve25519 key signed by the device.
func (d kxDevice) otk(t testing.TB, fallback bool) map[string]any {
	t.Helper()
	k := map[string]any{"key": kxRandom()}
	if fallback {
		k["fallback"] = true
	}
	return kxSign(t, k, d.UserID, d.DeviceID, d.ed.priv)
}

func (d kxDevice) upload(t testing.TB, srv *testserver.Server, body map[string]any) resp {
	t.Helper()
	return post(t, srv, v3+"/keys/upload", d.AccessToken, body)
}

// kxCounts returns one_time_key_counts of an upload response.
func kxCounts(t testing.TB, r resp) map[string]float64 {
	t.Helper()
	c, ok := r.Body["one_time_key_counts"].(map[string]any)
	if !ok {
		t.Fatalf("no one_time_key_counts in %s", r.Raw)
	}
	out := map[string]float64{}
	for k, v := range c {
		out[k], _ = v.(float64)
	}
	return out
}

func kxWantCounts(t testing.TB, r resp, want map[string]float64) {
	t.Helper()
	got := kxCounts(t, r.expect(t, http.StatusOK, ""))
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("one_time_key_counts = %v, want %v", got, want)
	}
}

// kxPath digs into a decoded JSON body; nil when a step is missing.
func kxPath(v any, keys ...string) any {
	for _, k := range keys {
		m, ok := v.(map[string]any)
		if !ok {
			return nil
		}
		v = m[k]
	}
	return v
}

func kxQuery(t testing.TB, srv *testserver.Server, token string, devices map[string][]string) resp {
	t.Helper()
	return post(t, srv, v3+"/keys/query", token, map[string]any{"device_keys": devices}).expect(t, http.StatusOK, "")
}

func kxClaim(t testing.TB, srv *testserver.Server, token string, keys map[string]map[string]string) resp {
	t.Helper()
	return post(t, srv, v3+"/keys/claim", token, map[string]any{"one_time_keys": keys}).expect(t, http.StatusOK, "")
}

func TestKeysUpload(t *testing.T) {
	t.Parallel()
	srv := testserver.Start(t)
	alice := kxNewDevice(t, registerUser(t, srv, "alice", "password1"))
	bob := kxNewDevice(t, registerUser(t, srv, "bob", "password1"))

	otk1, otk2 := alice.otk(t, false), alice.otk(t, false)
	kxWantCounts(t, alice.upload(t, srv, map[string]any{
		"device_keys": alice.deviceKeys(t),
		"one_time_keys": map[string]any{
			"signed_curve25519:AAAAAQ": otk1,
			"signed_curve25519:AAAAAg": otk2,
			"curve25519:AAAAAw":        kxRandom(),
		},
	}), map[string]float64{"signed_curve25519": 2, "curve25519": 1})
	// Nothing new: the counts, with signed_curve25519 always present.
	kxWantCounts(t, bob.upload(t, srv, map[string]any{}), map[string]float64{"signed_curve25519": 0})

	// The identical device keys again are fine; different ones are refused.
	kxWantCounts(t, alice.upload(t, srv, map[string]any{"device_keys": alice.deviceKeys(t)}),
		map[string]float64{"signed_curve25519": 2, "curve25519": 1})
	changed := alice
	changed.curve = kxRandom()
	alice.upload(t, srv, map[string]any{"device_keys": changed.deviceKeys(t)}).expect(t, http.StatusBadRequest, "M_INVALID_PARAM")
	// A one-time key ID already stored: the same content is idempotent,
	// other content is refused.
	kxWantCounts(t, alice.upload(t, srv, map[string]any{"one_time_keys": map[string]any{"signed_curve25519:AAAAAQ": otk1}}),
		map[string]float64{"signed_curve25519": 2, "curve25519": 1})
	alice.upload(t, srv, map[string]any{"one_time_keys": map[string]any{"signed_curve25519:AAAAAQ": otk2}}).
		expect(t, http.StatusBadRequest, "M_INVALID_PARAM")

	// Refused uploads from a second device of alice's store nothing.
	phone := kxNewDevice(t, login(t, srv, "alice", "password1", nil))
	forged := phone.deviceKeys(t)
	forged["signatures"] = kxSign(t, map[string]any{"x": 1}, phone.UserID, phone.DeviceID, phone.ed.priv)["signatures"]
	otherKey := phone
	otherKey.ed = kxNewKey(t)
	signedByOther := otherKey.deviceKeys(t)
	signedByOther["keys"].(map[string]any)["ed25519:"+phone.DeviceID] = phone.ed.pub
	asBob := phone
	asBob.session.UserID = bob.UserID
	asOtherDevice := phone
	asOtherDevice.session.DeviceID = alice.DeviceID
	badOTK := phone.otk(t, false)
	badOTK["key"] = kxRandom()
	manyOTKs := map[string]any{}
	for i := range 1001 {
		manyOTKs[fmt.Sprintf("curve25519:K%04d", i)] = kxRandom()
	}
	for _, tc := range []struct {
		name    string
		body    map[string]any
		status  int
		errcode string
	}{
		{"forged device key signature", map[string]any{"device_keys": forged}, 400, "M_INVALID_PARAM"},
		{"device keys signed by another key", map[string]any{"device_keys": signedByOther}, 400, "M_INVALID_PARAM"},
		{"another user's device keys", map[string]any{"device_keys": asBob.deviceKeys(t)}, 400, "M_BAD_JSON"},
		{"another device's keys", map[string]any{"device_keys": asOtherDevice.deviceKeys(t)}, 400, "M_BAD_JSON"},
		{"device keys without algorithms", map[string]any{"device_keys": kxSign(t, map[string]any{
			"user_id": phone.UserID, "device_id": phone.DeviceID,
			"keys": map[string]any{"ed25519:" + phone.DeviceID: phone.ed.pub}}, phone.UserID, phone.DeviceID, phone.ed.priv)},
			400, "M_BAD_JSON"},
		{"bad one-time key signature", map[string]any{
			"device_keys":   phone.deviceKeys(t),
			"one_time_keys": map[string]any{"signed_curve25519:A": phone.otk(t, false), "signed_curve25519:B": badOTK},
		}, 400, "M_INVALID_PARAM"},
		{"unsigned signed_curve25519 key", map[string]any{
			"device_keys":   phone.deviceKeys(t),
			"one_time_keys": map[string]any{"signed_curve25519:A": kxRandom()},
		}, 400, "M_INVALID_PARAM"},
		{"key name without algorithm", map[string]any{"one_time_keys": map[string]any{"AAAA": kxRandom()}}, 400, "M_INVALID_PARAM"},
		{"too many one-time keys", map[string]any{"one_time_keys": manyOTKs}, 413, "M_TOO_LARGE"},
		{"oversized key", map[string]any{"one_time_keys": map[string]any{"curve25519:big": strings.Repeat("A", 5000)}}, 413, "M_TOO_LARGE"},
		{"two fallback keys for one algorithm", map[string]any{"fallback_keys": map[string]any{
			"signed_curve25519:F1": phone.otk(t, true), "signed_curve25519:F2": phone.otk(t, true)}}, 400, "M_INVALID_PARAM"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			phone.upload(t, srv, tc.body).expect(t, tc.status, tc.errcode)
		})
	}
	kxWantCounts(t, phone.upload(t, srv, map[string]any{}), map[string]float64{"signed_curve25519": 0})
	q := kxQuery(t, srv, bob.AccessToken, map[string][]string{alice.UserID: {}})
	devs, _ := kxPath(q.Body, "device_keys", alice.UserID).(map[string]any)
	if len(devs) != 1 || devs[alice.DeviceID] == nil {
		t.Fatalf("alice's device keys = %v, want only %s", devs, alice.DeviceID)
	}
	// With valid keys the phone uploads fine; without device keys stored,
	// a signed key cannot be checked and is accepted.
	kxWantCounts(t, phone.upload(t, srv, map[string]any{"device_keys": phone.deviceKeys(t),
		"one_time_keys": map[string]any{"signed_curve25519:A": phone.otk(t, false)}}),
		map[string]float64{"signed_curve25519": 1})
}

func TestKeysClaimAndFallback(t *testing.T) {
	t.Parallel()
	srv := testserver.Start(t)
	alice := kxNewDevice(t, registerUser(t, srv, "alice", "password1"))
	bob := registerUser(t, srv, "bob", "password1")
	otk, fb := alice.otk(t, false), alice.otk(t, true)
	kxWantCounts(t, alice.upload(t, srv, map[string]any{
		"device_keys":   alice.deviceKeys(t),
		"one_time_keys": map[string]any{"signed_curve25519:OTK1": otk},
		"fallback_keys": map[string]any{"signed_curve25519:FB1": fb},
	}), map[string]float64{"signed_curve25519": 1})

	want := map[string]map[string]string{
		alice.UserID:            {alice.DeviceID: "signed_curve25519", "NODEVICE": "signed_curve25519"},
		"@nobody:tessera.test":  {"DEV": "signed_curve25519"},
		"@carol:remote.example": {"DEV": "signed_curve25519"},
	}
	claimed := func(r resp) map[string]any {
		t.Helper()
		if _, ok := kxPath(r.Body, "failures", "remote.example").(map[string]any); !ok {
			t.Fatalf("no failure for remote.example: %s", r.Raw)
		}
		otks, _ := r.Body["one_time_keys"].(map[string]any)
		if len(otks) != 1 {
			t.Fatalf("one_time_keys = %v, want only alice's", otks)
		}
		devs, _ := otks[alice.UserID].(map[string]any)
		if len(devs) != 1 {
			t.Fatalf("alice's claimed devices = %v, want only %s", devs, alice.DeviceID)
		}
		keys, _ := devs[alice.DeviceID].(map[string]any)
		return keys
	}
	keys := claimed(kxClaim(t, srv, bob.AccessToken, want))
	if got := kxPath(keys, "signed_curve25519:OTK1", "key"); got != otk["key"] || len(keys) != 1 {
		t.Fatalf("first claim = %v, want the one-time key", keys)
	}
	// The one-time key is gone: the fallback key, again and again.
	for i := range 2 {
		keys = claimed(kxClaim(t, srv, bob.AccessToken, want))
		if got := kxPath(keys, "signed_curve25519:FB1", "key"); got != fb["key"] || len(keys) != 1 {
			t.Fatalf("claim %d = %v, want the fallback key", i+2, keys)
		}
		if kxPath(keys, "signed_curve25519:FB1", "fallback") != true {
			t.Fatalf("fallback key lost its fallback flag: %v", keys)
		}
	}
	kxWantCounts(t, alice.upload(t, srv, map[string]any{}), map[string]float64{"signed_curve25519": 0})
	// An algorithm without keys: nothing.
	r := kxClaim(t, srv, bob.AccessToken, map[string]map[string]string{alice.UserID: {alice.DeviceID: "curve25519"}})
	if otks, _ := r.Body["one_time_keys"].(map[string]any); len(otks) != 0 {
		t.Fatalf("claimed %v for an algorithm without keys", otks)
	}
	post(t, srv, v3+"/keys/claim", bob.AccessToken, map[string]any{}).expect(t, http.StatusBadRequest, "M_MISSING_PARAM")
}

func TestKeysQuery(t *testing.T) {
	t.Parallel()
	srv := testserver.Start(t)
	alice := kxNewDevice(t, registerUser(t, srv, "alice", "password1"))
	bob := registerUser(t, srv, "bob", "password1")
	put(t, srv, v3+"/devices/"+alice.DeviceID, alice.AccessToken, map[string]any{"display_name": "Alice's laptop"}).
		expect(t, http.StatusOK, "")
	alice.upload(t, srv, map[string]any{"device_keys": alice.deviceKeys(t)}).expect(t, http.StatusOK, "")
	phone := kxNewDevice(t, login(t, srv, "alice", "password1", nil))
	phone.upload(t, srv, map[string]any{"device_keys": phone.deviceKeys(t)}).expect(t, http.StatusOK, "")

	r := kxQuery(t, srv, bob.AccessToken, map[string][]string{
		alice.UserID: {}, "@carol:remote.example": {}, "@nobody:tessera.test": {},
	})
	dev := kxPath(r.Body, "device_keys", alice.UserID, alice.DeviceID)
	if kxPath(dev, "unsigned", "device_display_name") != "Alice's laptop" {
		t.Fatalf("no display name in %s", r.Raw)
	}
	if kxPath(dev, "keys", "ed25519:"+alice.DeviceID) != alice.ed.pub || kxPath(dev, "device_id") != alice.DeviceID {
		t.Fatalf("wrong device keys in %s", r.Raw)
	}
	if sig := kxPath(dev, "signatures", alice.UserID, "ed25519:"+alice.DeviceID); sig == nil {
		t.Fatalf("self-signature missing in %s", r.Raw)
	}
	if kxPath(r.Body, "device_keys", alice.UserID, phone.DeviceID) == nil {
		t.Fatalf("phone missing in %s", r.Raw)
	}
	if _, ok := kxPath(r.Body, "failures", "remote.example").(map[string]any); !ok {
		t.Fatalf("no failure for remote.example in %s", r.Raw)
	}
	if kxPath(r.Body, "device_keys", "@nobody:tessera.test") != nil {
		t.Fatalf("unknown user present in %s", r.Raw)
	}

	// A list of devices selects them; unknown ones are left out.
	r = kxQuery(t, srv, bob.AccessToken, map[string][]string{alice.UserID: {phone.DeviceID, "NOPE"}})
	if devs, _ := kxPath(r.Body, "device_keys", alice.UserID).(map[string]any); len(devs) != 1 || devs[phone.DeviceID] == nil {
		t.Fatalf("device_keys = %s, want only the phone", r.Raw)
	}

	// Deleting the phone deletes its keys.
	withPasswordUIA(t, srv, http.MethodDelete, v3+"/devices/"+phone.DeviceID, alice.AccessToken, nil, alice.UserID, "password1").
		expect(t, http.StatusOK, "")
	r = kxQuery(t, srv, bob.AccessToken, map[string][]string{alice.UserID: {}})
	if devs, _ := kxPath(r.Body, "device_keys", alice.UserID).(map[string]any); len(devs) != 1 || devs[alice.DeviceID] == nil {
		t.Fatalf("device_keys after deleting the phone = %s", r.Raw)
	}
	post(t, srv, v3+"/keys/query", bob.AccessToken, map[string]any{}).expect(t, http.StatusBadRequest, "M_MISSING_PARAM")
}

// kxCrossSigning is a user's set of cross-signing keys.
type kxCrossSigning struct {
	user                   string
	master, self, userSign kxKey
}

func kxNewCrossSigning(t testing.TB, user string) kxCrossSigning {
	return kxCrossSigning{user: user, master: kxNewKey(t), self: kxNewKey(t), userSign: kxNewKey(t)}
}

func kxCSKey(user, usage string, k kxKey) map[string]any {
	return map[string]any{"user_id": user, "usage": []string{usage}, "keys": map[string]any{"ed25519:" + k.pub: k.pub}}
}

// body is the /keys/device_signing/upload body of the set.
func (c kxCrossSigning) body(t testing.TB) map[string]any {
	return map[string]any{
		"master_key":       kxCSKey(c.user, "master", c.master),
		"self_signing_key": kxSign(t, kxCSKey(c.user, "self_signing", c.self), c.user, c.master.pub, c.master.priv),
		"user_signing_key": kxSign(t, kxCSKey(c.user, "user_signing", c.userSign), c.user, c.master.pub, c.master.priv),
	}
}

const kxCSPath = v3 + "/keys/device_signing/upload"

func TestCrossSigningUpload(t *testing.T) {
	t.Parallel()
	srv := testserver.Start(t)
	alice := kxNewDevice(t, registerUser(t, srv, "alice", "password1"))
	bob := registerUser(t, srv, "bob", "password1")
	cs := kxNewCrossSigning(t, alice.UserID)

	// The first upload needs no UIA; the same keys again neither.
	post(t, srv, kxCSPath, alice.AccessToken, cs.body(t)).expect(t, http.StatusOK, "")
	post(t, srv, kxCSPath, alice.AccessToken, cs.body(t)).expect(t, http.StatusOK, "")

	mine := kxQuery(t, srv, alice.AccessToken, map[string][]string{alice.UserID: {}})
	theirs := kxQuery(t, srv, bob.AccessToken, map[string][]string{alice.UserID: {}})
	for _, r := range []resp{mine, theirs} {
		if kxPath(r.Body, "master_keys", alice.UserID, "keys", "ed25519:"+cs.master.pub) != cs.master.pub ||
			kxPath(r.Body, "self_signing_keys", alice.UserID, "keys", "ed25519:"+cs.self.pub) != cs.self.pub {
			t.Fatalf("cross-signing keys missing in %s", r.Raw)
		}
	}
	if kxPath(mine.Body, "user_signing_keys", alice.UserID, "keys", "ed25519:"+cs.userSign.pub) != cs.userSign.pub {
		t.Fatalf("user-signing key missing for its owner: %s", mine.Raw)
	}
	if kxPath(theirs.Body, "user_signing_keys", alice.UserID) != nil {
		t.Fatalf("user-signing key shown to another user: %s", theirs.Raw)
	}

	// New keys replace the old ones only after UIA.
	cs2 := kxNewCrossSigning(t, alice.UserID)
	wantFlows(t, post(t, srv, kxCSPath, alice.AccessToken, cs2.body(t)), "", "m.login.password")
	r := kxQuery(t, srv, alice.AccessToken, map[string][]string{alice.UserID: {}})
	if kxPath(r.Body, "master_keys", alice.UserID, "keys", "ed25519:"+cs.master.pub) == nil {
		t.Fatalf("master key replaced without UIA: %s", r.Raw)
	}
	withPasswordUIA(t, srv, http.MethodPost, kxCSPath, alice.AccessToken, cs2.body(t), alice.UserID, "password1").
		expect(t, http.StatusOK, "")
	r = kxQuery(t, srv, bob.AccessToken, map[string][]string{alice.UserID: {}})
	if kxPath(r.Body, "master_keys", alice.UserID, "keys", "ed25519:"+cs2.master.pub) != cs2.master.pub {
		t.Fatalf("master key not replaced: %s", r.Raw)
	}

	// Invalid uploads, each a first upload of a user without keys.
	for _, tc := range []struct {
		name    string
		body    func(c kxCrossSigning) map[string]any
		status  int
		errcode string
	}{
		{"self-signing key not signed by the master key", func(c kxCrossSigning) map[string]any {
			b := c.body(t)
			b["self_signing_key"] = kxSign(t, kxCSKey(c.user, "self_signing", c.self), c.user, c.master.pub, c.self.priv)
			return b
		}, 400, "M_INVALID_SIGNATURE"},
		{"user-signing key unsigned", func(c kxCrossSigning) map[string]any {
			b := c.body(t)
			b["user_signing_key"] = kxCSKey(c.user, "user_signing", c.userSign)
			return b
		}, 400, "M_INVALID_SIGNATURE"},
		{"self-signing key without a master key", func(c kxCrossSigning) map[string]any {
			b := c.body(t)
			delete(b, "master_key")
			return b
		}, 400, "M_MISSING_PARAM"},
		{"another user's key", func(c kxCrossSigning) map[string]any {
			return map[string]any{"master_key": kxCSKey(alice.UserID, "master", c.master)}
		}, 400, "M_INVALID_PARAM"},
		{"wrong usage", func(c kxCrossSigning) map[string]any {
			return map[string]any{"master_key": kxCSKey(c.user, "self_signing", c.master)}
		}, 400, "M_INVALID_PARAM"},
		{"two keys", func(c kxCrossSigning) map[string]any {
			k := kxCSKey(c.user, "master", c.master)
			k["keys"].(map[string]any)["ed25519:"+c.self.pub] = c.self.pub
			return map[string]any{"master_key": k}
		}, 400, "M_INVALID_PARAM"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			post(t, srv, kxCSPath, bob.AccessToken, tc.body(kxNewCrossSigning(t, bob.UserID))).expect(t, tc.status, tc.errcode)
		})
	}
	r = kxQuery(t, srv, bob.AccessToken, map[string][]string{bob.UserID: {}})
	if kxPath(r.Body, "master_keys", bob.UserID) != nil || kxPath(r.Body, "self_signing_keys", bob.UserID) != nil {
		t.Fatalf("refused uploads stored keys: %s", r.Raw)
	}
}

func TestCrossSignSignatures(t *testing.T) {
	t.Parallel()
	srv := testserver.Start(t)
	alice := kxNewDevice(t, registerUser(t, srv, "alice", "password1"))
	phone := kxNewDevice(t, login(t, srv, "alice", "password1", nil))
	bob := kxNewDevice(t, registerUser(t, srv, "bob", "password1"))
	carol := registerUser(t, srv, "carol", "password1")
	for _, d := range []kxDevice{alice, phone, bob} {
		d.upload(t, srv, map[string]any{"device_keys": d.deviceKeys(t)}).expect(t, http.StatusOK, "")
	}
	acs, bcs := kxNewCrossSigning(t, alice.UserID), kxNewCrossSigning(t, bob.UserID)
	post(t, srv, kxCSPath, alice.AccessToken, acs.body(t)).expect(t, http.StatusOK, "")
	post(t, srv, kxCSPath, bob.AccessToken, bcs.body(t)).expect(t, http.StatusOK, "")

	// Alice signs her laptop with her self-signing key, her master key
	// with her laptop, and bob's master key with her user-signing key; the
	// phone's signature is forged, another names an unknown device.
	forgedPhone := kxSign(t, phone.deviceKeys(t), alice.UserID, acs.self.pub, kxNewKey(t).priv)
	r := post(t, srv, v3+"/keys/signatures/upload", alice.AccessToken, map[string]any{
		alice.UserID: map[string]any{
			alice.DeviceID: kxSign(t, alice.deviceKeys(t), alice.UserID, acs.self.pub, acs.self.priv),
			phone.DeviceID: forgedPhone,
			"NODEVICE":     kxSign(t, map[string]any{"device_id": "NODEVICE"}, alice.UserID, acs.self.pub, acs.self.priv),
			acs.master.pub: kxSign(t, kxCSKey(alice.UserID, "master", acs.master), alice.UserID, alice.DeviceID, alice.ed.priv),
		},
		bob.UserID: map[string]any{
			bcs.master.pub: kxSign(t, kxCSKey(bob.UserID, "master", bcs.master), alice.UserID, acs.userSign.pub, acs.userSign.priv),
		},
	}).expect(t, http.StatusOK, "")
	for keyID, code := range map[string]string{phone.DeviceID: "M_INVALID_SIGNATURE", "NODEVICE": "M_NOT_FOUND"} {
		if got := kxPath(r.Body, "failures", alice.UserID, keyID, "errcode"); got != code {
			t.Fatalf("failure for %s = %v, want %s: %s", keyID, got, code, r.Raw)
		}
	}
	if f, _ := kxPath(r.Body, "failures").(map[string]any); len(f) != 1 || len(f[alice.UserID].(map[string]any)) != 2 {
		t.Fatalf("failures = %s, want the phone and NODEVICE only", r.Raw)
	}

	sskSig := func(r resp, deviceID string) any {
		return kxPath(r.Body, "device_keys", alice.UserID, deviceID, "signatures", alice.UserID, "ed25519:"+acs.self.pub)
	}
	for _, token := range []string{alice.AccessToken, bob.AccessToken, carol.AccessToken} {
		q := kxQuery(t, srv, token, map[string][]string{alice.UserID: {}, bob.UserID: {}})
		if sskSig(q, alice.DeviceID) == nil || kxPath(q.Body, "device_keys", alice.UserID, alice.DeviceID, "signatures",
			alice.UserID, "ed25519:"+alice.DeviceID) == nil {
			t.Fatalf("laptop signatures missing: %s", q.Raw)
		}
		if sskSig(q, phone.DeviceID) != nil {
			t.Fatalf("forged signature stored: %s", q.Raw)
		}
		if kxPath(q.Body, "master_keys", alice.UserID, "signatures", alice.UserID, "ed25519:"+alice.DeviceID) == nil {
			t.Fatalf("device signature of the master key missing: %s", q.Raw)
		}
		// Alice's signature of bob's master key: for alice only.
		uskSig := kxPath(q.Body, "master_keys", bob.UserID, "signatures", alice.UserID, "ed25519:"+acs.userSign.pub)
		if (uskSig != nil) != (token == alice.AccessToken) {
			t.Fatalf("user-signing signature visible = %v for token of %s: %s", uskSig != nil,
				map[string]string{alice.AccessToken: "alice", bob.AccessToken: "bob", carol.AccessToken: "carol"}[token], q.Raw)
		}
	}

	// A signed object that is not the stored key is refused.
	changed := phone
	changed.curve = kxRandom()
	r = post(t, srv, v3+"/keys/signatures/upload", alice.AccessToken, map[string]any{
		alice.UserID: map[string]any{phone.DeviceID: kxSign(t, changed.deviceKeys(t), alice.UserID, acs.self.pub, acs.self.priv)},
	}).expect(t, http.StatusOK, "")
	if got := kxPath(r.Body, "failures", alice.UserID, phone.DeviceID, "errcode"); got != "M_INVALID_SIGNATURE" {
		t.Fatalf("signature of a changed key: %s", r.Raw)
	}
}
