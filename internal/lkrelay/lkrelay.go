// Package lkrelay relays LiveKit signalling between a client and the SFU
// for tests and the load tool, holding back what livekit-server v1.13.5
// cannot take at once (see PublishAfterTrackPublished). It is client-side
// code: it speaks only the SFU's public WebSocket protocol.
//
// The client connects to the relay with the SFU's URL in the "upstream"
// query parameter; the rest of the URL and the Authorization header are
// passed on.
package lkrelay

import (
	"net/http"
	"strings"
	"sync"

	"github.com/gorilla/websocket"
	"github.com/livekit/protocol/livekit"
	"google.golang.org/protobuf/proto"
)

// PublishAfterTrackPublished relays LiveKit signalling (WebSocket,
// protobuf) unchanged, except that a publisher offer waits until every
// track announced with AddTrack has its TrackPublished answer, as
// livekit-client does when it awaits addTrack before negotiating. The Go
// SDK offers 20 ms after AddTrack without waiting, which under -race
// reliably exposes a data race inside livekit-server v1.13.5: AddTrack
// queues TrackPublished with the pending track's live TrackInfo, the
// signal sink serialises it on another goroutine, and updateRidsFromSDP
// rewrites that TrackInfo's layers when the offer is applied.
func PublishAfterTrackPublished() http.Handler {
	up := websocket.Upgrader{CheckOrigin: func(*http.Request) bool { return true }}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		q := r.URL.Query()
		base := q.Get("upstream")
		q.Del("upstream")
		hdr := http.Header{}
		if a := r.Header.Get("Authorization"); a != "" {
			hdr.Set("Authorization", a)
		}
		server, resp, err := websocket.DefaultDialer.Dial(base+strings.TrimSuffix(r.URL.Path, "/")+"?"+q.Encode(), hdr)
		if err != nil {
			status := http.StatusBadGateway
			if resp != nil {
				status = resp.StatusCode
			}
			http.Error(w, err.Error(), status)
			return
		}
		client, err := up.Upgrade(w, r, nil)
		if err != nil {
			server.Close()
			return
		}
		var mu sync.Mutex
		cond := sync.NewCond(&mu)
		pending := map[string]bool{}
		closed := false
		done := make(chan struct{})
		go func() { // SFU → client
			defer close(done)
			for {
				typ, msg, err := server.ReadMessage()
				if err != nil {
					mu.Lock()
					closed = true
					cond.Broadcast()
					mu.Unlock()
					client.Close()
					return
				}
				var res livekit.SignalResponse
				if typ == websocket.BinaryMessage && proto.Unmarshal(msg, &res) == nil {
					if tp := res.GetTrackPublished(); tp != nil {
						mu.Lock()
						delete(pending, tp.Cid)
						cond.Broadcast()
						mu.Unlock()
					}
				}
				if client.WriteMessage(typ, msg) != nil {
					server.Close()
					return
				}
			}
		}()
		for { // client → SFU
			typ, msg, err := client.ReadMessage()
			if err != nil {
				break
			}
			var req livekit.SignalRequest
			if typ == websocket.BinaryMessage && proto.Unmarshal(msg, &req) == nil {
				mu.Lock()
				if at := req.GetAddTrack(); at != nil {
					pending[at.Cid] = true
				}
				if req.GetOffer() != nil {
					for len(pending) > 0 && !closed {
						cond.Wait()
					}
				}
				mu.Unlock()
			}
			if server.WriteMessage(typ, msg) != nil {
				break
			}
		}
		server.Close()
		<-done
		client.Close()
	})
}
