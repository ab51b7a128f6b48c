package queue

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/tessera-hs/tessera/internal/database"
	"github.com/tessera-hs/tessera/internal/database/dbtest"
)

// Three queues on one database, as three processes of a deployment
// (docs/scaling.md), each sending to the destinations it owns: whichever
// queue a PDU is queued through, each destination receives it once, from
// its owner, also after the queues restart.
func TestOwnedDestinations(t *testing.T) {
	store := dbtest.New(t)
	dests := []spec.ServerName{"d0.test", "d1.test", "d2.test", "d3.test", "d4.test", "d5.test"}
	owner := func(d spec.ServerName) int {
		for i, x := range dests {
			if x == d {
				return i % 3
			}
		}
		return -1
	}
	var (
		mu     sync.Mutex
		queues [3]*Queue
	)
	recs := [3]*recorder{{}, {}, {}}
	start := func(i int) {
		q := newQueue(t, store.Open(t), Config{
			Owns: func(d spec.ServerName) bool { return owner(d) == i },
			// What the cluster's bus does between processes.
			Elsewhere: func(_ context.Context, tx *database.Tx, d spec.ServerName) error {
				tx.AfterCommit(func() {
					mu.Lock()
					o := queues[owner(d)]
					mu.Unlock()
					if o != nil {
						o.Kick(context.Background(), d)
					}
				})
				return nil
			},
		}, recs[i])
		mu.Lock()
		queues[i] = q
		mu.Unlock()
	}
	for i := range 3 {
		start(i)
	}
	const perQueue = 40
	send := func(round int) {
		var wg sync.WaitGroup
		for i := range 3 {
			mu.Lock()
			q := queues[i]
			mu.Unlock()
			wg.Add(1)
			go func() {
				defer wg.Done()
				base := (round*3 + i) * perQueue
				sendPDUs(t, q, dests, base, base+perQueue)
			}()
		}
		wg.Wait()
	}
	check := func(rounds int) {
		t.Helper()
		want := rounds * 3 * perQueue
		for _, d := range dests {
			waitFor(t, fmt.Sprintf("%d PDUs to %s", want, d), func() bool {
				return len(recs[owner(d)].pdusTo(d)) >= want
			})
		}
		time.Sleep(100 * time.Millisecond) // time for a duplicate to show
		for _, d := range dests {
			for i, r := range recs {
				got := r.pdusTo(d)
				if i != owner(d) {
					if len(got) > 0 {
						t.Errorf("queue %d sent %d PDUs to %s, owned by queue %d", i, len(got), d, owner(d))
					}
					continue
				}
				seen := map[string]bool{}
				for _, p := range got {
					if seen[p] {
						t.Errorf("%s received %s twice", d, p)
					}
					seen[p] = true
				}
				if len(seen) != want {
					t.Errorf("%s received %d distinct PDUs, want %d", d, len(seen), want)
				}
			}
		}
	}
	send(0)
	check(1)
	// A restart of every queue sends nothing again; then more.
	for i := range 3 {
		queues[i].Close()
		start(i)
	}
	send(1)
	check(2)
}
