package syncapi

import (
	"context"
	"io"
	"testing"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/tessera-hs/tessera/internal/config"
	"github.com/tessera-hs/tessera/internal/database"
	"github.com/tessera-hs/tessera/internal/database/dbtest"
	"github.com/tessera-hs/tessera/users"
)

// The presence model's timers, with the durations shrunk. The HTTP side
// is tested in clientapi against a real server.

type oneRoom struct{}

func (oneRoom) JoinedRooms(context.Context, string) ([]string, error) {
	return []string{"!r:p.test"}, nil
}

type presenceFixture struct {
	db       *database.DB
	us       *users.Service
	notifier *Notifier
	alice    string
	bob      string
}

func newPresenceFixture(t *testing.T) *presenceFixture {
	t.Helper()
	ctx := context.Background()
	db := dbtest.Open(t)
	t.Cleanup(func() { db.Close() })
	us, err := users.New(ctx, db, users.Config{
		ServerName: "p.test",
		Passwords:  config.Passwords{HashMemoryKiB: 64, HashIterations: 1},
	})
	if err != nil {
		t.Fatal(err)
	}
	f := &presenceFixture{db: db, us: us}
	for _, name := range []string{"alice", "bob"} {
		a, err := us.CreateAccount(ctx, users.NewAccount{Localpart: name, Password: "correct horse"})
		if err != nil {
			t.Fatal(err)
		}
		if name == "alice" {
			f.alice = a.UserID
		} else {
			f.bob = a.UserID
		}
	}
	log := logrus.New()
	log.SetOutput(io.Discard)
	f.notifier = NewNotifier(log, func(context.Context, string) ([]string, error) {
		return []string{f.alice, f.bob}, nil
	})
	t.Cleanup(f.notifier.Close)
	return f
}

func (f *presenceFixture) start(t *testing.T, timing presenceTiming) *Presence {
	t.Helper()
	p := newPresenceStream(f.us, oneRoom{}, f.notifier)
	p.timing = timing
	if err := p.Start(context.Background(), true); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Stop)
	return p
}

func (f *presenceFixture) pos(t *testing.T) int64 {
	t.Helper()
	pos, err := f.us.PresencePos(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return pos
}

func get(t *testing.T, p *Presence, userID string) map[string]any {
	t.Helper()
	c, err := p.Get(context.Background(), userID, userID)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// eventually waits up to 3 s for cond.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(3 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestPresenceSyncingThenGone(t *testing.T) {
	t.Parallel()
	f := newPresenceFixture(t)
	p := f.start(t, presenceTiming{active: 150 * time.Millisecond, idle: 10 * time.Second, gone: 400 * time.Millisecond})
	ctx := context.Background()
	if err := p.Set(ctx, f.alice, "online", "at work"); err != nil {
		t.Fatal(err)
	}
	before := f.pos(t)

	// Syncs while active publish nothing new: no write per sync.
	done1 := p.Syncing(ctx, f.alice, "")
	done2 := p.Syncing(ctx, f.alice, "online")
	if c := get(t, p, f.alice); c["presence"] != "online" || c["currently_active"] != true || c["status_msg"] != "at work" {
		t.Fatalf("while syncing: %v", c)
	}
	if got := f.pos(t); got != before {
		t.Fatalf("syncs while currently active published (position %d -> %d)", before, got)
	}

	woken := f.notifier.Changed(f.bob)
	done1()
	done2()
	done2() // a second call is harmless
	// A minute (here 150 ms) after the last activity: no longer currently
	// active, which is news; bob hears of it.
	eventually(t, "currently_active to end", func() bool { return get(t, p, f.alice)["currently_active"] == false })
	select {
	case <-woken:
	case <-time.After(2 * time.Second):
		t.Fatal("the change did not wake bob")
	}
	eventually(t, "currently_active false to be published", func() bool { return f.pos(t) == before+1 })
	// Half a minute (here 400 ms) after the last sync ended: offline, and
	// the status message is gone.
	eventually(t, "offline", func() bool { return get(t, p, f.alice)["presence"] == "offline" })
	c := get(t, p, f.alice)
	if c["status_msg"] != nil || c["currently_active"] != nil || c["last_active_ago"] == nil {
		t.Fatalf("offline: %v", c)
	}
	if got := f.pos(t); got != before+2 {
		t.Fatalf("position %d, want %d (one change for currently_active, one for offline)", got, before+2)
	}
	// Nothing more is due: the live state is dropped.
	p.mu.Lock()
	_, live := p.live[f.alice]
	p.mu.Unlock()
	if live {
		t.Fatal("an offline user who is not syncing is still kept in memory")
	}
}

func TestPresenceIdleAndBack(t *testing.T) {
	t.Parallel()
	f := newPresenceFixture(t)
	p := f.start(t, presenceTiming{active: 100 * time.Millisecond, idle: 300 * time.Millisecond, gone: time.Minute})
	ctx := context.Background()
	done := p.Syncing(ctx, f.alice, "")
	defer done()
	// Still syncing (one long-poll), but inactive: idle after 300 ms.
	eventually(t, "unavailable", func() bool { return get(t, p, f.alice)["presence"] == "unavailable" })
	// Activity makes the user online and currently active again.
	if err := p.Active(ctx, f.alice); err != nil {
		t.Fatal(err)
	}
	if c := get(t, p, f.alice); c["presence"] != "online" || c["currently_active"] != true {
		t.Fatalf("after activity: %v", c)
	}
	// set_presence=unavailable on a sync marks the user idle at once.
	d2 := p.Syncing(ctx, f.alice, "unavailable")
	d2()
	if c := get(t, p, f.alice); c["presence"] != "unavailable" {
		t.Fatalf("after a sync with set_presence=unavailable: %v", c)
	}
}

func TestPresenceRestoredAfterRestart(t *testing.T) {
	t.Parallel()
	f := newPresenceFixture(t)
	ctx := context.Background()
	first := f.start(t, presenceTiming{active: time.Minute, idle: time.Hour, gone: time.Hour})
	if err := first.Set(ctx, f.alice, "online", "hello"); err != nil {
		t.Fatal(err)
	}
	first.Stop()
	// Stopped: changes are ignored and nothing fires.
	if err := first.Set(ctx, f.alice, "unavailable", ""); err != nil {
		t.Fatal(err)
	}

	second := f.start(t, presenceTiming{active: time.Minute, idle: time.Hour, gone: 300 * time.Millisecond})
	if c := get(t, second, f.alice); c["presence"] != "online" || c["status_msg"] != "hello" {
		t.Fatalf("after a restart: %v", c)
	}
	// Nobody syncs: offline once the gone time has passed since start-up.
	eventually(t, "offline after the restart", func() bool { return get(t, second, f.alice)["presence"] == "offline" })
}

func TestPresenceNewsworthy(t *testing.T) {
	t.Parallel()
	p := &Presence{timing: presenceTiming{active: time.Minute}}
	const now = 10_000_000
	online := users.PresenceState{Presence: "online", LastActiveTS: now - 1000, CurrentlyActive: true}
	for _, tc := range []struct {
		name string
		pub  users.PresenceState
		next func(users.PresenceState) users.PresenceState
		want bool
	}{
		{"same", online, func(s users.PresenceState) users.PresenceState { return s }, false},
		{"active bump", online, func(s users.PresenceState) users.PresenceState { s.LastActiveTS = now; return s }, false},
		{"status", online, func(s users.PresenceState) users.PresenceState { s.StatusMsg = "x"; return s }, true},
		{"state", online, func(s users.PresenceState) users.PresenceState { s.Presence = "unavailable"; return s }, true},
		{"active ends", online, func(s users.PresenceState) users.PresenceState { s.LastActiveTS = now - 61_000; return s }, true},
		{"offline bump", users.PresenceState{Presence: "offline"},
			func(s users.PresenceState) users.PresenceState { s.LastActiveTS = now; return s }, true},
		{"offline small bump", users.PresenceState{Presence: "offline", LastActiveTS: now - 1000},
			func(s users.PresenceState) users.PresenceState { s.LastActiveTS = now; return s }, false},
	} {
		if got := p.newsworthy(tc.pub, tc.next(tc.pub), now); got != tc.want {
			t.Errorf("%s: newsworthy = %v, want %v", tc.name, got, tc.want)
		}
	}
}

func TestGlobMatch(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		pattern, s string
		want       bool
	}{
		{"*", "m.presence", true},
		{"m.*", "m.presence", true},
		{"m.presence", "m.presence", true},
		{"m.typing", "m.presence", false},
		{"*.presence", "m.presence", true},
		{"m.*e", "m.presence", true},
		{"m.*x", "m.presence", false},
		{"m*p*e", "m.presence", true},
		{"m.pre*presence", "m.presence", false},
	} {
		if got := globMatch(tc.pattern, tc.s); got != tc.want {
			t.Errorf("globMatch(%q, %q) = %v, want %v", tc.pattern, tc.s, got, tc.want)
		}
	}
}
