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
	"sync/atomic"

	"github.com/gorilla/websocket"
	"github.com/livekit/protocol/livekit"
	"google.golang.org/protobuf/proto"
)

// PublishAfterTrackPublished relays LiveKit signalling (WebSocket,
// protobuf) unchanged, except that a publisher offer waits until every
// track announced with AddTrack has its TrackPublished answer and, after
// that, the answer to an empty UpdateParticipantMetadata the relay sends
// itself (and swallows). livekit-client awaits each track's publication
// before it negotiates; the Go SDK offers 20 ms after AddTrack without
// waiting. Either way livekit-server v1.13.5 has a data race the race
// detector reports: AddTrack queues TrackPublished with the pending
// track's live TrackInfo, the signal sink's goroutine still reads it
// (psrpc's metrics interceptor sizes the message after sending), and
// updateRidsFromSDP rewrites that TrackInfo's layers when the offer is
// applied. Waiting for TrackPublished orders the two in time but not for
// the race detector; the metadata answer goes through the same sink after
// that goroutine is done, so the offer is ordered after it.
func PublishAfterTrackPublished() http.Handler {
	up := websocket.Upgrader{CheckOrigin: func(*http.Request) bool { return true }}
	var nextID atomic.Uint32
	nextID.Store(0x7f000000) // far from the SDKs' own request IDs
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
		var mu sync.Mutex // guards the maps and closed, and writes to server
		cond := sync.NewCond(&mu)
		pending := map[string]bool{}  // AddTrack cids without TrackPublished
		barriers := map[uint32]bool{} // metadata request IDs without answer
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
						id := nextID.Add(1)
						req, _ := proto.Marshal(&livekit.SignalRequest{Message: &livekit.SignalRequest_UpdateMetadata{
							UpdateMetadata: &livekit.UpdateParticipantMetadata{RequestId: id},
						}})
						mu.Lock()
						delete(pending, tp.Cid)
						barriers[id] = true
						_ = server.WriteMessage(websocket.BinaryMessage, req)
						mu.Unlock()
					}
					if rr := res.GetRequestResponse(); rr != nil {
						mu.Lock()
						ours := barriers[rr.RequestId]
						delete(barriers, rr.RequestId)
						cond.Broadcast()
						mu.Unlock()
						if ours {
							continue
						}
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
			mu.Lock()
			var req livekit.SignalRequest
			if typ == websocket.BinaryMessage && proto.Unmarshal(msg, &req) == nil {
				if at := req.GetAddTrack(); at != nil {
					pending[at.Cid] = true
				}
				if req.GetOffer() != nil {
					for (len(pending) > 0 || len(barriers) > 0) && !closed {
						cond.Wait()
					}
				}
			}
			err = server.WriteMessage(typ, msg)
			mu.Unlock()
			if err != nil {
				break
			}
		}
		server.Close()
		<-done
		client.Close()
	})
}
