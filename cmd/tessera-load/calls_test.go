package main

import (
	"bytes"
	"context"
	"encoding/json"
	"strings"
	"testing"

	"github.com/tessera-hs/tessera/internal/testserver"
)

// Two participants of a call on a real Tessera with its embedded SFU each
// receive the other's video.
func TestCallsAgainstTessera(t *testing.T) {
	if testing.Short() {
		t.Skip("media test skipped in -short mode")
	}
	srv := testserver.Start(t, testserver.Calls())
	var out, errOut bytes.Buffer
	code := run(context.Background(), []string{"-hs", srv.URL, "-shared-secret", testserver.SharedSecret,
		"calls", "-p", "2", "-d", "2s", "-bitrate", "200000"}, &out, &errOut)
	if code != exitOK {
		t.Fatalf("exit %d\nstdout:\n%s\nstderr:\n%s", code, out.String(), errOut.String())
	}
	for _, mark := range []string{"calls: media flowing", "calls: done"} {
		if !strings.Contains(errOut.String(), mark) {
			t.Errorf("no %q on stderr:\n%s", mark, errOut.String())
		}
	}
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	var res struct {
		Scenario       string  `json:"scenario"`
		Participants   int     `json:"participants"`
		Missing        int     `json:"missing_streams"`
		RecvKbpsMin    float64 `json:"recv_kbps_min"`
		PerParticipant []struct {
			FirstRTPMS float64 `json:"first_rtp_ms"`
			Streams    int     `json:"streams"`
		} `json:"per_participant"`
	}
	if err := json.Unmarshal([]byte(lines[len(lines)-1]), &res); err != nil {
		t.Fatalf("final line is not JSON: %v\n%s", err, out.String())
	}
	if res.Scenario != "calls" || res.Participants != 2 || res.Missing != 0 || len(res.PerParticipant) != 2 {
		t.Fatalf("report: %s", lines[len(lines)-1])
	}
	for i, p := range res.PerParticipant {
		if p.Streams != 1 || p.FirstRTPMS <= 0 {
			t.Errorf("participant %d: %+v", i, p)
		}
	}
	// 200 kbit/s sent; well over half of it must arrive.
	if res.RecvKbpsMin < 100 {
		t.Errorf("received %v kbit/s at least, want ~200\n%s", res.RecvKbpsMin, out.String())
	}
	t.Log(out.String())
}
