package clientapi_test

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/id"

	"github.com/tessera-hs/tessera/internal/config"
	"github.com/tessera-hs/tessera/internal/testserver"
)

// BenchmarkWebhooks posts GitHub's example push (one commit) to one hook
// from 8 senders at once, each signed and with its own delivery ID, as
// GitHub delivers to a busy repository's hook. A client long-polls /sync
// in the room meanwhile. Reported: accepted webhooks/s (each 200 means the
// notice is committed in the room), the POST's p50/p99, and the p99 from
// the POST's start to the notice arriving at the syncing client.
//
//	go test -tags goolm,sqlite_fts5 ./clientapi -run '^$' -bench BenchmarkWebhooks -benchtime 2000x
func BenchmarkWebhooks(b *testing.B) {
	ex := githubExamples(b)
	srv := testserver.Start(b, withWebhooks, func(c *config.Config) {
		c.Webhooks.Rate = config.Rate{PerSecond: 1e6, Burst: 1e6}
	})
	alice := srv.Register("alice", "alice-password")
	room, err := alice.CreateRoom(context.Background(), &mautrix.ReqCreateRoom{Preset: "private_chat"})
	if err != nil {
		b.Fatal(err)
	}
	_, path, secret := createHook(b, srv, alice.AccessToken, room.RoomID, "github")
	body := example(b, ex, "push", 4, nil)
	sig := sign(secret, body)
	bot := srv.UserID("webhooks")

	// The syncing client records when each notice arrives.
	var seenMu sync.Mutex
	seen := map[id.EventID]time.Time{}
	syncCtx, stopSync := context.WithCancel(context.Background())
	syncDone := make(chan struct{})
	first, err := alice.FullSyncRequest(syncCtx, mautrix.ReqSync{Timeout: 0})
	if err != nil {
		b.Fatal(err)
	}
	go func() {
		defer close(syncDone)
		since := first.NextBatch
		for syncCtx.Err() == nil {
			res, err := alice.FullSyncRequest(syncCtx, mautrix.ReqSync{Since: since, Timeout: 30000,
				// Every notice, however many arrive between two syncs.
				FilterID: `{"room":{"timeline":{"limit":5000}}}`})
			if err != nil {
				return
			}
			now := time.Now()
			seenMu.Lock()
			if jr := res.Rooms.Join[room.RoomID]; jr != nil {
				for _, ev := range jr.Timeline.Events {
					if ev.Sender == bot {
						seen[ev.ID] = now
					}
				}
			}
			seenMu.Unlock()
			since = res.NextBatch
		}
	}()

	type result struct {
		start   time.Time
		latency time.Duration
		eventID id.EventID
	}
	results := make([]result, b.N)
	var next atomic.Int64
	var failed atomic.Int64
	const senders = 8
	b.ResetTimer()
	begin := time.Now()
	var wg sync.WaitGroup
	for w := 0; w < senders; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1)) - 1
				if i >= b.N {
					return
				}
				start := time.Now()
				r, err := tryDo(srv, req{Method: http.MethodPost, Path: path, Body: body, Headers: map[string]string{
					"X-GitHub-Event": "push", "X-Hub-Signature-256": sig, "X-GitHub-Delivery": fmt.Sprintf("bench-%d", i)}})
				if err != nil || r.Status != http.StatusOK {
					failed.Add(1)
					continue
				}
				results[i] = result{start: start, latency: time.Since(start), eventID: id.EventID(r.str("event_id"))}
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(begin)
	b.StopTimer()
	if n := failed.Load(); n > 0 {
		b.Fatalf("%d deliveries failed", n)
	}
	// Wait for the syncing client to see every notice.
	deadline := time.Now().Add(30 * time.Second)
	for {
		seenMu.Lock()
		n := len(seen)
		seenMu.Unlock()
		if n >= b.N || time.Now().After(deadline) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	stopSync()
	<-syncDone
	posts := make([]time.Duration, 0, b.N)
	visible := make([]time.Duration, 0, b.N)
	for _, r := range results {
		posts = append(posts, r.latency)
		if at, ok := seen[r.eventID]; ok {
			visible = append(visible, at.Sub(r.start))
		}
	}
	if len(visible) != b.N {
		b.Fatalf("the syncing client saw %d of %d notices", len(visible), b.N)
	}
	slices.Sort(posts)
	slices.Sort(visible)
	pct := func(d []time.Duration, p float64) float64 {
		return float64(d[int(float64(len(d)-1)*p)].Microseconds()) / 1000
	}
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "webhooks/s")
	b.ReportMetric(pct(posts, 0.50), "post-p50-ms")
	b.ReportMetric(pct(posts, 0.99), "post-p99-ms")
	b.ReportMetric(pct(visible, 0.99), "synced-p99-ms")
}
