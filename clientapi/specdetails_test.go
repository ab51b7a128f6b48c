package clientapi_test

import (
	"net/http"
	"strconv"
	"testing"

	"github.com/tessera-hs/tessera/internal/testserver"
)

// TestCapabilitiesRoomVersionStability: only the versions the spec defines
// are "stable"; an MSC version gomatrixserverlib flags as stable is not.
// https://spec.matrix.org/v1.19/client-server-api/#mroom_versions-capability
func TestCapabilitiesRoomVersionStability(t *testing.T) {
	t.Parallel()
	srv := testserver.Start(t)
	alice := rmUser(t, srv, "alice")
	r := get(t, srv, v3+"/capabilities", alice.AccessToken).expect(t, http.StatusOK, "")
	available, ok := rmField(r.Body, "capabilities", "m.room_versions", "available").(map[string]any)
	if !ok {
		t.Fatalf("no m.room_versions.available: %s", r.Raw)
	}
	specStable := map[string]bool{}
	for v := 1; v <= 12; v++ {
		specStable[strconv.Itoa(v)] = true
		if available[strconv.Itoa(v)] != "stable" {
			t.Errorf("room version %d = %v, want stable", v, available[strconv.Itoa(v)])
		}
	}
	for v, stability := range available {
		if !specStable[v] && stability != "unstable" {
			t.Errorf("room version %q is %v; only spec'd versions may be stable", v, stability)
		}
	}
	if d := rmField(r.Body, "capabilities", "m.room_versions", "default"); available[d.(string)] != "stable" {
		t.Errorf("default room version %v is not a stable one", d)
	}

	// Every version listed can be created; anything else cannot, and an
	// empty version is not "the default".
	for v := range available {
		room := rmCreate(t, srv, alice, map[string]any{"room_version": v})
		if got := rmField(rmStateEvent(t, srv, alice, room, "m.room.create", ""), "content", "room_version"); got != v {
			t.Errorf("created room_version %v, want %s", got, v)
		}
	}
	for _, v := range []string{"", "org.matrix.msc4014", "org.matrix.msc4242.12", "13"} {
		post(t, srv, v3+"/createRoom", alice.AccessToken, map[string]any{"room_version": v}).
			expect(t, http.StatusBadRequest, "M_UNSUPPORTED_ROOM_VERSION")
	}
	room := rmCreate(t, srv, alice, map[string]any{})
	post(t, srv, rmRoom(room, "upgrade"), alice.AccessToken, map[string]any{"new_version": "org.matrix.msc4242.12"}).
		expect(t, http.StatusBadRequest, "M_UNSUPPORTED_ROOM_VERSION")
}
