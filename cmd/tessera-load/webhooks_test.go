package main

import (
	"bytes"
	"context"
	"encoding/json"
	"strings"
	"testing"

	"github.com/tessera-hs/tessera/internal/config"
	"github.com/tessera-hs/tessera/internal/testserver"
)

// The webhooks are Tessera's own, so the scenario runs against a real
// Tessera with them on.
func TestWebhooksAgainstTessera(t *testing.T) {
	t.Parallel()
	srv := testserver.Start(t, func(c *config.Config) { c.Webhooks.Enabled = true })
	var out, errOut bytes.Buffer
	code := run(context.Background(), []string{"-hs", srv.URL, "-shared-secret", testserver.SharedSecret,
		"webhooks", "-c", "2", "-m", "3", "-verify"}, &out, &errOut)
	if code != exitOK {
		t.Fatalf("exit %d\nstdout:\n%s\nstderr:\n%s", code, out.String(), errOut.String())
	}
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	var res map[string]any
	if err := json.Unmarshal([]byte(lines[len(lines)-1]), &res); err != nil {
		t.Fatalf("final line is not JSON: %v\n%s", err, out.String())
	}
	if res["scenario"] != "webhooks" {
		t.Errorf("scenario = %v", res["scenario"])
	}
	wantFields(t, res, map[string]float64{"concurrency": 2, "deliveries": 6, "ok": 6, "errors": 0})
	if v, ok := res["verify"].(map[string]any); !ok || v["ok"] != true {
		t.Errorf("verify = %v", res["verify"])
	}
	if v, ok := res["webhooks_per_sec"].(float64); !ok || v <= 0 {
		t.Errorf("webhooks_per_sec = %v", res["webhooks_per_sec"])
	}
}

// Without webhooks on, the run fails clearly at setup.
func TestWebhooksDisabled(t *testing.T) {
	t.Parallel()
	srv := testserver.Start(t)
	var out, errOut bytes.Buffer
	code := run(context.Background(), []string{"-hs", srv.URL, "-shared-secret", testserver.SharedSecret,
		"webhooks", "-c", "1", "-m", "1"}, &out, &errOut)
	if code != exitFail || !strings.Contains(errOut.String(), "webhooks.enabled") {
		t.Errorf("exit %d, stderr:\n%s", code, errOut.String())
	}
}
