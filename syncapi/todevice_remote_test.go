package syncapi

import (
	"context"
	"encoding/json"
	"io"
	"maps"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"
	"github.com/sirupsen/logrus"

	"github.com/tessera-hs/tessera/internal/config"
	"github.com/tessera-hs/tessera/internal/database"
	"github.com/tessera-hs/tessera/internal/database/dbtest"
	"github.com/tessera-hs/tessera/users"
)

// Send-to-device messaging over federation, on the stream alone: what
// goes out per server, and what comes in delivered once.

type toDeviceFixture struct {
	db    *database.DB
	td    *ToDevice
	alice string // with devices A1 and A2
}

func newToDeviceFixture(t *testing.T) *toDeviceFixture {
	t.Helper()
	ctx := context.Background()
	db := dbtest.Open(t)
	t.Cleanup(func() { db.Close() })
	us, err := users.New(ctx, db, users.Config{
		ServerName: "local.test",
		Passwords:  config.Passwords{HashMemoryKiB: 64, HashIterations: 1},
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Migrate(ctx, "syncapi", migrations); err != nil {
		t.Fatal(err)
	}
	log := logrus.New()
	log.SetOutput(io.Discard)
	n := NewNotifier(log, func(context.Context, string) ([]string, error) { return nil, nil })
	t.Cleanup(n.Close)
	td, err := newToDeviceStream(ctx, db, us, n)
	if err != nil {
		t.Fatal(err)
	}
	a, err := us.CreateAccount(ctx, users.NewAccount{Localpart: "alice", Password: "correct horse"})
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range []string{"A1", "A2"} {
		if _, err := us.CreateSession(ctx, users.NewSession{UserID: a.UserID, DeviceID: d}); err != nil {
			t.Fatal(err)
		}
	}
	return &toDeviceFixture{db: db, td: td, alice: a.UserID}
}

// queued is the number of messages waiting for each of alice's devices.
func (f *toDeviceFixture) queued(t *testing.T) map[string]int {
	t.Helper()
	rows, err := f.db.QueryContext(context.Background(), `SELECT device_id, COUNT(*) FROM to_device_messages GROUP BY device_id`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	out := map[string]int{}
	for rows.Next() {
		var d string
		var n int
		if err := rows.Scan(&d, &n); err != nil {
			t.Fatal(err)
		}
		out[d] = n
	}
	return out
}

func TestReceiveRemoteToDevice(t *testing.T) {
	f := newToDeviceFixture(t)
	msg := func(sender, id string, to map[string]map[string]json.RawMessage) gomatrixserverlib.ToDeviceMessage {
		return gomatrixserverlib.ToDeviceMessage{Sender: sender, Type: "m.test", MessageID: id, Messages: to}
	}
	all := map[string]map[string]json.RawMessage{f.alice: {"*": json.RawMessage(`{"n": 1}`)}}
	for _, tc := range []struct {
		name    string
		origin  spec.ServerName
		m       gomatrixserverlib.ToDeviceMessage
		wantErr bool
		want    map[string]int // queued per device after the step
	}{
		{"to every device", "remote.test", msg("@r:remote.test", "m1", all), false, map[string]int{"A1": 1, "A2": 1}},
		{"same message again", "remote.test", msg("@r:remote.test", "m1", all), false, map[string]int{"A1": 1, "A2": 1}},
		{"same ID, other sender", "remote.test", msg("@s:remote.test", "m1", map[string]map[string]json.RawMessage{
			f.alice: {"A1": json.RawMessage(`{}`), "A3": json.RawMessage(`{}`)}}), false, map[string]int{"A1": 2, "A2": 1}},
		{"sender of another server", "remote.test", msg("@r:elsewhere.test", "m2", all), true, map[string]int{"A1": 2, "A2": 1}},
		{"no message ID", "remote.test", msg("@r:remote.test", "", all), true, map[string]int{"A1": 2, "A2": 1}},
		{"not ours, not an object", "remote.test", msg("@r:remote.test", "m3", map[string]map[string]json.RawMessage{
			"@x:other.test": {"*": json.RawMessage(`{}`)}, f.alice: {"A2": json.RawMessage(`[1]`)}}), false, map[string]int{"A1": 2, "A2": 1}},
	} {
		err := f.td.ReceiveRemote(context.Background(), tc.origin, tc.m)
		if (err != nil) != tc.wantErr {
			t.Errorf("%s: error %v, want error %v", tc.name, err, tc.wantErr)
		}
		if got := f.queued(t); !maps.Equal(got, tc.want) {
			t.Errorf("%s: queued %v, want %v", tc.name, got, tc.want)
		}
	}
}

func TestSendRemoteToDevice(t *testing.T) {
	f := newToDeviceFixture(t)
	var (
		mu   sync.Mutex
		sent = map[spec.ServerName][]gomatrixserverlib.ToDeviceMessage{}
	)
	f.td.SetRemoteSender(func(_ context.Context, dest spec.ServerName, m gomatrixserverlib.ToDeviceMessage) error {
		mu.Lock()
		defer mu.Unlock()
		sent[dest] = append(sent[dest], m)
		return nil
	})
	c := json.RawMessage(`{"x": 1}`)
	messages := map[string]map[string]json.RawMessage{
		f.alice:          {"A1": c},
		"@r:a.test":      {"R1": c, "R2": c},
		"@s:a.test":      {"*": c},
		"@t:b.test:8448": {"T": c},
	}
	for range 2 { // the second is a retry: nothing more goes out
		if err := f.td.Send(context.Background(), f.alice, "A2", "txn1", "m.test", messages); err != nil {
			t.Fatal(err)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if got := slices.Sorted(maps.Keys(sent)); !slices.Equal(got, []spec.ServerName{"a.test", "b.test:8448"}) {
		t.Fatalf("sent to %v", got)
	}
	a := sent["a.test"]
	if len(a) != 1 || a[0].Sender != f.alice || a[0].Type != "m.test" || a[0].MessageID == "" ||
		len(a[0].Messages["@r:a.test"]) != 2 || len(a[0].Messages["@s:a.test"]) != 1 || a[0].Messages[f.alice] != nil {
		t.Errorf("a.test got %+v", a)
	}
	if b := sent["b.test:8448"]; len(b) != 1 || b[0].MessageID == a[0].MessageID {
		t.Errorf("b.test got %+v (message IDs must differ per EDU)", b)
	}
	if got := f.queued(t); !maps.Equal(got, map[string]int{"A1": 1}) {
		t.Errorf("local messages queued %v, want one for A1", got)
	}
}

func TestChunkMessages(t *testing.T) {
	big := json.RawMessage(`{"k": "` + strings.Repeat("x", maxEDUMessagesBytes/3) + `"}`)
	huge := json.RawMessage(`{"k": "` + strings.Repeat("x", maxEDUMessagesBytes*2) + `"}`)
	for _, tc := range []struct {
		name     string
		messages map[string]map[string]json.RawMessage
		want     []int // devices per chunk
	}{
		{"small", map[string]map[string]json.RawMessage{"@a:x": {"1": json.RawMessage(`{}`), "2": json.RawMessage(`{}`)}}, []int{2}},
		{"split", map[string]map[string]json.RawMessage{"@a:x": {"1": big, "2": big, "3": big}, "@b:x": {"1": big}}, []int{2, 2}},
		{"one too big goes alone", map[string]map[string]json.RawMessage{"@a:x": {"1": json.RawMessage(`{}`), "2": huge, "3": json.RawMessage(`{}`)}}, []int{1, 1, 1}},
	} {
		users := slices.Sorted(maps.Keys(tc.messages))
		var got []int
		for _, ch := range chunkMessages(users, tc.messages) {
			n := 0
			for _, devs := range ch {
				n += len(devs)
			}
			got = append(got, n)
		}
		if !slices.Equal(got, tc.want) {
			t.Errorf("%s: chunks of %v devices, want %v", tc.name, got, tc.want)
		}
	}
}
