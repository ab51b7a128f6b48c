package delayed

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/tessera-hs/tessera/internal/database"
	"github.com/tessera-hs/tessera/internal/mxerr"
	"github.com/tessera-hs/tessera/roomserver"
)

// fakeRooms records sends; everyone is joined to "!room:t".
type fakeRooms struct {
	mu   sync.Mutex
	sent []roomserver.SendRequest
	ch   chan roomserver.SendRequest
}

func (f *fakeRooms) Send(_ context.Context, req roomserver.SendRequest) (*roomserver.Event, error) {
	f.mu.Lock()
	f.sent = append(f.sent, req)
	f.mu.Unlock()
	f.ch <- req
	return nil, mxerr.Forbidden("fake room server sends nothing")
}

func (f *fakeRooms) Membership(_ context.Context, roomID, _ string) (string, error) {
	if roomID == "!room:t" {
		return "join", nil
	}
	return "", nil
}

func newTestService(t *testing.T, dir string, cfg Config) (*Service, *fakeRooms) {
	t.Helper()
	ctx := context.Background()
	db, err := database.Open(filepath.Join(dir, "db.sqlite"), database.Options{})
	if err != nil {
		t.Fatalf("open: %v", err)
	}
	rooms := &fakeRooms{ch: make(chan roomserver.SendRequest, 16)}
	log := logrus.New()
	log.SetOutput(io.Discard)
	s, err := New(ctx, db, rooms, cfg, log)
	if err != nil {
		t.Fatalf("new: %v", err)
	}
	if err := s.Start(ctx); err != nil {
		t.Fatalf("start: %v", err)
	}
	t.Cleanup(func() { s.Stop(); db.Close() })
	return s, rooms
}

func msg(delay time.Duration) ScheduleRequest {
	return ScheduleRequest{UserID: "@a:t", DeviceID: "D", RoomID: "!room:t", Type: "m.room.message",
		Content: json.RawMessage(`{"body":"hi"}`), Delay: delay}
}

func waitSend(t *testing.T, rooms *fakeRooms, within time.Duration) roomserver.SendRequest {
	t.Helper()
	select {
	case r := <-rooms.ch:
		return r
	case <-time.After(within):
		t.Fatalf("no send within %v", within)
		return roomserver.SendRequest{}
	}
}

func noSend(t *testing.T, rooms *fakeRooms, within time.Duration) {
	t.Helper()
	select {
	case r := <-rooms.ch:
		t.Fatalf("unexpected send: %+v", r)
	case <-time.After(within):
	}
}

func TestScheduleErrors(t *testing.T) {
	s, _ := newTestService(t, t.TempDir(), Config{MaxDelay: time.Second, MaxPerUser: 2})
	ctx := context.Background()
	tests := []struct {
		name    string
		mutate  func(*ScheduleRequest)
		status  int
		errcode string
		unstab  string
	}{
		{"too long", func(r *ScheduleRequest) { r.Delay = 2 * time.Second }, 400, "M_UNKNOWN", "M_MAX_DELAY_EXCEEDED"},
		{"negative", func(r *ScheduleRequest) { r.Delay = -1 }, 400, "M_INVALID_PARAM", ""},
		{"not joined", func(r *ScheduleRequest) { r.RoomID = "!other:t" }, 403, "M_FORBIDDEN", ""},
		{"redaction", func(r *ScheduleRequest) { r.Type = "m.room.redaction" }, 400, "M_INVALID_PARAM", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req := msg(500 * time.Millisecond)
			tt.mutate(&req)
			_, err := s.Schedule(ctx, req)
			mx, ok := mxerr.As(err)
			if !ok || mx.Status != tt.status || mx.Code != tt.errcode {
				t.Fatalf("err = %v, want %d %s", err, tt.status, tt.errcode)
			}
			if got, _ := mx.Body()["org.matrix.msc4140.errcode"].(string); got != tt.unstab {
				t.Fatalf("org.matrix.msc4140.errcode = %q, want %q", got, tt.unstab)
			}
		})
	}
	// The per-user limit counts scheduled events only.
	for i := range 2 {
		if _, err := s.Schedule(ctx, msg(time.Second)); err != nil {
			t.Fatalf("schedule %d: %v", i, err)
		}
	}
	_, err := s.Schedule(ctx, msg(time.Second))
	if mx, ok := mxerr.As(err); !ok || mx.Status != http.StatusBadRequest || mx.Body()["org.matrix.msc4140.errcode"] != "M_MAX_DELAY_UNSUPPORTED" {
		t.Fatalf("over the limit: %v", err)
	}
}

func TestActions(t *testing.T) {
	s, rooms := newTestService(t, t.TempDir(), Config{MaxDelay: time.Minute})
	ctx := context.Background()

	// A retried transaction gets the same delay_id.
	// The delay is long beside the sleeps so that a loaded machine, whose
	// sleeps overshoot, does not see it fire before the restart.
	req := msg(1500 * time.Millisecond)
	req.TxnKey = "send/x/1"
	id1, err := s.Schedule(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	if id2, err := s.Schedule(ctx, req); err != nil || id2 != id1 {
		t.Fatalf("retry: %q, %v; want %q", id2, err, id1)
	}

	// Restart postpones: not sent at the first deadline, sent after.
	time.Sleep(1000 * time.Millisecond)
	if err := s.Update(ctx, "@a:t", id1, Restart); err != nil {
		t.Fatalf("restart: %v", err)
	}
	noSend(t, rooms, 1000*time.Millisecond) // past the first deadline
	waitSend(t, rooms, 3*time.Second)

	tests := []struct {
		name   string
		user   string
		action Action
		code   string
	}{
		{"other user's", "@b:t", Cancel, "M_NOT_FOUND"},
		{"other user's send", "@b:t", SendNow, "M_NOT_FOUND"},
		{"bad action", "@a:t", "explode", "M_INVALID_PARAM"},
		{"cancel", "@a:t", Cancel, ""},
		{"after cancel", "@a:t", Restart, "M_NOT_FOUND"},
	}
	id, err := s.Schedule(ctx, msg(time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range tests {
		err := s.Update(ctx, tt.user, id, tt.action)
		if tt.code == "" {
			if err != nil {
				t.Fatalf("%s: %v", tt.name, err)
			}
		} else if mx, ok := mxerr.As(err); !ok || mx.Code != tt.code {
			t.Fatalf("%s: err = %v, want %s", tt.name, err, tt.code)
		}
	}
	noSend(t, rooms, 100*time.Millisecond)

	// Send fires now; the room server's refusal is the outcome.
	id, err = s.Schedule(ctx, msg(time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Update(ctx, "@a:t", id, SendNow); err == nil {
		t.Fatal("send: want the room server's error")
	}
	waitSend(t, rooms, time.Second)
	fin, err := s.Finalised(ctx, "@a:t", ListFilter{DelayIDs: []string{id}})
	if err != nil || len(fin) != 1 || fin[0].Outcome != "send" || fin[0].Reason != "error" || len(fin[0].Error) == 0 {
		t.Fatalf("finalised = %+v, %v", fin, err)
	}
	if sched, err := s.Scheduled(ctx, "@a:t", ListFilter{}); err != nil || len(sched) != 0 {
		t.Fatalf("scheduled = %+v, %v", sched, err)
	}
}

func TestStateChangedCancelsOthers(t *testing.T) {
	s, rooms := newTestService(t, t.TempDir(), Config{MaxDelay: time.Minute})
	ctx := context.Background()
	key := "_@a:t_D"
	for _, user := range []string{"@a:t", "@b:t"} {
		req := msg(200 * time.Millisecond)
		req.UserID, req.Type, req.StateKey = user, "org.matrix.msc3401.call.member", &key
		if _, err := s.Schedule(ctx, req); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.StateChanged(ctx, "!room:t", "org.matrix.msc3401.call.member", key, "@a:t"); err != nil {
		t.Fatal(err)
	}
	if got := waitSend(t, rooms, time.Second); got.Sender != "@a:t" {
		t.Fatalf("sent by %s, want @a:t (b's was overwritten)", got.Sender)
	}
	noSend(t, rooms, 300*time.Millisecond)
}

func TestSurvivesRestart(t *testing.T) {
	dir := t.TempDir()
	ctx := context.Background()
	s, _ := newTestService(t, dir, Config{MaxDelay: time.Minute})
	if _, err := s.Schedule(ctx, msg(100*time.Millisecond)); err != nil {
		t.Fatal(err)
	}
	s.Stop()
	time.Sleep(200 * time.Millisecond) // overdue while "down"
	_, rooms := newTestService(t, dir, Config{MaxDelay: time.Minute})
	if got := waitSend(t, rooms, time.Second); string(got.Content) != `{"body":"hi"}` {
		t.Fatalf("content = %s", got.Content)
	}
}
