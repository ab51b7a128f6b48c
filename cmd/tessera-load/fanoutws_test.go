package main

import (
	"bytes"
	"context"
	"encoding/json"
	"strings"
	"testing"

	"github.com/tessera-hs/tessera/internal/testserver"
)

// The sync stream is Tessera's own, so fanout-ws runs against a real
// Tessera rather than the fake homeserver.
func TestFanoutWSAgainstTessera(t *testing.T) {
	t.Parallel()
	srv := testserver.Start(t)
	var out, errOut bytes.Buffer
	code := run(context.Background(), []string{"-hs", srv.URL, "-shared-secret", testserver.SharedSecret,
		"fanout-ws", "-s", "4", "-n", "12", "-interval", "5ms", "-drain", "5s"}, &out, &errOut)
	if code != exitOK {
		t.Fatalf("exit %d\nstdout:\n%s\nstderr:\n%s", code, out.String(), errOut.String())
	}
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	var res map[string]any
	if err := json.Unmarshal([]byte(lines[len(lines)-1]), &res); err != nil {
		t.Fatalf("final line is not JSON: %v\n%s", err, out.String())
	}
	if res["scenario"] != "fanout-ws" {
		t.Errorf("scenario = %v", res["scenario"])
	}
	wantFields(t, res, map[string]float64{
		"receivers": 4, "messages": 12, "sent": 12, "expected": 48, "deliveries": 48,
		"missing": 0, "duplicates": 0, "unexpected": 0, "stream_errors": 0, "send_errors": 0,
	})
	for _, k := range []string{"p50_ms", "p99_ms", "max_ms"} {
		if v, ok := res[k].(float64); !ok || v <= 0 {
			t.Errorf("%s = %v, want > 0", k, res[k])
		}
	}
	if !strings.Contains(out.String(), "sync stream") {
		t.Errorf("no human-readable summary:\n%s", out.String())
	}
}

// Against a server without the stream, the run fails clearly at setup.
func TestFanoutWSWithoutStream(t *testing.T) {
	t.Parallel()
	f := newFakeHS()
	code, _, _, stderr := runTool(t, f, "-shared-secret", f.secret, "fanout-ws", "-s", "1", "-n", "1")
	if code != exitFail || !strings.Contains(stderr, "HTTP 404 M_UNRECOGNIZED") {
		t.Fatalf("exit %d, stderr:\n%s", code, stderr)
	}
}
