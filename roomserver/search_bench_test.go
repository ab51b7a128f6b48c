package roomserver

import (
	"context"
	"crypto/ed25519"
	"encoding/json"
	"fmt"
	"io"
	"path/filepath"
	"sync"
	"testing"

	"github.com/sirupsen/logrus"

	"github.com/tessera-hs/tessera/internal/database"
)

// benchService starts a room server on a fresh database for benchmarks.
func benchService(b *testing.B) *Service {
	b.Helper()
	_, key, _ := ed25519.GenerateKey(nil)
	db, err := database.Open(filepath.Join(b.TempDir(), "rooms.db"), database.Options{})
	if err != nil {
		b.Fatal(err)
	}
	log := logrus.New()
	log.SetOutput(io.Discard)
	s, err := New(context.Background(), db, Config{ServerName: "bench.test", KeyID: "ed25519:test", PrivateKey: key, DefaultRoomVersion: "12"}, dagProfiles{}, log)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		s.Close()
		db.Close()
	})
	return s
}

var benchWords = []string{"apple", "banana", "cherry", "damson", "elder", "fig", "grape", "hazel", "ivy", "juniper",
	"kiwi", "lemon", "mango", "nectarine", "olive", "peach", "quince", "raspberry", "sloe", "tangerine"}

// benchBody is a message of a dozen words from a small vocabulary, so
// that a one-word query matches a good share of the events.
func benchBody(i int) json.RawMessage {
	text := ""
	for j := 0; j < 12; j++ {
		text += benchWords[(i*7+j*13+i/3)%len(benchWords)] + " "
	}
	text += fmt.Sprintf("message number %d", i)
	js, _ := json.Marshal(map[string]string{"msgtype": "m.text", "body": text})
	return js
}

// BenchmarkSearchIndexCost sends messages one at a time through the
// committer, as m.room.message (indexed) and as a custom type with the
// same content (not indexed): the difference is what the index costs each
// commit.
func BenchmarkSearchIndexCost(b *testing.B) {
	for _, typ := range []string{"m.room.message", "org.example.unindexed"} {
		b.Run(typ, func(b *testing.B) {
			s := benchService(b)
			ctx := context.Background()
			const alice = "@alice:bench.test"
			roomID, err := s.CreateRoom(ctx, alice, CreateRoomRequest{Preset: "public_chat", RoomVersion: ptrTo("12")})
			if err != nil {
				b.Fatal(err)
			}
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				if _, err := s.Send(ctx, SendRequest{RoomID: roomID, Sender: alice, Type: typ, Content: benchBody(i)}); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkSearchQuery searches 10,000 messages in 10 rooms for one word
// (about half the events match), ten results a page, in rank and in recent
// order, with history visibility checked on each result.
func BenchmarkSearchQuery(b *testing.B) {
	s := benchService(b)
	ctx := context.Background()
	const alice = "@alice:bench.test"
	var wg sync.WaitGroup
	for r := 0; r < 10; r++ {
		roomID, err := s.CreateRoom(ctx, alice, CreateRoomRequest{Preset: "public_chat", RoomVersion: ptrTo("12")})
		if err != nil {
			b.Fatal(err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 1000; i++ {
				if _, err := s.Send(ctx, SendRequest{RoomID: roomID, Sender: alice, Type: "m.room.message", Content: benchBody(r*1000 + i)}); err != nil {
					b.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	for _, order := range []string{"rank", "recent"} {
		b.Run(order, func(b *testing.B) {
			for i := 0; i < b.N; i++ {
				resp, err := s.Search(ctx, SearchRequest{UserID: alice, Term: benchWords[i%len(benchWords)], OrderBy: order, Limit: 10})
				if err != nil {
					b.Fatal(err)
				}
				if len(resp.Results) != 10 || resp.Count < 1000 {
					b.Fatalf("%d results of %d", len(resp.Results), resp.Count)
				}
			}
		})
	}
}

// BenchmarkSearchIndexInsert is the index's share of a commit alone: the
// FTS5 insert of one 15-word message, in transactions of 100 events as
// group commit makes them, without the fsync that dominates a commit.
func BenchmarkSearchIndexInsert(b *testing.B) {
	s := benchService(b)
	ctx := context.Background()
	const alice = "@alice:bench.test"
	roomID, err := s.CreateRoom(ctx, alice, CreateRoomRequest{Preset: "public_chat", RoomVersion: ptrTo("12")})
	if err != nil {
		b.Fatal(err)
	}
	ev, err := s.Send(ctx, SendRequest{RoomID: roomID, Sender: alice, Type: "m.room.message", Content: benchBody(1)})
	if err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	for i := 0; i < b.N; i += 100 {
		err := s.db.WithTx(ctx, func(tx *database.Tx) error {
			for j := i; j < min(i+100, b.N); j++ {
				e := *ev
				e.StreamPos = 1_000_000 + int64(j)
				if err := indexEvent(ctx, tx, &e); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			b.Fatal(err)
		}
	}
}
