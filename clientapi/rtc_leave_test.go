package clientapi_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/livekit/protocol/livekit"
	protoLogger "github.com/livekit/protocol/logger"
	lksdk "github.com/livekit/server-sdk-go/v2"
	"github.com/twitchtv/twirp"
	"google.golang.org/protobuf/proto"

	"github.com/tessera-hs/tessera/calls"
	"github.com/tessera-hs/tessera/internal/lkpeer"
	"github.com/tessera-hs/tessera/internal/testserver"
)

// TestCallsCleanLeave: a participant who leaves through our signalling
// proxy is gone from the SFU at once. LiveKit acts on the client's leave
// message; a lost one leaves a ghost for the SFU's ~20 s departure
// timeout, which other clients see and which delays a delegated leave
// event by as much.
//
// The leaving client here is a well-behaved one (as a browser is): it
// sends its leave, half-closes its socket and reads until the end. The Go
// SDK instead closes its socket at once after queueing the leave; a few
// percent of its leaves are lost that way, through the proxy and, under
// -race, also straight to the SFU (see docs/calls.md).
func TestCallsCleanLeave(t *testing.T) {
	if testing.Short() {
		t.Skip("media test skipped in -short mode")
	}
	lksdk.SetLogger(protoLogger.GetLogger())
	srv := testserver.Start(t, testserver.Calls())
	alice := registerUser(t, srv, "alice", "password1")
	roomID := adCreateRoom(t, srv, alice, map[string]any{})
	sfuURL := ddLiveKitURL(t, srv, alice)
	rs := lkRoomService(t, srv)
	lkRoom := calls.RoomName(roomID, "m.call#ROOM")
	token := func(member string) string {
		return post(t, srv, "/_matrix/client/v1/rtc/livekit/get_token", alice.AccessToken, map[string]any{
			"url": sfuURL, "room_id": roomID, "slot_id": "m.call#ROOM", "member_id": member}).expect(t, http.StatusOK, "").str("jwt")
	}

	// Others in the room keep the SFU sending the leaving one updates.
	for i := range 3 {
		stayer, err := lkpeer.Join(sfuURL, token("stay"+strconv.Itoa(i)), false, 15*time.Second)
		must(t, err, "join")
		defer stayer.Close()
	}

	const rounds = 30
	var slow int
	var worst time.Duration
	for i := range rounds {
		member := "m" + strconv.Itoa(i)
		identity := calls.MemberIdentity(alice.UserID, member)
		ws, _, err := websocket.DefaultDialer.Dial(sfuURL+"/rtc?protocol=16&auto_subscribe=1&sdk=go&access_token="+token(member), nil)
		must(t, err, "signalling connection")
		var joined livekit.SignalResponse
		for joined.GetJoin() == nil {
			_, msg, err := ws.ReadMessage()
			must(t, err, "read join response")
			must(t, proto.Unmarshal(msg, &joined), "decode signal response")
		}
		leave, _ := proto.Marshal(&livekit.SignalRequest{Message: &livekit.SignalRequest_Leave{Leave: &livekit.LeaveRequest{
			Reason: livekit.DisconnectReason_CLIENT_INITIATED, Action: livekit.LeaveRequest_DISCONNECT}}})
		must(t, ws.WriteMessage(websocket.BinaryMessage, leave), "send leave")
		start := time.Now()
		_ = ws.NetConn().(*net.TCPConn).CloseWrite()
		_ = ws.NetConn().SetReadDeadline(time.Now().Add(5 * time.Second))
		_, _ = io.Copy(io.Discard, ws.NetConn())
		ws.Close()
		for {
			_, err := rs.GetParticipant(context.Background(), &livekit.RoomParticipantIdentity{Room: lkRoom, Identity: identity})
			var te twirp.Error
			if errors.As(err, &te) && te.Code() == twirp.NotFound {
				break
			}
			if time.Since(start) > 3*time.Second {
				slow++
				break
			}
			time.Sleep(20 * time.Millisecond)
		}
		worst = max(worst, time.Since(start))
	}
	t.Logf("%d leaves: %d still on the SFU after 3 s; slowest %v", rounds, slow, worst.Round(time.Millisecond))
	if slow > 0 {
		t.Fatalf("%d of %d participants who left stayed on the SFU", slow, rounds)
	}
}

// lkRoomService is a client of the test server's LiveKit RoomService, with
// the API key pair the server generated.
func lkRoomService(t *testing.T, srv *testserver.Server) *lksdk.RoomServiceClient {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join(srv.Config.DataDir, calls.KeysFile))
	must(t, err, "read generated LiveKit keys")
	var keys struct{ Key, Secret string }
	must(t, json.Unmarshal(raw, &keys), "parse keys")
	return lksdk.NewRoomServiceClient("http://127.0.0.1:"+strconv.Itoa(srv.Config.Calls.SignalPort), keys.Key, keys.Secret)
}
