package cluster

import (
	"fmt"
	"net/http/httptest"
	"testing"

	"github.com/tessera-hs/tessera/internal/config"
)

func testMap(t *testing.T, self string, names ...string) *Map {
	t.Helper()
	cfg := config.Default()
	cfg.Database.Engine, cfg.Database.DSN = "postgres", "postgres://x/y"
	cfg.InstanceSecret = "0123456789abcdef0123456789abcdef"
	cfg.Instances = map[string]config.Instance{}
	for i, n := range names {
		cfg.Instances[n] = config.Instance{InternalURL: fmt.Sprintf("http://127.0.0.1:%d", 8000+i)}
	}
	cfg.Instance = self
	m, err := New(&cfg)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// Every process computes the same owner, rooms spread over all instances,
// and adding an instance moves keys only to it.
func TestOwner(t *testing.T) {
	a := testMap(t, "a", "a", "b", "c")
	b := testMap(t, "b", "c", "b", "a")
	four := testMap(t, "a", "a", "b", "c", "d")
	counts := map[string]int{}
	moved := 0
	const n = 3000
	for i := range n {
		room := fmt.Sprintf("!room%d:example.org", i)
		o := a.Owner(room)
		if b.Owner(room) != o {
			t.Fatalf("%s: owner %s from a, %s from b", room, o, b.Owner(room))
		}
		counts[o]++
		if o4 := four.Owner(room); o4 != o {
			if o4 != "d" {
				t.Fatalf("%s moved from %s to %s when d was added", room, o, o4)
			}
			moved++
		}
	}
	for _, name := range []string{"a", "b", "c"} {
		if c := counts[name]; c < n/3-n/10 || c > n/3+n/10 {
			t.Errorf("instance %s owns %d of %d rooms", name, c, n)
		}
	}
	if moved < n/4-n/10 || moved > n/4+n/10 {
		t.Errorf("%d of %d rooms moved to the fourth instance", moved, n)
	}
	if a.Index() != 0 || b.Index() != 1 || a.Size() != 3 {
		t.Errorf("index a %d, b %d, size %d", a.Index(), b.Index(), a.Size())
	}
}

func TestWriteTarget(t *testing.T) {
	for _, tc := range []struct {
		method, path, room string
	}{
		{"PUT", "/_matrix/client/v3/rooms/%21abc%3Aexample.org/send/m.room.message/txn1", "!abc:example.org"},
		{"PUT", "/_matrix/client/r0/rooms/%21abc%3Aexample.org/state/m.room.name/", "!abc:example.org"},
		{"PUT", "/_matrix/client/v3/rooms/!abc:example.org/redact/%24ev/t", "!abc:example.org"},
		{"POST", "/_matrix/client/v3/rooms/%21abc%3Aexample.org/invite", "!abc:example.org"},
		{"POST", "/_matrix/client/v3/join/%21abc%3Aexample.org", "!abc:example.org"},
		{"POST", "/_matrix/client/v3/join/%23alias%3Aexample.org", "#alias:example.org"},
		{"POST", "/_matrix/client/v3/knock/%23alias%3Aexample.org", "#alias:example.org"},
		{"POST", "/_matrix/client/v3/rooms/%23alias%3Aexample.org/join", ""},
		{"POST", "/_matrix/client/v3/rooms/%21abc%3Aexample.org/upgrade", "!abc:example.org"},
		{"DELETE", "/_synapse/admin/v1/rooms/%21abc%3Aexample.org", "!abc:example.org"},
		{"DELETE", "/_synapse/admin/v2/rooms/%21abc%3Aexample.org", "!abc:example.org"},
		{"GET", "/_synapse/admin/v2/rooms/%21abc%3Aexample.org/delete_status", "!abc:example.org"},
		{"GET", "/_synapse/admin/v2/rooms/delete_status/abc", ""},
		{"POST", "/_synapse/admin/v1/rooms/%21abc%3Aexample.org/make_room_admin", "!abc:example.org"},
		{"GET", "/_synapse/admin/v1/rooms/%21abc%3Aexample.org", ""},
		{"POST", "/_synapse/admin/v1/join/%23alias%3Aexample.org", "#alias:example.org"},
		{"POST", "/_synapse/admin/v1/knock/%23alias%3Aexample.org", ""},
		{"GET", "/_matrix/client/v3/rooms/%21abc%3Aexample.org/state/m.room.name/", ""},
		{"GET", "/_matrix/client/v3/rooms/%21abc%3Aexample.org/messages", ""},
		{"POST", "/_matrix/client/v3/rooms/%21abc%3Aexample.org/receipt/m.read/%24ev", ""},
		{"GET", "/_matrix/client/v3/sync", ""},
		{"POST", "/_matrix/client/v3/createRoom", ""},
		{"POST", "/_synapse/admin/v1/send_server_notice", "server notices"},
		{"PUT", "/_synapse/admin/v1/send_server_notice/txn1", "server notices"},
		{"GET", "/_synapse/admin/v1/send_server_notice", ""},
		// Other servers' joins, leaves, knocks and invites.
		{"GET", "/_matrix/federation/v1/make_join/%21abc%3Aexample.org/%40u%3Ao.org?ver=10", "!abc:example.org"},
		{"PUT", "/_matrix/federation/v2/send_join/%21abc%3Aexample.org/%24ev", "!abc:example.org"},
		{"PUT", "/_matrix/federation/v1/send_join/%21abc%3Aexample.org/%24ev", "!abc:example.org"},
		{"GET", "/_matrix/federation/v1/make_leave/%21abc%3Aexample.org/%40u%3Ao.org", "!abc:example.org"},
		{"PUT", "/_matrix/federation/v2/send_leave/%21abc%3Aexample.org/%24ev", "!abc:example.org"},
		{"GET", "/_matrix/federation/v1/make_knock/%21abc%3Aexample.org/%40u%3Ao.org", "!abc:example.org"},
		{"PUT", "/_matrix/federation/v1/send_knock/%21abc%3Aexample.org/%24ev", "!abc:example.org"},
		{"PUT", "/_matrix/federation/v2/invite/%21abc%3Aexample.org/%24ev", "!abc:example.org"},
		{"PUT", "/_matrix/federation/v1/send/txn1", ""},
		{"GET", "/_matrix/federation/v1/state/%21abc%3Aexample.org", ""},
		{"POST", "/_matrix/federation/v1/make_join/%21abc%3Aexample.org/%40u%3Ao.org", ""},
	} {
		got, ok := writeTarget(httptest.NewRequest(tc.method, tc.path, nil))
		if got != tc.room || ok != (tc.room != "") {
			t.Errorf("%s %s: room %q, %v; want %q", tc.method, tc.path, got, ok, tc.room)
		}
	}
}
