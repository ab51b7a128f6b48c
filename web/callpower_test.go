//go:build linux

package web_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http/httptest"
	"strings"
	"testing"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/tessera-hs/tessera/internal/lkrelay"
	"github.com/tessera-hs/tessera/internal/testserver"
)

// callMemberTypes are the MatrixRTC membership types Element lets members
// send (at power level 0) in the rooms it creates.
var callMemberTypes = []event.Type{
	{Type: "org.matrix.msc3401.call.member", Class: event.StateEventType},
	{Type: "m.call.member", Class: event.StateEventType},
}

// TestBrowserCallPermission: in rooms made by another client with the
// server's default power levels (a call membership takes 50), a member at
// power level 0 is told plainly that they cannot join the call and why,
// and the power levels stay as they are; a member who may change the
// power levels is offered to let members call, and after doing so joins.
func TestBrowserCallPermission(t *testing.T) {
	browserTools(t)
	srv := testserver.Start(t, testserver.Calls())
	carol := srv.Register("carol", "carol password 1")
	ctx := context.Background()
	relay := httptest.NewServer(lkrelay.PublishAfterTrackPublished())
	defer relay.Close()
	var plain, admin id.RoomID
	levels := func(room id.RoomID) *event.PowerLevelsEventContent {
		t.Helper()
		var pl event.PowerLevelsEventContent
		if err := carol.StateEvent(ctx, room, event.StatePowerLevels, "", &pl); err != nil {
			t.Fatalf("power levels of %s: %v", room, err)
		}
		return &pl
	}
	steps := runScenario(t, []string{"BASE_URL=" + srv.URL, "SCENARIO=call-permission",
		"RELAY_URL=ws://" + strings.TrimPrefix(relay.URL, "http://")}, func(m scenarioMsg) any {
		switch m.Ask {
		case "rooms":
		case "lower-plain":
			// What Element's "Voice & video" settings do.
			pl := levels(plain)
			for _, typ := range callMemberTypes {
				pl.SetEventLevel(typ, 0)
			}
			if _, err := carol.SendStateEvent(ctx, plain, event.StatePowerLevels, "", pl); err != nil {
				t.Errorf("carol lowers the call levels: %v", err)
			}
			return map[string]string{}
		default:
			t.Errorf("unknown question %q", m.Ask)
			return map[string]string{}
		}
		alice := id.UserID("@alice:tessera.test")
		r, err := carol.CreateRoom(ctx, &mautrix.ReqCreateRoom{Name: "Old room", Preset: "private_chat", Invite: []id.UserID{alice}})
		if err != nil {
			t.Errorf("plain room: %v", err)
			return map[string]string{"error": err.Error()}
		}
		plain = r.RoomID
		r, err = carol.CreateRoom(ctx, &mautrix.ReqCreateRoom{Name: "Old room, alice admin", Preset: "private_chat", Invite: []id.UserID{alice},
			PowerLevelOverride: &event.PowerLevelsEventContent{Users: map[id.UserID]int{alice: 100}}})
		if err != nil {
			t.Errorf("admin room: %v", err)
			return map[string]string{"error": err.Error()}
		}
		admin = r.RoomID
		for _, room := range []id.RoomID{plain, admin} {
			if lvl := levels(room).GetEventLevel(callMemberTypes[0]); lvl != 50 {
				t.Errorf("a call membership takes %d in a new room of carol's, want the default 50", lvl)
			}
		}
		return map[string]string{"plain": plain.String(), "admin": admin.String()}
	})
	type panel struct {
		Forbidden    string `json:"forbidden"`
		Members      string `json:"members"`
		JoinDisabled bool   `json:"join_disabled"`
		CanAllow     bool   `json:"can_allow"`
	}
	read := func(name string) panel {
		var p panel
		if err := json.Unmarshal(steps[name], &p); err != nil {
			t.Fatalf("%s step: %v %s", name, err, steps[name])
		}
		return p
	}
	// At 0: told why, cannot join, not offered the change.
	forbidden := read("forbidden")
	if !strings.Contains(forbidden.Forbidden, "takes power level 50, and yours is 0") || !strings.Contains(forbidden.Forbidden, "Ask a room admin") ||
		!forbidden.JoinDisabled || forbidden.CanAllow || forbidden.Members != "" {
		t.Errorf("a member at 0 sees %+v", forbidden)
	}
	// At 100: may join, and is offered to let the others.
	offered := read("offered")
	if offered.Forbidden != "" || offered.JoinDisabled || !offered.CanAllow ||
		!strings.Contains(offered.Members, "Other members cannot join calls here: it takes power level 50, and members have 0") {
		t.Errorf("a member at 100 sees %+v", offered)
	}
	if _, ok := steps["allowed-joined"]; !ok {
		t.Fatalf("alice did not join after letting members call")
	}
	pl := levels(admin)
	for _, typ := range callMemberTypes {
		if lvl := pl.GetEventLevel(typ); lvl != 0 {
			t.Errorf("%s takes %d after alice let members call, want 0", typ.Type, lvl)
		}
	}
	// Only those two levels changed.
	if pl.GetUserLevel("@alice:tessera.test") != 100 || pl.StateDefault() != 50 || pl.Ban() != 50 || pl.GetEventLevel(event.StateRoomName) != 50 {
		t.Errorf("the power levels changed more than the call membership: %s", fmt.Sprint(pl))
	}
	// Once the creator lowers the level, the member at 0 may join.
	if u, ok := steps["unblocked"]; !ok {
		t.Errorf("the page did not follow the lowered level")
	} else if p := read("unblocked"); p.Forbidden != "" || p.JoinDisabled || p.CanAllow {
		t.Errorf("after the creator let members call, alice sees %s", u)
	}
	t.Logf("at 0: %q; at 100: %q", forbidden.Forbidden, offered.Members)
}
