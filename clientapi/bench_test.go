package clientapi_test

import (
	"context"
	"fmt"
	"sync"
	"testing"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/id"

	"github.com/tessera-hs/tessera/internal/testserver"
)

// benchRoom makes a room with n messages in it, sent by 8 users at once.
func benchRoom(b *testing.B, srv *testserver.Server, n int) (*mautrix.Client, id.RoomID) {
	b.Helper()
	bg := context.Background()
	owner := srv.Register("owner", "benchmark password")
	room, err := owner.CreateRoom(bg, &mautrix.ReqCreateRoom{Preset: "public_chat"})
	if err != nil {
		b.Fatal(err)
	}
	var wg sync.WaitGroup
	for w := 0; w < 8; w++ {
		c := srv.Register(fmt.Sprintf("sender%d", w), "benchmark password")
		if _, err := c.JoinRoom(bg, room.RoomID.String(), nil); err != nil {
			b.Fatal(err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < n/8; i++ {
				if _, err := c.SendText(bg, room.RoomID, "benchmark message"); err != nil {
					b.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	return owner, room.RoomID
}

// BenchmarkPagingCold pages backwards through 2,000 messages, 100 at a
// time, right after a restart, so no event is in memory: the figure an
// old room's first reader sees. One op is the whole walk.
func BenchmarkPagingCold(b *testing.B) {
	srv := testserver.Start(b)
	owner, roomID := benchRoom(b, srv, 2000)
	bg := context.Background()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		srv.Restart()
		b.StartTimer()
		from, seen := "", 0
		for {
			resp, err := owner.Messages(bg, roomID, from, "", mautrix.DirectionBackward, nil, 100)
			if err != nil {
				b.Fatal(err)
			}
			seen += len(resp.Chunk)
			if resp.End == "" {
				break
			}
			from = resp.End
		}
		if seen < 2000 {
			b.Fatalf("saw %d events, want at least 2000", seen)
		}
	}
}

// BenchmarkSend measures one room under 8 concurrent senders, through the
// whole HTTP path and durable group commit. One op is one acknowledged event.
func BenchmarkSend(b *testing.B) {
	srv := testserver.Start(b)
	owner, roomID := benchRoom(b, srv, 0)
	bg := context.Background()
	var senders []*mautrix.Client
	for w := 0; w < 8; w++ {
		senders = append(senders, srv.Register(fmt.Sprintf("bench%d", w), "benchmark password"))
		if _, err := senders[w].JoinRoom(bg, roomID.String(), nil); err != nil {
			b.Fatal(err)
		}
	}
	_ = owner
	b.ResetTimer()
	var next int64
	var mu sync.Mutex
	var wg sync.WaitGroup
	for _, c := range senders {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				mu.Lock()
				if next >= int64(b.N) {
					mu.Unlock()
					return
				}
				next++
				mu.Unlock()
				if _, err := c.SendText(bg, roomID, "benchmark message"); err != nil {
					b.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
}
