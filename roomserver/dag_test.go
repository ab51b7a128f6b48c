package roomserver

import (
	"context"
	"crypto/ed25519"
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/sirupsen/logrus"

	"github.com/tessera-hs/tessera/internal/database"
	"github.com/tessera-hs/tessera/internal/database/dbtest"
)

// dagProfiles says every user exists and has no profile.
type dagProfiles struct{}

func (dagProfiles) MemberProfile(context.Context, string) (string, string, error) {
	return "", "", nil
}
func (dagProfiles) Exists(context.Context, string) (bool, error) { return true, nil }

// dagStart opens the database of store and starts a room server on it.
func dagStart(t *testing.T, store *dbtest.Store, key ed25519.PrivateKey) (*Service, *database.DB) {
	t.Helper()
	db := store.Open(t)
	log := logrus.New()
	log.SetOutput(io.Discard)
	s, err := New(context.Background(), db, Config{ServerName: "dag.test", KeyID: "ed25519:test", PrivateKey: key}, dagProfiles{}, log)
	if err != nil {
		db.Close()
		t.Fatalf("start room server: %v", err)
	}
	return s, db
}

// TestConcurrentSendsMakeALinearDAG has 50 users send 20 messages each at
// once into one room, stops the room server, and reads the database: the
// room's events must form one chain (depths 1..N in stream order, each
// event's only prev_event the event before it) with one forward
// extremity. A second run on the same database, after a restart, must
// continue the same chain.
func TestConcurrentSendsMakeALinearDAG(t *testing.T) {
	const senders, perSender = 50, 20
	ctx := context.Background()
	store := dbtest.New(t)
	_, key, err := ed25519.GenerateKey(nil)
	if err != nil {
		t.Fatal(err)
	}
	users := make([]string, senders)
	for i := range users {
		users[i] = fmt.Sprintf("@user%02d:dag.test", i)
	}

	s, db := dagStart(t, store, key)
	roomID, err := s.CreateRoom(ctx, "@creator:dag.test", CreateRoomRequest{Preset: "public_chat"})
	if err != nil {
		t.Fatalf("create room: %v", err)
	}
	send := func(s *Service, round int) map[string]bool {
		t.Helper()
		var mu sync.Mutex
		acked := map[string]bool{}
		var wg sync.WaitGroup
		errs := make(chan error, senders)
		for i, u := range users {
			wg.Add(1)
			go func() {
				defer wg.Done()
				if round == 0 {
					if _, err := s.Join(ctx, u, roomID, nil); err != nil {
						errs <- fmt.Errorf("join %s: %w", u, err)
						return
					}
				}
				for j := range perSender {
					content, _ := json.Marshal(map[string]any{"msgtype": "m.text", "body": fmt.Sprintf("%d %d %d", round, i, j)})
					ev, err := s.Send(ctx, SendRequest{RoomID: roomID, Sender: u, Type: "m.room.message", Content: content,
						Txn: &TxnKey{UserID: u, DeviceID: "D", Endpoint: "send/" + roomID, TxnID: fmt.Sprintf("%d-%d", round, j)}})
					if err != nil {
						errs <- fmt.Errorf("send %s %d: %w", u, j, err)
						return
					}
					mu.Lock()
					acked[ev.EventID()] = true
					mu.Unlock()
				}
			}()
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Fatal(err)
		}
		if len(acked) != senders*perSender {
			t.Fatalf("%d distinct events acknowledged, want %d", len(acked), senders*perSender)
		}
		return acked
	}
	acked := send(s, 0)
	s.Close()
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	// create, creator's join, power levels, join rules, history
	// visibility, guest access; the joins; the messages.
	ids := dagCheckLinear(t, store, roomID, 6+senders+senders*perSender)
	for id := range acked {
		if !slices.Contains(ids, id) {
			t.Fatalf("acknowledged event %s is not in the database", id)
		}
	}

	// Restart on the same database and send again.
	s, db = dagStart(t, store, key)
	acked2 := send(s, 1)
	s.Close()
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	ids2 := dagCheckLinear(t, store, roomID, len(ids)+senders*perSender)
	if !slices.Equal(ids2[:len(ids)], ids) {
		t.Fatalf("the restart changed the events written before it")
	}
	for id := range acked2 {
		if !slices.Contains(ids2[len(ids):], id) {
			t.Fatalf("acknowledged event %s is not after the restart's first event", id)
		}
	}
}

// dagCheckLinear opens the database of store and checks that the room is
// one chain of exactly want events; it returns their IDs in order.
func dagCheckLinear(t *testing.T, store *dbtest.Store, roomID string, want int) []string {
	t.Helper()
	ctx := context.Background()
	db := store.Open(t)
	defer db.Close()
	var ids []string
	rows, err := db.QueryContext(ctx, `SELECT event_id, depth, json FROM events WHERE room_id = $1 ORDER BY stream_pos`, roomID)
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var id, js string
		var depth int64
		if err := rows.Scan(&id, &depth, &js); err != nil {
			t.Fatal(err)
		}
		ids = append(ids, id)
		if depth != int64(len(ids)) {
			t.Fatalf("event %d (%s) has depth %d", len(ids), id, depth)
		}
		// The signed event says the same as the columns.
		pdu, err := gomatrixserverlib.MustGetRoomVersion(gomatrixserverlib.RoomVersionV12).NewEventFromTrustedJSONWithEventID(id, []byte(js), false)
		if err != nil {
			t.Fatalf("stored event %s: %v", id, err)
		}
		var wantPrev []string
		if len(ids) > 1 {
			wantPrev = []string{ids[len(ids)-2]}
		}
		if pdu.Depth() != depth || !slices.Equal(pdu.PrevEventIDs(), wantPrev) {
			t.Fatalf("event %d (%s): signed depth %d prev_events %v, want %d %v", len(ids), id, pdu.Depth(), pdu.PrevEventIDs(), depth, wantPrev)
		}
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	rows.Close()
	if len(ids) != want {
		t.Fatalf("%d events in the room, want %d", len(ids), want)
	}

	edges := map[string][]string{}
	rows, err = db.QueryContext(ctx, `SELECT ed.event_id, ed.prev_event_id FROM event_edges ed
		JOIN events e ON e.event_id = ed.event_id WHERE e.room_id = $1`, roomID)
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var id, prev string
		if err := rows.Scan(&id, &prev); err != nil {
			t.Fatal(err)
		}
		edges[id] = append(edges[id], prev)
	}
	rows.Close()
	for i, id := range ids {
		var wantPrev []string
		if i > 0 {
			wantPrev = []string{ids[i-1]}
		}
		if !slices.Equal(edges[id], wantPrev) {
			t.Fatalf("event_edges of event %d (%s) = %v, want %v", i+1, id, edges[id], wantPrev)
		}
	}

	var extremities []string
	rows, err = db.QueryContext(ctx, `SELECT event_id FROM forward_extremities WHERE room_id = $1`, roomID)
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			t.Fatal(err)
		}
		extremities = append(extremities, id)
	}
	rows.Close()
	if !slices.Equal(extremities, []string{ids[len(ids)-1]}) {
		t.Fatalf("forward extremities %v, want only the newest event %s", extremities, ids[len(ids)-1])
	}
	return ids
}

// TestIdleSequencersRetire: a room's sequencer retires when idle (its
// goroutine and in-memory state go) and a new one takes over with the next
// request, racing requests included: every acknowledged event is in one
// linear chain.
func TestIdleSequencersRetire(t *testing.T) {
	ctx := context.Background()
	store := dbtest.New(t)
	_, key, err := ed25519.GenerateKey(nil)
	if err != nil {
		t.Fatal(err)
	}
	s, db := dagStart(t, store, key)
	s.idleTimeout = 5 * time.Millisecond
	roomID, err := s.CreateRoom(ctx, "@creator:dag.test", CreateRoomRequest{Preset: "public_chat"})
	if err != nil {
		t.Fatal(err)
	}
	const senders, rounds = 8, 12
	acked := 0
	for round := range rounds {
		var wg sync.WaitGroup
		var mu sync.Mutex
		for i := range senders {
			wg.Go(func() {
				content, _ := json.Marshal(map[string]any{"msgtype": "m.text", "body": fmt.Sprintf("%d %d", round, i)})
				if _, err := s.Send(ctx, SendRequest{RoomID: roomID, Sender: "@creator:dag.test", Type: "m.room.message", Content: content}); err != nil {
					t.Error(err)
					return
				}
				mu.Lock()
				acked++
				mu.Unlock()
			})
			if i%3 == 0 {
				time.Sleep(time.Duration(round%4) * 2 * time.Millisecond) // around the idle timeout
			}
		}
		wg.Wait()
		time.Sleep(time.Duration(round%3) * 5 * time.Millisecond)
	}
	// Idle now: the sequencer goes.
	deadline := time.Now().Add(5 * time.Second)
	for {
		s.mu.Lock()
		n := len(s.rooms)
		s.mu.Unlock()
		if n == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d sequencers still running while idle", n)
		}
		time.Sleep(5 * time.Millisecond)
	}
	s.Close()
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	dagCheckLinear(t, store, roomID, 6+acked)
	if acked != senders*rounds {
		t.Fatalf("%d sends acknowledged, want %d", acked, senders*rounds)
	}
}
