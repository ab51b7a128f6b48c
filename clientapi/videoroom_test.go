package clientapi_test

import (
	"context"
	"testing"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"

	"github.com/tessera-hs/tessera/internal/testserver"
)

// TestVideoRoomLetsMembersJoinTheCall: in a room created as a video room
// any member may send their MatrixRTC membership; in an ordinary private
// room the default state level (50) still applies.
func TestVideoRoomLetsMembersJoinTheCall(t *testing.T) {
	ctx := context.Background()
	s := testserver.Start(t)
	alice := s.Register("alice", "password-alice")
	bob := s.Register("bob", "password-bob")
	for _, tt := range []struct {
		name    string
		content map[string]any
		allowed bool
	}{
		{"video room", map[string]any{"type": "org.matrix.msc3417.call"}, true},
		{"ordinary room", nil, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			room, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "public_chat", CreationContent: tt.content})
			if err != nil {
				t.Fatal(err)
			}
			if _, err := bob.JoinRoomByID(ctx, room.RoomID); err != nil {
				t.Fatal(err)
			}
			key := "_" + bob.UserID.String() + "_" + bob.DeviceID.String() + "_m.call"
			_, err = bob.SendStateEvent(ctx, room.RoomID, event.Type{Type: "org.matrix.msc3401.call.member", Class: event.StateEventType}, key,
				map[string]any{"application": "m.call", "call_id": "", "scope": "m.room", "device_id": bob.DeviceID, "focus_active": map[string]any{"type": "livekit"}})
			if tt.allowed && err != nil {
				t.Fatalf("a member joining the call: %v", err)
			}
			if !tt.allowed {
				if herr, ok := err.(mautrix.HTTPError); !ok || herr.RespError == nil || herr.RespError.ErrCode != "M_FORBIDDEN" {
					t.Fatalf("call membership in an ordinary room: %v", err)
				}
			}
		})
	}
}
