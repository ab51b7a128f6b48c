package keys

import (
	"context"
	"encoding/json"
	"errors"
	"maps"
	"slices"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/tessera-hs/tessera/users"
)

// The key store over federation, with a fake other server: the device
// list cache and its updates, queries and claims of other servers' users,
// and the updates our users' changes send.

// fakeRemote is other servers as the key store's Client sees them.
type fakeRemote struct {
	mu      sync.Mutex
	devices map[string]*UserDevices // by user: GET /user/devices
	query   *ServerQueryResponse    // POST /user/keys/query
	claim   map[string]map[string]map[string]json.RawMessage
	down    map[spec.ServerName]bool
	calls   []string
}

func (f *fakeRemote) call(server spec.ServerName, what string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, what)
	if f.down[server] {
		return errors.New("connection refused")
	}
	return nil
}

func (f *fakeRemote) UserDevices(_ context.Context, server spec.ServerName, userID string) (*UserDevices, error) {
	if err := f.call(server, "devices "+userID); err != nil {
		return nil, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	ud := *f.devices[userID]
	ud.Devices = slices.Clone(ud.Devices)
	return &ud, nil
}

func (f *fakeRemote) QueryKeys(_ context.Context, server spec.ServerName, _ map[string][]string) (*ServerQueryResponse, error) {
	if err := f.call(server, "query "+string(server)); err != nil {
		return nil, err
	}
	return f.query, nil
}

func (f *fakeRemote) ClaimKeys(_ context.Context, server spec.ServerName, _ map[string]map[string]string) (map[string]map[string]map[string]json.RawMessage, error) {
	if err := f.call(server, "claim "+string(server)); err != nil {
		return nil, err
	}
	return f.claim, nil
}

func (f *fakeRemote) fetches() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	n := 0
	for _, c := range f.calls {
		if len(c) > 8 && c[:8] == "devices " {
			n++
		}
	}
	return n
}

func remoteKeys(userID, deviceID string) json.RawMessage {
	raw, _ := json.Marshal(map[string]any{
		"user_id": userID, "device_id": deviceID, "algorithms": []string{"m.olm.v1.curve25519-aes-sha2"},
		"keys":       map[string]string{"ed25519:" + deviceID: "key-" + deviceID},
		"signatures": map[string]any{userID: map[string]string{"ed25519:" + deviceID: "sig"}},
	})
	return raw
}

func remoteDevices(userID string, streamID int64, deviceIDs ...string) *UserDevices {
	ud := &UserDevices{UserID: userID, StreamID: streamID}
	for _, d := range deviceIDs {
		ud.Devices = append(ud.Devices, UserDevice{DeviceID: d, Keys: remoteKeys(userID, d)})
	}
	return ud
}

func queriedDevices(t *testing.T, s *Service, userID string) []string {
	t.Helper()
	res, err := s.Query(ctx, "@me:tessera.test", map[string][]string{userID: nil})
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Failures) > 0 {
		t.Fatalf("failures: %v", res.Failures)
	}
	return slices.Sorted(maps.Keys(res.DeviceKeys[userID]))
}

// TestRemoteDeviceListCache: a remote user's device list is fetched once,
// then kept up to date by the updates that follow the version we have;
// an update that does not, or that cannot be applied, makes the next query
// fetch the list again. Every update reaches the device list stream.
func TestRemoteDeviceListCache(t *testing.T) {
	const r = "@r:remote.test"
	s := newTestService(t)
	remote := &fakeRemote{devices: map[string]*UserDevices{r: remoteDevices(r, 5, "D1")}}
	var shares atomic.Bool
	shares.Store(true)
	s.SetFederation(Federation{Client: remote, SharesRoom: func(context.Context, string) (bool, error) { return shares.Load(), nil }})

	if got := queriedDevices(t, s, r); !slices.Equal(got, []string{"D1"}) || remote.fetches() != 1 {
		t.Fatalf("first query: devices %v after %d fetches, want [D1] after 1", got, remote.fetches())
	}
	steps := []struct {
		name        string
		edu         gomatrixserverlib.DeviceListUpdateEvent
		server      *UserDevices // the list the server answers from now on
		wantDevices []string
		wantFetches int
		wantChange  bool
	}{
		{"cached", gomatrixserverlib.DeviceListUpdateEvent{}, nil, []string{"D1"}, 1, false},
		{"new device follows", gomatrixserverlib.DeviceListUpdateEvent{UserID: r, DeviceID: "D2", StreamID: 6, PrevID: []int64{5},
			Keys: remoteKeys(r, "D2"), DeviceDisplayName: "phone"}, nil, []string{"D1", "D2"}, 1, true},
		{"deletion follows", gomatrixserverlib.DeviceListUpdateEvent{UserID: r, DeviceID: "D1", StreamID: 7, PrevID: []int64{6},
			Deleted: true}, nil, []string{"D2"}, 1, true},
		{"old update ignored", gomatrixserverlib.DeviceListUpdateEvent{UserID: r, DeviceID: "D9", StreamID: 6, PrevID: []int64{5},
			Keys: remoteKeys(r, "D9")}, nil, []string{"D2"}, 1, false},
		{"gap refetches", gomatrixserverlib.DeviceListUpdateEvent{UserID: r, DeviceID: "D3", StreamID: 9, PrevID: []int64{8},
			Keys: remoteKeys(r, "D3")}, remoteDevices(r, 9, "D2", "D3"), []string{"D2", "D3"}, 2, true},
		{"keys of another device refetch", gomatrixserverlib.DeviceListUpdateEvent{UserID: r, DeviceID: "D4", StreamID: 10, PrevID: []int64{9},
			Keys: remoteKeys(r, "D5")}, remoteDevices(r, 10, "D4"), []string{"D4"}, 3, true},
	}
	for _, st := range steps {
		before := s.StreamPos()
		if st.edu.UserID != "" {
			if err := s.ReceiveDeviceListUpdate(ctx, st.edu); err != nil {
				t.Fatalf("%s: %v", st.name, err)
			}
		}
		if st.server != nil {
			remote.mu.Lock()
			remote.devices[r] = st.server
			remote.mu.Unlock()
		}
		if got := queriedDevices(t, s, r); !slices.Equal(got, st.wantDevices) {
			t.Errorf("%s: devices %v, want %v", st.name, got, st.wantDevices)
		}
		if n := remote.fetches(); n != st.wantFetches {
			t.Errorf("%s: %d fetches, want %d", st.name, n, st.wantFetches)
		}
		changed, err := s.ChangedUsers(ctx, before, s.StreamPos())
		if err != nil {
			t.Fatal(err)
		}
		if got := slices.Contains(changed, r); got != st.wantChange {
			t.Errorf("%s: device list change recorded = %v, want %v", st.name, got, st.wantChange)
		}
	}

	// A display name from an update shows in the query, and a signing key
	// update replaces the cached key.
	if err := s.ReceiveDeviceListUpdate(ctx, gomatrixserverlib.DeviceListUpdateEvent{UserID: r, DeviceID: "D4",
		StreamID: 11, PrevID: []int64{10}, DeviceDisplayName: "laptop"}); err != nil {
		t.Fatal(err)
	}
	master, _ := json.Marshal(map[string]any{"user_id": r, "usage": []string{"master"}, "keys": map[string]string{"ed25519:M": "M"}})
	if err := s.ReceiveSigningKeyUpdate(ctx, SigningKeyUpdate{UserID: r, MasterKey: master}); err != nil {
		t.Fatal(err)
	}
	res, err := s.Query(ctx, "@me:tessera.test", map[string][]string{r: nil})
	if err != nil {
		t.Fatal(err)
	}
	var dk struct {
		Unsigned struct {
			Name string `json:"device_display_name"`
		} `json:"unsigned"`
	}
	if err := json.Unmarshal(res.DeviceKeys[r]["D4"], &dk); err != nil || dk.Unsigned.Name != "laptop" {
		t.Errorf("D4 = %s, want the display name laptop", res.DeviceKeys[r]["D4"])
	}
	if !sameContent(res.MasterKeys[r], master) {
		t.Errorf("master key = %s, want %s", res.MasterKeys[r], master)
	}
	if remote.fetches() != 3 {
		t.Errorf("%d fetches after in-order updates, want still 3", remote.fetches())
	}

	// Once we share no room, the server is asked each time and the cache
	// dropped: sharing one again fetches the list afresh.
	shares.Store(false)
	remote.query = &ServerQueryResponse{DeviceKeys: map[string]map[string]json.RawMessage{r: {"D4": remoteKeys(r, "D4")}}}
	if got := queriedDevices(t, s, r); !slices.Equal(got, []string{"D4"}) || remote.fetches() != 3 {
		t.Errorf("without a shared room: devices %v after %d fetches", got, remote.fetches())
	}
	shares.Store(true)
	if got := queriedDevices(t, s, r); !slices.Equal(got, []string{"D4"}) || remote.fetches() != 4 {
		t.Errorf("sharing a room again: devices %v after %d fetches, want a new fetch", got, remote.fetches())
	}
}

// TestRemoteQueryAndClaim: users who share no room with ours are asked
// of their server each time and not cached; servers that do not answer
// are failures; only what a server says of its own users is kept.
func TestRemoteQueryAndClaim(t *testing.T) {
	const (
		r     = "@r:remote.test"
		other = "@o:other.test"
	)
	s := newTestService(t)
	remote := &fakeRemote{
		query: &ServerQueryResponse{DeviceKeys: map[string]map[string]json.RawMessage{
			r:     {"D1": remoteKeys(r, "D1"), "BAD": remoteKeys(r, "D1")},
			other: {"X": remoteKeys(other, "X")},
		}},
		claim: map[string]map[string]map[string]json.RawMessage{
			r:     {"D1": {"signed_curve25519:AAA": json.RawMessage(`{"key":"k"}`)}},
			other: {"X": {"signed_curve25519:BBB": json.RawMessage(`{"key":"k"}`)}},
		},
		down: map[spec.ServerName]bool{"down.test": true},
	}
	s.SetFederation(Federation{Client: remote, SharesRoom: func(context.Context, string) (bool, error) { return false, nil }})

	for _, tc := range []struct {
		name         string
		users        []string
		wantDevices  map[string][]string
		wantFailures []string
	}{
		{"untracked user", []string{r}, map[string][]string{r: {"D1"}}, nil},
		{"unreachable server", []string{r, "@d:down.test"}, map[string][]string{r: {"D1"}}, []string{"down.test"}},
	} {
		req := map[string][]string{}
		for _, u := range tc.users {
			req[u] = nil
		}
		res, err := s.Query(ctx, "@me:tessera.test", req)
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		got := map[string][]string{}
		for u, devs := range res.DeviceKeys {
			got[u] = slices.Sorted(maps.Keys(devs))
		}
		if !maps.EqualFunc(got, tc.wantDevices, slices.Equal) {
			t.Errorf("%s: devices %v, want %v", tc.name, got, tc.wantDevices)
		}
		if failed := slices.Sorted(maps.Keys(res.Failures)); !slices.Equal(failed, tc.wantFailures) {
			t.Errorf("%s: failures %v, want %v", tc.name, failed, tc.wantFailures)
		}
	}
	if remote.fetches() != 0 {
		t.Errorf("untracked users' device lists were fetched %d times", remote.fetches())
	}

	res, err := s.Claim(ctx, map[string]map[string]string{r: {"D1": "signed_curve25519"}, "@d:down.test": {"X": "signed_curve25519"}})
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := res.OneTimeKeys[r]["D1"]["signed_curve25519:AAA"]; !ok || len(res.OneTimeKeys) != 1 {
		t.Errorf("claimed %v, want only r's D1 key", res.OneTimeKeys)
	}
	if _, ok := res.Failures["down.test"]; !ok || len(res.Failures) != 1 {
		t.Errorf("claim failures %v, want down.test", res.Failures)
	}

	// Without federation every other server is a failure.
	s.SetFederation(Federation{})
	q, err := s.Query(ctx, "@me:tessera.test", map[string][]string{r: nil})
	if err != nil || q.Failures["remote.test"] == nil {
		t.Errorf("query without federation: %v, %v", q, err)
	}
}

// TestLocalChangesFederated: our users' new and deleted devices and new
// cross-signing keys are handed to the federation hooks, in a sequence of
// versions that GET /user/devices reports; other servers may ask only
// about our users.
func TestLocalChangesFederated(t *testing.T) {
	s := newTestService(t)
	acct, err := s.users.CreateAccount(ctx, users.NewAccount{Localpart: "alice", Password: "correct horse"})
	if err != nil {
		t.Fatal(err)
	}
	name := "phone"
	sess, err := s.users.CreateSession(ctx, users.NewSession{UserID: acct.UserID, DisplayName: &name})
	if err != nil {
		t.Fatal(err)
	}
	var (
		mu       sync.Mutex
		updates  []gomatrixserverlib.DeviceListUpdateEvent
		signings []SigningKeyUpdate
	)
	s.SetFederation(Federation{
		DeviceListUpdate: func(_ context.Context, u gomatrixserverlib.DeviceListUpdateEvent) {
			mu.Lock()
			defer mu.Unlock()
			updates = append(updates, u)
		},
		SigningKeyUpdate: func(_ context.Context, u SigningKeyUpdate) {
			mu.Lock()
			defer mu.Unlock()
			signings = append(signings, u)
		},
	})
	dev := newTestDevice(t, acct.UserID, sess.DeviceID)
	if _, err := s.Upload(ctx, dev.user, dev.device, UploadRequest{DeviceKeys: dev.deviceKeys(t)}); err != nil {
		t.Fatal(err)
	}
	master := newTestDevice(t, acct.UserID, "")
	master.device = master.pub // a cross-signing key's ID is its public key
	masterKey := master.sign(t, map[string]any{"user_id": acct.UserID, "usage": []string{"master"},
		"keys": map[string]string{"ed25519:" + master.pub: master.pub}})
	if err := s.UploadCrossSigningKeys(ctx, acct.UserID, CrossSigningUpload{MasterKey: masterKey}, false); err != nil {
		t.Fatal(err)
	}

	ud, err := s.LocalUserDevices(ctx, acct.UserID)
	if err != nil {
		t.Fatal(err)
	}
	if ud.StreamID != 1 || len(ud.Devices) != 1 || ud.Devices[0].DeviceID != dev.device ||
		ud.Devices[0].DisplayName == nil || *ud.Devices[0].DisplayName != name || !sameContent(ud.MasterKey, masterKey) {
		t.Errorf("user devices = %+v", ud)
	}
	if err := s.DevicesDeleted(ctx, acct.UserID, []string{dev.device}); err != nil {
		t.Fatal(err)
	}

	mu.Lock()
	defer mu.Unlock()
	if len(updates) != 2 {
		t.Fatalf("device list updates %+v, want 2", updates)
	}
	for i, want := range []gomatrixserverlib.DeviceListUpdateEvent{
		{UserID: acct.UserID, DeviceID: dev.device, StreamID: 1, DeviceDisplayName: name},
		{UserID: acct.UserID, DeviceID: dev.device, StreamID: 2, PrevID: []int64{1}, Deleted: true},
	} {
		got := updates[i]
		if got.UserID != want.UserID || got.DeviceID != want.DeviceID || got.StreamID != want.StreamID ||
			!slices.Equal(got.PrevID, want.PrevID) || got.Deleted != want.Deleted || got.DeviceDisplayName != want.DeviceDisplayName {
			t.Errorf("update %d = %+v, want %+v", i, got, want)
		}
	}
	if !sameContent(updates[0].Keys, dev.deviceKeys(t)) {
		t.Errorf("update keys = %s", updates[0].Keys)
	}
	if len(signings) != 1 || !sameContent(signings[0].MasterKey, masterKey) {
		t.Errorf("signing key updates = %+v", signings)
	}

	for _, tc := range []struct {
		name string
		call func() error
	}{
		{"devices", func() error { _, err := s.LocalUserDevices(ctx, "@r:remote.test"); return err }},
		{"query", func() error {
			_, err := s.QueryForServer(ctx, map[string][]string{"@r:remote.test": nil})
			return err
		}},
		{"claim", func() error {
			_, err := s.ClaimForServer(ctx, map[string]map[string]string{"@r:remote.test": {"D": "signed_curve25519"}})
			return err
		}},
	} {
		if err := tc.call(); err == nil {
			t.Errorf("%s about another server's user: no error", tc.name)
		}
	}
}
