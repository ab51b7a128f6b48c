package federation_test

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"testing"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"

	"github.com/tessera-hs/tessera/internal/testserver"
)

// TestSpaceHierarchyAcrossServers: a space on A lists a room that only B
// holds; alice's /hierarchy on A asks B for it over federation.
func TestSpaceHierarchyAcrossServers(t *testing.T) {
	ctx := context.Background()
	a := testserver.Start(t, testserver.Federation("127.0.0.1"))
	b := testserver.Start(t, testserver.Federation("127.0.0.2"))
	alice := a.Register("alice", "password-alice")
	bob := b.Register("bob", "password-bob")

	space, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "public_chat", Name: "Space",
		CreationContent: map[string]any{"type": "m.space"}})
	if err != nil {
		t.Fatal(err)
	}
	remote, err := bob.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "public_chat", Name: "Bob's room", Topic: "over there"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := alice.SendStateEvent(ctx, space.RoomID, event.StateSpaceChild, remote.RoomID.String(),
		map[string]any{"via": []string{b.Config.ServerName}}); err != nil {
		t.Fatal(err)
	}

	req, _ := http.NewRequestWithContext(ctx, http.MethodGet,
		a.URL+"/_matrix/client/v1/rooms/"+url.PathEscape(space.RoomID.String())+"/hierarchy", nil)
	req.Header.Set("Authorization", "Bearer "+alice.AccessToken)
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	raw, _ := io.ReadAll(res.Body)
	if res.StatusCode != http.StatusOK {
		t.Fatalf("hierarchy: %d %s", res.StatusCode, raw)
	}
	var body struct {
		Rooms []struct {
			RoomID           string `json:"room_id"`
			Name             string `json:"name"`
			Topic            string `json:"topic"`
			NumJoinedMembers int    `json:"num_joined_members"`
		} `json:"rooms"`
	}
	if err := json.Unmarshal(raw, &body); err != nil {
		t.Fatal(err)
	}
	if len(body.Rooms) != 2 || body.Rooms[1].RoomID != remote.RoomID.String() {
		t.Fatalf("rooms = %s, want the space and B's room", raw)
	}
	if r := body.Rooms[1]; r.Name != "Bob's room" || r.Topic != "over there" || r.NumJoinedMembers != 1 {
		t.Fatalf("B's room as A tells it: %+v", r)
	}
}
