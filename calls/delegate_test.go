package calls

// Unit tests of the delegated leave jobs' state machine, with the delayed
// events service and the SFU's presence answers stood in for. The real
// thing, end to end, is clientapi's TestCallsDelegateDelayedLeave.

import (
	"context"
	"errors"
	"io"
	"sync"
	"testing"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/tessera-hs/tessera/delayed"
	"github.com/tessera-hs/tessera/internal/mxerr"
)

// fakeEvents records Update calls per delay ID; IDs in gone answer
// M_NOT_FOUND, as for an event the client cancelled or sent.
type fakeEvents struct {
	mu    sync.Mutex
	calls map[string][]delayed.Action
	gone  map[string]bool
}

func newFakeEvents() *fakeEvents {
	return &fakeEvents{calls: map[string][]delayed.Action{}, gone: map[string]bool{}}
}

func (f *fakeEvents) Update(_ context.Context, userID, delayID string, action delayed.Action) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls[delayID] = append(f.calls[delayID], action)
	if f.gone[delayID] {
		return mxerr.NotFound("Delayed event not found")
	}
	if action == delayed.SendNow {
		f.gone[delayID] = true
	}
	return nil
}

// Scheduled is not used: these tests start jobs directly (Start); the
// clientapi tests cover Delegate against the real service.
func (f *fakeEvents) Scheduled(context.Context, string, delayed.ListFilter) ([]delayed.Scheduled, error) {
	return nil, nil
}

func (f *fakeEvents) count(delayID string, action delayed.Action) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	n := 0
	for _, a := range f.calls[delayID] {
		if a == action {
			n++
		}
	}
	return n
}

func (f *fakeEvents) setGone(delayID string) {
	f.mu.Lock()
	f.gone[delayID] = true
	f.mu.Unlock()
}

// fakeSFU answers presence per identity: from script first, one answer
// per check, then from present.
type fakeSFU struct {
	mu      sync.Mutex
	present map[string]bool
	script  map[string][]bool
	err     error
}

func (s *fakeSFU) play(identity string, answers ...bool) {
	s.mu.Lock()
	s.script[identity] = append(s.script[identity], answers...)
	s.mu.Unlock()
}

func (s *fakeSFU) played(identity string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.script[identity]) == 0
}

func (s *fakeSFU) set(identity string, present bool) {
	s.mu.Lock()
	s.present[identity] = present
	s.mu.Unlock()
}

func (s *fakeSFU) setErr(err error) {
	s.mu.Lock()
	s.err = err
	s.mu.Unlock()
}

func (s *fakeSFU) check(_ context.Context, _, identity string) (bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if sc := s.script[identity]; len(sc) > 0 {
		s.script[identity] = sc[1:]
		return sc[0], nil
	}
	return s.present[identity], s.err
}

const testPoll = 10 * time.Millisecond

func newTestDelegations(t *testing.T, connectTimeout time.Duration) (*Delegations, *fakeEvents, *fakeSFU) {
	t.Helper()
	log := logrus.New()
	log.SetOutput(io.Discard)
	ev := newFakeEvents()
	sfu := &fakeSFU{present: map[string]bool{}, script: map[string][]bool{}}
	d := NewDelegations(DelegationConfig{PollInterval: testPoll, ConnectTimeout: connectTimeout}, ev, log)
	d.present = sfu.check
	t.Cleanup(d.Close)
	return d, ev, sfu
}

func (d *Delegations) jobCount() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return len(d.byMember)
}

// eventually polls cond for up to 5 s.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting until %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func testDelegation(member, delayID string) Delegation {
	return Delegation{UserID: "@a:x", RoomID: "!r:x", SlotID: "m.call#ROOM", MemberID: member, DelayID: delayID,
		Delay: 300 * time.Millisecond}
}

func TestDelegateRestartsThenSendsWhenGone(t *testing.T) {
	d, ev, sfu := newTestDelegations(t, time.Minute)
	id := MemberIdentity("@a:x", "m1")
	if err := d.Start(testDelegation("m1", "d1")); err != nil {
		t.Fatal(err)
	}
	// Waiting for the participant: restarted at once and every 250 ms.
	eventually(t, "restarted while waiting", func() bool { return ev.count("d1", delayed.Restart) >= 2 })
	sfu.set(id, true)
	n := ev.count("d1", delayed.Restart)
	eventually(t, "restarted while connected", func() bool { return ev.count("d1", delayed.Restart) >= n+2 })
	if ev.count("d1", delayed.SendNow) != 0 {
		t.Fatal("sent while connected")
	}
	sfu.set(id, false)
	eventually(t, "sent once gone", func() bool { return ev.count("d1", delayed.SendNow) == 1 })
	eventually(t, "job ended", func() bool { return d.jobCount() == 0 })
}

// A participant missing from one poll only (a full reconnect) is not
// taken for gone.
func TestDelegateToleratesOneAbsentPoll(t *testing.T) {
	d, ev, sfu := newTestDelegations(t, time.Minute)
	id := MemberIdentity("@a:x", "m1")
	sfu.set(id, true)
	sfu.play(id, true, false, true, false, true)
	if err := d.Start(testDelegation("m1", "d1")); err != nil {
		t.Fatal(err)
	}
	eventually(t, "script played", func() bool { return sfu.played(id) })
	time.Sleep(5 * testPoll)
	if n := ev.count("d1", delayed.SendNow); n != 0 || d.jobCount() != 1 {
		t.Fatalf("after single absent polls: %d sends, %d jobs", n, d.jobCount())
	}
	sfu.play(id, false, false)
	eventually(t, "sent after two absent polls", func() bool { return ev.count("d1", delayed.SendNow) == 1 })
}

func TestDelegateGivesUpWaiting(t *testing.T) {
	d, ev, _ := newTestDelegations(t, 100*time.Millisecond)
	if err := d.Start(testDelegation("m1", "d1")); err != nil {
		t.Fatal(err)
	}
	eventually(t, "job ended", func() bool { return d.jobCount() == 0 })
	n := ev.count("d1", delayed.Restart)
	time.Sleep(400 * time.Millisecond)
	if got := ev.count("d1", delayed.Restart); got != n || ev.count("d1", delayed.SendNow) != 0 {
		t.Fatalf("after giving up: %d restarts (was %d), %d sends", got, n, ev.count("d1", delayed.SendNow))
	}
}

func TestDelegateEndsWhenEventGone(t *testing.T) {
	d, ev, sfu := newTestDelegations(t, time.Minute)
	sfu.set(MemberIdentity("@a:x", "m1"), true)
	if err := d.Start(testDelegation("m1", "d1")); err != nil {
		t.Fatal(err)
	}
	eventually(t, "restarted", func() bool { return ev.count("d1", delayed.Restart) >= 2 })
	ev.setGone("d1") // the client cancelled it
	eventually(t, "job ended", func() bool { return d.jobCount() == 0 })
	if ev.count("d1", delayed.SendNow) != 0 {
		t.Fatal("sent an event the client had cancelled")
	}
}

func TestDelegateReplaced(t *testing.T) {
	d, ev, sfu := newTestDelegations(t, time.Minute)
	sfu.set(MemberIdentity("@a:x", "m1"), true)
	sfu.set(MemberIdentity("@a:x", "m2"), true)
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(d.Start(testDelegation("m1", "d1")))
	eventually(t, "d1 restarted", func() bool { return ev.count("d1", delayed.Restart) >= 1 })
	// The same member with another delayed event replaces the job.
	must(d.Start(testDelegation("m1", "d2")))
	eventually(t, "d2 restarted", func() bool { return ev.count("d2", delayed.Restart) >= 1 })
	n1 := ev.count("d1", delayed.Restart)
	time.Sleep(700 * time.Millisecond)
	if got := ev.count("d1", delayed.Restart); got != n1 {
		t.Fatalf("replaced job still restarts d1: %d → %d", n1, got)
	}
	if got := ev.count("d2", delayed.Restart); got < 3 {
		t.Fatalf("d2 restarted %d times in 700ms, want >= 3", got)
	}
	// The same delayed event for another member replaces it too.
	must(d.Start(testDelegation("m2", "d2")))
	eventually(t, "one job", func() bool { return d.jobCount() == 1 })
	// Leaving as m1 no longer matters; leaving as m2 sends d2.
	sfu.set(MemberIdentity("@a:x", "m1"), false)
	time.Sleep(100 * time.Millisecond)
	if ev.count("d2", delayed.SendNow) != 0 {
		t.Fatal("m1 leaving sent d2, which m2 now holds")
	}
	sfu.set(MemberIdentity("@a:x", "m2"), false)
	eventually(t, "d2 sent", func() bool { return ev.count("d2", delayed.SendNow) == 1 })
	if ev.count("d1", delayed.SendNow) != 0 {
		t.Fatal("replaced d1 was sent")
	}
}

func TestDelegateStopsRestartingWhileSFUUnreachable(t *testing.T) {
	d, ev, sfu := newTestDelegations(t, time.Minute)
	sfu.set(MemberIdentity("@a:x", "m1"), true)
	if err := d.Start(testDelegation("m1", "d1")); err != nil {
		t.Fatal(err)
	}
	eventually(t, "restarted", func() bool { return ev.count("d1", delayed.Restart) >= 2 })
	sfu.setErr(errors.New("connection refused"))
	time.Sleep(50 * time.Millisecond) // a poll sees the error
	n := ev.count("d1", delayed.Restart)
	// Unreachable for longer than the delay: the job ends without
	// restarting, so the event fires on its own.
	eventually(t, "job ended", func() bool { return d.jobCount() == 0 })
	if got := ev.count("d1", delayed.Restart); got != n || ev.count("d1", delayed.SendNow) != 0 {
		t.Fatalf("while the SFU was unreachable: %d restarts (was %d), %d sends", got, n, ev.count("d1", delayed.SendNow))
	}
}

func TestDelegateClose(t *testing.T) {
	d, ev, sfu := newTestDelegations(t, time.Minute)
	sfu.set(MemberIdentity("@a:x", "m1"), true)
	for _, m := range []string{"m1", "m2", "m3"} {
		if err := d.Start(testDelegation(m, "d"+m)); err != nil {
			t.Fatal(err)
		}
	}
	eventually(t, "restarted", func() bool { return ev.count("dm3", delayed.Restart) >= 1 })
	d.Close()
	if n := d.jobCount(); n != 0 {
		t.Fatalf("%d jobs after Close", n)
	}
	n := ev.count("dm1", delayed.Restart)
	time.Sleep(300 * time.Millisecond)
	if got := ev.count("dm1", delayed.Restart); got != n || ev.count("dm1", delayed.SendNow) != 0 {
		t.Fatal("a job acted after Close")
	}
	if err := d.Start(testDelegation("m1", "dm1")); !errors.Is(err, ErrDelegationsClosed) {
		t.Fatalf("Start after Close = %v", err)
	}
}

func TestRestartInterval(t *testing.T) {
	for _, c := range []struct{ delay, want time.Duration }{
		{6 * time.Second, 2 * time.Second},
		{10 * time.Millisecond, minRestartInterval},
		{24 * time.Hour, maxRestartInterval},
	} {
		if got := restartInterval(c.delay); got != c.want {
			t.Errorf("restartInterval(%v) = %v, want %v", c.delay, got, c.want)
		}
	}
}
