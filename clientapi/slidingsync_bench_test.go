package clientapi_test

import (
	"fmt"
	"net/url"
	"sync"
	"testing"

	"github.com/tessera-hs/tessera/internal/testserver"
)

// BenchmarkSlidingSyncInitial is the first request of an Element X
// connection: the top 20 of a user's rooms with one timeline event each.
// The time must not grow with the number of rooms beyond those 20.
func BenchmarkSlidingSyncInitial(b *testing.B) {
	for _, n := range []int{100, 1000} {
		b.Run(fmt.Sprintf("rooms=%d", n), func(b *testing.B) {
			srv := testserver.Start(b)
			alice := registerUser(b, srv, "alice", "password1")
			var wg sync.WaitGroup
			work := make(chan int)
			for w := 0; w < 8; w++ {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for i := range work {
						r := post(b, srv, v3+"/createRoom", alice.AccessToken, map[string]any{"name": fmt.Sprint("room ", i)})
						put(b, srv, fmt.Sprintf("%s/rooms/%s/send/m.room.message/t%d", v3, url.PathEscape(r.str("room_id")), i),
							alice.AccessToken, map[string]any{"msgtype": "m.text", "body": "hello"})
					}
				}()
			}
			for i := 0; i < n; i++ {
				work <- i
			}
			close(work)
			wg.Wait()
			body := map[string]any{"lists": map[string]any{"all": map[string]any{
				"ranges": [][]int{{0, 19}}, "timeline_limit": 1,
				"required_state": [][]string{{"m.room.name", ""}, {"m.room.avatar", ""}, {"m.room.encryption", ""}, {"m.room.member", "$LAZY"}, {"m.room.member", "$ME"}},
			}}}
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				r := ssPost(b, srv, alice, "", 0, body)
				if rooms, _ := r.Body["rooms"].(map[string]any); len(rooms) != 20 {
					b.Fatalf("%d rooms, want 20: %s", len(rooms), r.Raw)
				}
			}
		})
	}
}
