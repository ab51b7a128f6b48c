package federation_test

import (
	"encoding/json"
	"net/http"
	"testing"

	"github.com/tessera-hs/tessera/internal/config"
	"github.com/tessera-hs/tessera/internal/testserver"
)

func TestWellKnownServer(t *testing.T) {
	tests := []struct {
		name   string
		value  string
		status int
	}{
		{"delegated", "matrix.example.org:443", http.StatusOK},
		{"not configured", "", http.StatusNotFound},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := testserver.Start(t, testserver.Federation("127.0.0.1"), func(c *config.Config) { c.Federation.WellKnownServer = tt.value })
			resp, err := http.Get(s.URL + "/.well-known/matrix/server")
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			if resp.StatusCode != tt.status {
				t.Fatalf("status %d, want %d", resp.StatusCode, tt.status)
			}
			if tt.status != http.StatusOK {
				return
			}
			var body map[string]string
			if err := json.NewDecoder(resp.Body).Decode(&body); err != nil || body["m.server"] != tt.value {
				t.Fatalf("body %v (%v), want m.server %q", body, err, tt.value)
			}
		})
	}
}
