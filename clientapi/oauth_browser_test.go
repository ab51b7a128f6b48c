package clientapi_test

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/tessera-hs/tessera/internal/testserver"
)

const oauthDir = "testdata/oauth"

// TestOAuthBrowserCodeFlow is the OAuth 2.0 API with real clients:
// openid-client (Node) registers, runs the code flow with PKCE while
// headless Chromium fills Tessera's login and consent pages, refreshes
// and revokes; matrix-js-sdk syncs and sends with the access token
// (testdata/oauth/code_flow.mjs).
func TestOAuthBrowserCodeFlow(t *testing.T) {
	node := requireJSSDK(t)
	missing := missingTool(t)
	chromium, err := exec.LookPath("chromium")
	if err != nil {
		missing("chromium not installed (.ci/run installs Debian's chromium)")
	}
	for _, pkg := range []string{"openid-client", "puppeteer-core"} {
		if _, err := os.Stat(filepath.Join(oauthDir, "node_modules", pkg, "package.json")); err != nil {
			missing("%s missing (run npm ci in clientapi/%s): %v", pkg, oauthDir, err)
		}
	}
	t.Parallel()

	srv := testserver.Start(t)
	alice := registerUser(t, srv, "alice", "password1")
	cfg, _ := json.Marshal(map[string]any{"baseUrl": srv.URL, "user": "alice", "password": "password1",
		"chromium": chromium, "timeoutMs": 100000})
	run := runNode(node, oauthDir, "code_flow.mjs", 2*time.Minute, false, "TESSERA_OAUTH="+string(cfg))

	var res struct {
		OK       bool               `json:"ok"`
		Error    string             `json:"error"`
		Cause    string             `json:"cause"`
		UserID   string             `json:"userId"`
		DeviceID string             `json:"deviceId"`
		Steps    []string           `json:"steps"`
		Timings  map[string]float64 `json:"timings"`
	}
	run.result(t, &res)
	if !res.OK || run.err != nil {
		t.Fatalf("openid-client: %s %s\nsteps: %q\nstderr: %s", res.Error, res.Cause, res.Steps, tail(run.stderr.String(), 8000))
	}
	if res.UserID != alice.UserID || res.DeviceID != "JSOAUTHDEV01" {
		t.Fatalf("signed in as %s %s, want %s JSOAUTHDEV01", res.UserID, res.DeviceID, alice.UserID)
	}
	t.Logf("steps: %q; browser code flow %.0f ms", res.Steps, res.Timings["codeFlowMs"])
	// The revoked session's device is gone.
	if ids := deviceIDs(t, srv, alice.AccessToken); len(ids) != 1 || ids[0] != alice.DeviceID {
		t.Fatalf("devices after revocation = %v", ids)
	}
}
