package appservice

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/tessera-hs/tessera/internal/database"
	"github.com/tessera-hs/tessera/internal/database/dbtest"
	"github.com/tessera-hs/tessera/roomserver"
)

// fakeRooms has no events, and one room where a puppet is joined: typing
// there is what the tests send.
type fakeRooms struct{}

func (fakeRooms) EventsAfter(context.Context, int64, int) ([]*roomserver.Event, error) {
	return nil, nil
}
func (fakeRooms) CurrentPos() int64 { return 0 }
func (fakeRooms) JoinedUsers(context.Context, string) ([]string, error) {
	return []string{"@alice:hs.test", "@telegram_1:hs.test"}, nil
}
func (fakeRooms) JoinedRooms(context.Context, string) ([]string, error) { return nil, nil }
func (fakeRooms) Aliases(context.Context, string) ([]string, error)     { return nil, nil }

// fakeAS records each attempt and fails while fail says so.
type fakeAS struct {
	mu       sync.Mutex
	fail     int // attempts still to fail with 500
	attempts []attempt
}

type attempt struct {
	txn  string
	body string
	at   time.Time
}

func (f *fakeAS) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	f.mu.Lock()
	defer f.mu.Unlock()
	if r.Header.Get("Authorization") != "Bearer hs-telegram" {
		w.WriteHeader(403)
		return
	}
	f.attempts = append(f.attempts, attempt{strings.TrimPrefix(r.URL.Path, "/_matrix/app/v1/transactions/"), string(body), time.Now()})
	if f.fail > 0 {
		f.fail--
		w.WriteHeader(500)
		return
	}
	io.WriteString(w, "{}")
}

func (f *fakeAS) wait(t *testing.T, n int) []attempt {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		f.mu.Lock()
		out := append([]attempt(nil), f.attempts...)
		f.mu.Unlock()
		if len(out) >= n {
			return out
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d attempts, want %d", len(out), n)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func startService(t *testing.T, db *database.DB, url string, cfg Config) *Service {
	t.Helper()
	r := reg(t, strings.Replace(telegram, "http://localhost:29317", url, 1))
	set, err := NewSet(serverName, []*Registration{r})
	if err != nil {
		t.Fatal(err)
	}
	log := logrus.New()
	log.SetOutput(io.Discard)
	s, err := New(context.Background(), db, set, fakeRooms{}, nil, nil, nil, cfg, log)
	if err != nil {
		t.Fatal(err)
	}
	s.Start()
	return s
}

func openDB(t *testing.T) *database.DB {
	t.Helper()
	db := dbtest.Open(t)
	t.Cleanup(func() { db.Close() })
	return db
}

// TestSenderRetriesWithBackoff: a transaction the service refuses is
// retried under the same ID, the waits doubling up to the maximum.
func TestSenderRetriesWithBackoff(t *testing.T) {
	as := &fakeAS{fail: 4}
	hs := httptest.NewServer(as)
	defer hs.Close()
	s := startService(t, openDB(t), hs.URL, Config{MinBackoff: 100 * time.Millisecond, MaxBackoff: 250 * time.Millisecond})
	defer s.Close()
	s.Typing("!room:hs.test", []string{"@alice:hs.test"})
	got := as.wait(t, 5)
	for _, a := range got[1:] {
		if a.txn != got[0].txn || a.body != got[0].body {
			t.Errorf("retry %s %s, want the same transaction as %s %s", a.txn, a.body, got[0].txn, got[0].body)
		}
	}
	if !strings.Contains(got[0].body, `"m.typing"`) || !strings.Contains(got[0].body, `"de.sorunome.msc2409.ephemeral"`) {
		t.Errorf("body %s", got[0].body)
	}
	// 100, 200, then capped at 250 (uncapped, the last would be 800).
	// Loose above: other tests share the machine.
	want := []time.Duration{100, 200, 250, 250}
	for i, w := range want {
		gap := got[i+1].at.Sub(got[i].at)
		if gap < w*time.Millisecond*9/10 || gap > 700*time.Millisecond {
			t.Errorf("wait %d: %v, want about %v ms", i, gap, w)
		}
	}
	// Delivered: the next change is a new transaction.
	s.Typing("!room:hs.test", []string{})
	got = as.wait(t, 6)
	if got[5].txn == got[0].txn {
		t.Errorf("a new transaction reused the ID %s", got[0].txn)
	}
}

// TestSenderResumesPendingAfterRestart: the transaction being retried when
// the server stops is sent first after it starts, same ID, same body.
func TestSenderResumesPendingAfterRestart(t *testing.T) {
	as := &fakeAS{fail: 1 << 30}
	hs := httptest.NewServer(as)
	defer hs.Close()
	db := openDB(t)
	s := startService(t, db, hs.URL, Config{MinBackoff: 20 * time.Millisecond})
	s.Typing("!room:hs.test", []string{"@alice:hs.test"})
	first := as.wait(t, 1)[0]
	s.Close()

	as.mu.Lock()
	as.fail = 0
	n := len(as.attempts)
	as.mu.Unlock()
	s = startService(t, db, hs.URL, Config{MinBackoff: 20 * time.Millisecond})
	defer s.Close()
	got := as.wait(t, n+1)[n]
	if got.txn != first.txn || got.body != first.body {
		t.Errorf("after the restart: %s %s, want %s %s", got.txn, got.body, first.txn, first.body)
	}
	// Delivered and recorded: the next start sends nothing again.
	time.Sleep(50 * time.Millisecond)
	s.Close()
	s = startService(t, db, hs.URL, Config{MinBackoff: 20 * time.Millisecond})
	defer s.Close()
	time.Sleep(100 * time.Millisecond)
	as.mu.Lock()
	defer as.mu.Unlock()
	if len(as.attempts) != n+1 {
		t.Errorf("%d attempts after a clean restart, want %d", len(as.attempts), n+1)
	}
}
