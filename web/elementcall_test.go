//go:build linux

package web_test

import (
	"encoding/json"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/tessera-hs/tessera/internal/lkrelay"
	"github.com/tessera-hs/tessera/internal/testserver"
)

// TestBrowserElementCallWidget: the real Element Call (npm's
// @element-hq/element-call-embedded, the build Element Web embeds) in a
// widget host page like Element Web's (matrix-widget-api's ClientWidgetApi
// backed by a matrix-js-sdk client logged in to this server), and our web
// client, in one call: Element Call starts it, the web client joins, and
// each decodes the other's (fake) camera. See ecWidget in scenario.mjs.
func TestBrowserElementCallWidget(t *testing.T) {
	browserTools(t)
	for _, p := range []string{
		filepath.Join("..", "clientapi", "testdata", "jssdk", "node_modules", "matrix-js-sdk", "package.json"),
		filepath.Join(browserDir, "node_modules", "@element-hq", "element-call-embedded", "package.json"),
		filepath.Join(browserDir, "node_modules", "esbuild", "package.json"),
	} {
		if _, err := os.Stat(p); err != nil {
			testserver.MissingTool(t)("%s missing (run npm ci in its directory): %v", p, err)
		}
	}
	srv := testserver.Start(t, testserver.Calls())
	bob := srv.Register("bob", "bob password 1")
	relay := httptest.NewServer(lkrelay.PublishAfterTrackPublished())
	defer relay.Close()
	// Two calls with Element Call, which may rejoin once in each: 343 s
	// under -race at load average 28-34 with one rejoin.
	steps := runScenarioFor(t, 12*time.Minute, []string{"BASE_URL=" + srv.URL, "SCENARIO=element-call-widget",
		"RELAY_URL=ws://" + strings.TrimPrefix(relay.URL, "http://"),
		"BOB_USER=" + bob.UserID.String(), "BOB_TOKEN=" + bob.AccessToken, "BOB_DEVICE=" + bob.DeviceID.String()},
		func(m scenarioMsg) any { return map[string]string{} })
	bobIdentity := bob.UserID.String() + ":" + bob.DeviceID.String()
	for _, name := range []string{"ec-first", "web-first"} {
		raw, ok := steps[name]
		if !ok {
			t.Errorf("step %s not done", name)
			continue
		}
		var got struct {
			AliceSees decodedVideo `json:"alice_sees"`
			BobSees   decodedVideo `json:"bob_sees"`
			Actions   []string     `json:"actions"`
		}
		if err := json.Unmarshal(raw, &got); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if name == "ec-first" {
			checkECMembership(t, raw, srv.URL+"/_tessera/livekit/jwt")
		}
		// The web client's tile is the LiveKit identity; Element Call's
		// names the user.
		if got.AliceSees.From != bobIdentity || got.AliceSees.Width <= 0 {
			t.Errorf("%s: the web client sees %+v, want video from %s", name, got.AliceSees, bobIdentity)
		}
		if got.BobSees.From != "@alice:tessera.test" || got.BobSees.Width <= 0 {
			t.Errorf("%s: Element Call sees %+v, want video from @alice:tessera.test", name, got.BobSees)
		}
		// Element Call tells its host it joined, as Element Web expects.
		if !slices.Contains(got.Actions, "io.element.join") {
			t.Errorf("%s: Element Call's actions to the host: %q, want io.element.join", name, got.Actions)
		}
		t.Logf("%s: the web client decodes %dx%d from %s; Element Call decodes %dx%d from %s", name,
			got.AliceSees.Width, got.AliceSees.Height, got.AliceSees.From, got.BobSees.Width, got.BobSees.Height, got.BobSees.From)
	}
}

// checkECMembership reads the membership Element Call published (its
// default "compatibility" mode, see docs/web.md): the legacy state event
// for the room's call, with a multi-SFU focus on our token service.
func checkECMembership(t *testing.T, raw json.RawMessage, service string) {
	t.Helper()
	var got struct {
		Membership struct {
			Application string `json:"application"`
			CallID      string `json:"call_id"`
			FocusActive struct {
				Type           string `json:"type"`
				FocusSelection string `json:"focus_selection"`
			} `json:"focus_active"`
			FociPreferred []struct {
				Type              string `json:"type"`
				LivekitServiceURL string `json:"livekit_service_url"`
			} `json:"foci_preferred"`
		} `json:"ec_membership"`
	}
	if err := json.Unmarshal(raw, &got); err != nil {
		t.Fatalf("ec_membership: %v", err)
	}
	m := got.Membership
	if m.Application != "m.call" || m.CallID != "" || m.FocusActive.Type != "livekit" || m.FocusActive.FocusSelection != "multi_sfu" ||
		len(m.FociPreferred) == 0 || m.FociPreferred[0].LivekitServiceURL != service {
		t.Errorf("Element Call's membership: %+v", m)
	}
	t.Logf("Element Call's membership: %+v", m)
}
