package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"strconv"
	"testing"

	"github.com/tessera-hs/tessera/internal/config"
	"github.com/tessera-hs/tessera/internal/testserver"
)

// TestPushScenario runs the push scenario against a real Tessera that
// allows gateways on loopback: every notification arrives, once.
func TestPushScenario(t *testing.T) {
	srv := testserver.Start(t, func(c *config.Config) { c.Push.IPRangeWhitelist = []string{"127.0.0.1/32"} })
	var out, errOut bytes.Buffer
	code := run(context.Background(), []string{"-hs", srv.URL, "-shared-secret", testserver.SharedSecret, "-json-only",
		"push", "-n", "20", "-m", "3", "-settle", "200ms", "-server-pid", strconv.Itoa(os.Getpid())}, &out, &errOut)
	if code != exitOK {
		t.Fatalf("push: exit %d: %s\n%s", code, errOut.String(), out.String())
	}
	var rep pushReport
	if err := json.Unmarshal(bytes.TrimSpace(out.Bytes()), &rep); err != nil {
		t.Fatalf("report %q: %v", out.String(), err)
	}
	if rep.Expected != 60 || rep.Delivered != 60 || rep.Missing != 0 || rep.Duplicates != 0 || rep.Invalid != 0 ||
		rep.P99 <= 0 || rep.CPUSeconds <= 0 {
		t.Errorf("report %+v", rep)
	}
}
