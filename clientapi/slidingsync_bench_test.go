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

// BenchmarkSlidingSyncFanout: 50 sliding sync connections long-polling one
// room; one op is one message sent and seen by all 50 (the time until the
// last of them has it).
func BenchmarkSlidingSyncFanout(b *testing.B) {
	const clients = 50
	srv := testserver.Start(b)
	owner := registerUser(b, srv, "owner", "password1")
	room := post(b, srv, v3+"/createRoom", owner.AccessToken, map[string]any{"preset": "public_chat"}).str("room_id")
	body := map[string]any{
		"lists": map[string]any{"all": map[string]any{
			"ranges": [][]int{{0, 19}}, "timeline_limit": 1,
			"required_state": [][]string{{"m.room.name", ""}, {"m.room.member", "$LAZY"}},
		}},
		"extensions": map[string]any{"e2ee": map[string]any{"enabled": true}, "to_device": map[string]any{"enabled": true},
			"receipts": map[string]any{"enabled": true}, "typing": map[string]any{"enabled": true}},
	}
	seen := make(chan string, clients*16)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for i := 0; i < clients; i++ {
		s := registerUser(b, srv, fmt.Sprintf("c%d", i), "password1")
		post(b, srv, v3+"/join/"+url.PathEscape(room), s.AccessToken, map[string]any{})
		pos := ssPost(b, srv, s, "", 0, body).str("pos")
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				r, err := tryDo(srv, req{Method: "POST", Path: ssPath + "?timeout=2000&pos=" + url.QueryEscape(pos), Token: s.AccessToken, Body: body})
				if err != nil || r.Status != 200 {
					continue
				}
				pos, _ = r.Body["pos"].(string)
				rooms, _ := r.Body["rooms"].(map[string]any)
				if rm, ok := rooms[room].(map[string]any); ok {
					tl, _ := rm["timeline"].([]any)
					for _, e := range tl {
						if ev, ok := e.(map[string]any); ok && ev["type"] == "m.room.message" {
							seen <- ev["event_id"].(string)
						}
					}
				}
			}
		}()
	}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		id := put(b, srv, fmt.Sprintf("%s/rooms/%s/send/m.room.message/b%d", v3, url.PathEscape(room), i), owner.AccessToken,
			map[string]any{"msgtype": "m.text", "body": "fan out"}).str("event_id")
		for n := 0; n < clients; {
			if <-seen == id {
				n++
			}
		}
	}
	b.StopTimer()
	close(stop)
	wg.Wait()
}
