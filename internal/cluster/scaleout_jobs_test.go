package cluster_test

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"maunium.net/go/mautrix/event"

	"github.com/tessera-hs/tessera/internal/config"
)

// watcher is an application service interested in every room: it records
// the transactions the deployment pushes to it.
type watcher struct {
	mu     sync.Mutex
	txns   map[string]int // transaction ID: times received
	events map[string]int // event ID: times received, over all transactions
}

func (w *watcher) ServeHTTP(rw http.ResponseWriter, r *http.Request) {
	txnID, ok := strings.CutPrefix(r.URL.Path, "/_matrix/app/v1/transactions/")
	if !ok || r.Method != http.MethodPut {
		rw.WriteHeader(http.StatusNotFound)
		return
	}
	var body struct {
		Events []struct {
			EventID string `json:"event_id"`
			Type    string `json:"type"`
		} `json:"events"`
	}
	if err := json.NewDecoder(r.Body).Decode(&body); err != nil {
		rw.WriteHeader(http.StatusBadRequest)
		return
	}
	w.mu.Lock()
	w.txns[txnID]++
	for _, ev := range body.Events {
		if ev.Type == event.EventMessage.Type {
			w.events[ev.EventID]++
		}
	}
	w.mu.Unlock()
	rw.Header().Set("Content-Type", "application/json")
	_, _ = rw.Write([]byte(`{}`))
}

// With three processes, an application service receives each transaction
// once and each event once, whichever process committed it: one process
// pushes to it.
func TestScaleOutAppService(t *testing.T) {
	w := &watcher{txns: map[string]int{}, events: map[string]int{}}
	asSrv := httptest.NewServer(w)
	t.Cleanup(asSrv.Close)
	reg := filepath.Join(t.TempDir(), "watcher.yaml")
	if err := os.WriteFile(reg, []byte(`id: watcher
url: `+asSrv.URL+`
as_token: as-token-watcher
hs_token: hs-token-watcher
sender_localpart: watcherbot
namespaces:
  rooms: [{exclusive: false, regex: '!.*'}]
`), 0o600); err != nil {
		t.Fatal(err)
	}
	c := startScaleOut(t, func(cfg *config.Config) { cfg.AppServices = []string{reg} })
	const perWriter = 10
	sent := c.sendFromAll(t, perWriter)
	deadline := time.Now().Add(30 * time.Second)
	for {
		w.mu.Lock()
		n := len(w.events)
		w.mu.Unlock()
		if n >= len(sent) || time.Now().After(deadline) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	time.Sleep(500 * time.Millisecond) // time for a duplicate to show
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, id := range sent {
		if n := w.events[id]; n != 1 {
			t.Errorf("event %s pushed %d times, want 1", id, n)
		}
	}
	for id, n := range w.txns {
		if n != 1 {
			t.Errorf("transaction %s pushed %d times, want 1", id, n)
		}
	}
	t.Logf("%d events in %d transactions", len(sent), len(w.txns))
}
