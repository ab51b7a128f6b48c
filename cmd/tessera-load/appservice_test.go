package main

import (
	"bytes"
	"context"
	"encoding/json"
	"net"
	"os"
	"path/filepath"
	"testing"

	"github.com/tessera-hs/tessera/appservice"
	"github.com/tessera-hs/tessera/internal/config"
	"github.com/tessera-hs/tessera/internal/testserver"
)

// TestAppserviceScenario writes the registration, starts a real Tessera
// with it, and runs the scenario: every event delivered, once, in order.
func TestAppserviceScenario(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	path := filepath.Join(t.TempDir(), "as.yaml")
	var out, errOut bytes.Buffer
	if code := run(context.Background(), []string{"appservice-registration", "-o", path, "-as-listen", addr}, &out, &errOut); code != exitOK {
		t.Fatalf("appservice-registration: exit %d: %s", code, errOut.String())
	}
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	reg, err := appservice.ParseRegistration(raw)
	if err != nil {
		t.Fatalf("the server refuses the registration: %v", err)
	}
	if !reg.InterestedInUser("@abcd1234-asbridge:localhost", "localhost") || reg.InterestedInUser("@abcd1234-sender0:localhost", "localhost") {
		t.Errorf("namespace %q", asNamespace)
	}

	srv := testserver.Start(t, func(c *config.Config) { c.AppServices = []string{path} })
	out.Reset()
	errOut.Reset()
	code := run(context.Background(), []string{"-hs", srv.URL, "-shared-secret", testserver.SharedSecret, "-json-only",
		"appservice", "-registration", path, "-c", "2", "-m", "20"}, &out, &errOut)
	if code != exitOK {
		t.Fatalf("appservice: exit %d: %s\n%s", code, errOut.String(), out.String())
	}
	var rep appserviceReport
	if err := json.Unmarshal(bytes.TrimSpace(out.Bytes()), &rep); err != nil {
		t.Fatalf("report %q: %v", out.String(), err)
	}
	if rep.Delivered != 40 || rep.Missing != 0 || rep.Duplicates != 0 || rep.OutOfOrder != 0 || rep.Txns == 0 || rep.P99 <= 0 {
		t.Errorf("report %+v", rep)
	}
}
