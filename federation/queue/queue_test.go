package queue

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"
	"github.com/sirupsen/logrus"

	"github.com/tessera-hs/tessera/internal/database"
	"github.com/tessera-hs/tessera/internal/database/dbtest"
)

const origin = spec.ServerName("origin.test")

func openDB(tb testing.TB) *database.DB {
	tb.Helper()
	db := dbtest.Open(tb)
	tb.Cleanup(func() { db.Close() })
	return db
}

func quietLog() logrus.FieldLogger {
	l := logrus.New()
	l.SetOutput(io.Discard)
	return l
}

// newQueue starts a Queue on db that sends through r, closed at the end of
// the test (before db, as cleanups run last first).
func newQueue(tb testing.TB, db *database.DB, cfg Config, r *recorder) *Queue {
	tb.Helper()
	cfg.Origin = origin
	if cfg.MinBackoff == 0 {
		cfg.MinBackoff, cfg.MaxBackoff = 5*time.Millisecond, 20*time.Millisecond
	}
	q, err := New(context.Background(), db, cfg, r.send, quietLog())
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(q.Close)
	return q
}

// recorder is a SendFunc that records every attempt and can be told to fail
// or to hold sends until their ctx is cancelled.
type recorder struct {
	mu   sync.Mutex
	fail bool
	// refuse, if set, answers a transaction with an error instead of
	// delivering it when it returns one.
	refuse    func(gomatrixserverlib.Transaction) error
	block     bool
	delay     time.Duration
	attempts  []attempt
	delivered []gomatrixserverlib.Transaction
	inFlight  int
	maxFlight int
}

type attempt struct {
	at  time.Time
	txn gomatrixserverlib.Transaction
	ok  bool
}

var errUnreachable = errors.New("destination unreachable")

func (r *recorder) send(ctx context.Context, t gomatrixserverlib.Transaction) error {
	r.mu.Lock()
	r.inFlight++
	r.maxFlight = max(r.maxFlight, r.inFlight)
	fail, block, delay, refuse := r.fail, r.block, r.delay, r.refuse
	r.attempts = append(r.attempts, attempt{at: time.Now(), txn: t})
	r.mu.Unlock()
	defer func() {
		r.mu.Lock()
		r.inFlight--
		r.mu.Unlock()
	}()

	if block {
		<-ctx.Done()
		return ctx.Err()
	}
	if delay > 0 {
		time.Sleep(delay)
	}
	if fail {
		return errUnreachable
	}
	if refuse != nil {
		if err := refuse(t); err != nil {
			return err
		}
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.attempts[len(r.attempts)-1].ok = true
	r.delivered = append(r.delivered, t)
	return nil
}

func (r *recorder) setFail(fail bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.fail = fail
}

func (r *recorder) attemptsSnapshot() []attempt {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]attempt(nil), r.attempts...)
}

func (r *recorder) deliveredTo(dest spec.ServerName) []gomatrixserverlib.Transaction {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []gomatrixserverlib.Transaction
	for _, t := range r.delivered {
		if t.Destination == dest {
			out = append(out, t)
		}
	}
	return out
}

// pdusTo is the PDUs delivered to dest, in delivery order.
func (r *recorder) pdusTo(dest spec.ServerName) []string {
	var out []string
	for _, t := range r.deliveredTo(dest) {
		for _, p := range t.PDUs {
			out = append(out, string(p))
		}
	}
	return out
}

// edusTo is the content of the EDUs delivered to dest, in delivery order.
func (r *recorder) edusTo(dest spec.ServerName) []string {
	var out []string
	for _, t := range r.deliveredTo(dest) {
		for _, e := range t.EDUs {
			out = append(out, string(e.Content))
		}
	}
	return out
}

func waitFor(tb testing.TB, what string, cond func() bool) {
	tb.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			tb.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

func pdu(n int) json.RawMessage { return json.RawMessage(fmt.Sprintf(`{"seq":%d}`, n)) }

func pduRange(from, to int) []string {
	var out []string
	for i := from; i < to; i++ {
		out = append(out, string(pdu(i)))
	}
	return out
}

func edu(n int) gomatrixserverlib.EDU {
	return gomatrixserverlib.EDU{Type: "m.typing", Content: spec.RawJSON(fmt.Sprintf(`{"seq":%d}`, n))}
}

func equal(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func sendPDUs(tb testing.TB, q *Queue, dests []spec.ServerName, from, to int) {
	tb.Helper()
	for i := from; i < to; i++ {
		if err := q.SendPDU(context.Background(), dests, pdu(i)); err != nil {
			tb.Fatal(err)
		}
	}
}

func sendEDUs(tb testing.TB, q *Queue, dests []spec.ServerName, from, to int) {
	tb.Helper()
	for i := from; i < to; i++ {
		if err := q.SendEDU(context.Background(), dests, edu(i)); err != nil {
			tb.Fatal(err)
		}
	}
}

// assertDrained checks that nothing is left: no rows, no stored JSON, no
// worker.
func assertDrained(t *testing.T, db *database.DB, q *Queue) {
	t.Helper()
	waitFor(t, "workers to exit", func() bool {
		q.mu.Lock()
		defer q.mu.Unlock()
		return len(q.workers) == 0
	})
	for _, table := range []string{"federation_queue_pdus", "federation_queue_edus", "federation_queue_json"} {
		var n int
		if err := db.QueryRowContext(context.Background(), `SELECT COUNT(*) FROM `+table).Scan(&n); err != nil {
			t.Fatal(err)
		}
		if n != 0 {
			t.Errorf("%s has %d rows left", table, n)
		}
	}
}

func TestOrderPreserved(t *testing.T) {
	const n = 300
	db := openDB(t)
	r := &recorder{}
	q := newQueue(t, db, Config{}, r)
	dest := []spec.ServerName{"b.test"}

	sendPDUs(t, q, dest, 0, n)
	waitFor(t, "all PDUs", func() bool { return len(r.pdusTo("b.test")) >= n })

	if got := r.pdusTo("b.test"); !equal(got, pduRange(0, n)) {
		t.Fatalf("PDUs delivered out of order or more than once:\n%v", got)
	}
	ids := map[gomatrixserverlib.TransactionID]bool{}
	for _, txn := range r.deliveredTo("b.test") {
		if len(txn.PDUs) > maxPDUsPerTxn {
			t.Errorf("transaction %s has %d PDUs", txn.TransactionID, len(txn.PDUs))
		}
		if txn.Origin != origin || txn.Destination != "b.test" || txn.OriginServerTS == 0 || txn.TransactionID == "" {
			t.Errorf("transaction header = %q %q %d %q", txn.Origin, txn.Destination, txn.OriginServerTS, txn.TransactionID)
		}
		if ids[txn.TransactionID] {
			t.Errorf("transaction ID %s reused for another batch", txn.TransactionID)
		}
		ids[txn.TransactionID] = true
	}
	t.Logf("%d PDUs in %d transactions", n, len(ids))
	// The last batch leaves the tables just after its send returns.
	waitFor(t, "nothing pending", func() bool { p, e := q.Pending("b.test"); return p == 0 && e == 0 })
	assertDrained(t, db, q)
}

// TestBatching: items queued while a send is under way share the next
// transaction rather than each waiting for one of its own.
func TestBatching(t *testing.T) {
	const n = 200
	db := openDB(t)
	r := &recorder{delay: 20 * time.Millisecond} // a slow network
	q := newQueue(t, db, Config{}, r)
	sendPDUs(t, q, []spec.ServerName{"b.test"}, 0, n)
	waitFor(t, "all PDUs", func() bool { return len(r.pdusTo("b.test")) >= n })

	if got := r.pdusTo("b.test"); !equal(got, pduRange(0, n)) {
		t.Fatalf("PDUs = %v", got)
	}
	txns := r.deliveredTo("b.test")
	if len(txns) > n/4 {
		t.Errorf("%d PDUs took %d transactions; queued items are not batched", n, len(txns))
	}
	t.Logf("%d PDUs in %d transactions", n, len(txns))
	assertDrained(t, db, q)
}

// TestBatchLimits queues everything while no worker runs (after Close), so
// the next Queue finds it all waiting and the batches are deterministic.
func TestBatchLimits(t *testing.T) {
	type shape struct{ pdus, edus int }
	tests := []struct {
		name       string
		pdus, edus int
		want       []shape
	}{
		{"120 PDUs", 120, 0, []shape{{50, 0}, {50, 0}, {20, 0}}},
		{"150 EDUs", 0, 150, []shape{{0, 100}, {0, 50}}},
		{"full transaction", 50, 100, []shape{{50, 100}}},
		{"mixed", 60, 130, []shape{{50, 100}, {10, 30}}},
		{"one of each", 1, 1, []shape{{1, 1}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			db := openDB(t)
			dest := []spec.ServerName{"b.test"}
			stopped := newQueue(t, db, Config{}, &recorder{})
			stopped.Close()
			sendPDUs(t, stopped, dest, 0, tt.pdus)
			sendEDUs(t, stopped, dest, 0, tt.edus)
			if p, e := stopped.Pending("b.test"); p != tt.pdus || e != tt.edus {
				t.Fatalf("Pending = %d, %d; want %d, %d", p, e, tt.pdus, tt.edus)
			}

			r := &recorder{}
			q := newQueue(t, db, Config{}, r)
			waitFor(t, "all items", func() bool {
				return len(r.pdusTo("b.test")) >= tt.pdus && len(r.edusTo("b.test")) >= tt.edus
			})
			var got []shape
			for _, txn := range r.deliveredTo("b.test") {
				got = append(got, shape{len(txn.PDUs), len(txn.EDUs)})
			}
			if fmt.Sprint(got) != fmt.Sprint(tt.want) {
				t.Errorf("transactions = %v, want %v", got, tt.want)
			}
			if got := r.pdusTo("b.test"); !equal(got, pduRange(0, tt.pdus)) {
				t.Errorf("PDUs = %v", got)
			}
			var wantEDUs []string
			for i := range tt.edus {
				wantEDUs = append(wantEDUs, string(edu(i).Content))
			}
			if got := r.edusTo("b.test"); !equal(got, wantEDUs) {
				t.Errorf("EDUs = %v", got)
			}
			assertDrained(t, db, q)
		})
	}
}

func TestFailureThenRecovery(t *testing.T) {
	db := openDB(t)
	r := &recorder{fail: true}
	q := newQueue(t, db, Config{}, r)
	dest := []spec.ServerName{"b.test"}

	sendPDUs(t, q, dest, 0, 10)
	waitFor(t, "failed attempts", func() bool { return len(r.attemptsSnapshot()) >= 3 })
	// What accumulates during the outage goes in later batches.
	sendPDUs(t, q, dest, 10, 130)
	sendEDUs(t, q, dest, 0, 5)
	waitFor(t, "more failed attempts", func() bool { return len(r.attemptsSnapshot()) >= 6 })

	failed := r.attemptsSnapshot()
	first := failed[0].txn
	for _, a := range failed {
		if a.txn.TransactionID != first.TransactionID || fmt.Sprint(a.txn.PDUs) != fmt.Sprint(first.PDUs) || len(a.txn.EDUs) != 0 {
			t.Fatalf("retry %s with %d PDUs, %d EDUs differs from first attempt %s with %d PDUs",
				a.txn.TransactionID, len(a.txn.PDUs), len(a.txn.EDUs), first.TransactionID, len(first.PDUs))
		}
	}

	r.setFail(false)
	q.Wake("b.test")
	waitFor(t, "recovery", func() bool { return len(r.pdusTo("b.test")) >= 130 && len(r.edusTo("b.test")) >= 5 })

	if got := r.pdusTo("b.test"); !equal(got, pduRange(0, 130)) {
		t.Fatalf("PDUs not delivered exactly once in order:\n%v", got)
	}
	delivered := r.deliveredTo("b.test")
	if delivered[0].TransactionID != first.TransactionID {
		t.Errorf("first delivery %s, want the retried %s", delivered[0].TransactionID, first.TransactionID)
	}
	for _, txn := range delivered {
		if len(txn.PDUs) > maxPDUsPerTxn || len(txn.EDUs) > maxEDUsPerTxn {
			t.Errorf("transaction %s has %d PDUs, %d EDUs", txn.TransactionID, len(txn.PDUs), len(txn.EDUs))
		}
	}
	assertDrained(t, db, q)
}

func TestBackoffGrows(t *testing.T) {
	const minBackoff = 20 * time.Millisecond
	db := openDB(t)
	r := &recorder{fail: true}
	q := newQueue(t, db, Config{MinBackoff: minBackoff, MaxBackoff: time.Hour}, r)
	sendPDUs(t, q, []spec.ServerName{"b.test"}, 0, 1)
	waitFor(t, "five attempts", func() bool { return len(r.attemptsSnapshot()) >= 5 })

	a := r.attemptsSnapshot()
	var gaps []time.Duration
	for i := 1; i < 5; i++ {
		gaps = append(gaps, a[i].at.Sub(a[i-1].at))
	}
	for i, gap := range gaps {
		// The wait after failure i+1 is minBackoff<<i less at most a fifth.
		if floor := (minBackoff << i) * 4 / 5; gap < floor {
			t.Errorf("gap %d = %v, want at least %v (all gaps %v)", i, gap, floor, gaps)
		}
	}
	if gaps[3] < 2*gaps[0] {
		t.Errorf("backoff did not grow: gaps %v", gaps)
	}
}

func TestWake(t *testing.T) {
	tests := []struct {
		name string
		// failAgain: the destination still fails after Wake, and the
		// next wait must be back at MinBackoff.
		failAgain bool
	}{
		{"retries at once", false},
		{"resets backoff", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			db := openDB(t)
			r := &recorder{fail: true}
			// MinBackoff long enough that only Wake can explain a quick retry.
			minBackoff := time.Hour
			if tt.failAgain {
				minBackoff = 30 * time.Millisecond
			}
			q := newQueue(t, db, Config{MinBackoff: minBackoff, MaxBackoff: time.Hour}, r)
			sendPDUs(t, q, []spec.ServerName{"b.test"}, 0, 1)

			if !tt.failAgain {
				waitFor(t, "first attempt", func() bool { return len(r.attemptsSnapshot()) >= 1 })
				r.setFail(false)
				time.Sleep(50 * time.Millisecond)
				if n := len(r.attemptsSnapshot()); n != 1 {
					t.Fatalf("%d attempts before Wake, want 1", n)
				}
				q.Wake("b.test")
				waitFor(t, "delivery after Wake", func() bool { return len(r.pdusTo("b.test")) == 1 })
				return
			}

			// Four failures: the next wait would be 240ms less a fifth.
			waitFor(t, "four attempts", func() bool { return len(r.attemptsSnapshot()) >= 4 })
			q.Wake("b.test")
			waitFor(t, "two more attempts", func() bool { return len(r.attemptsSnapshot()) >= 6 })
			a := r.attemptsSnapshot()
			if gap := a[5].at.Sub(a[4].at); gap >= 150*time.Millisecond {
				t.Errorf("wait after Wake and a new failure = %v, want about %v", gap, minBackoff)
			}
		})
	}
}

func TestRestartReusesTxnID(t *testing.T) {
	db := openDB(t)
	dest := []spec.ServerName{"b.test"}
	down := &recorder{fail: true}
	q1 := newQueue(t, db, Config{}, down)
	sendPDUs(t, q1, dest, 0, 3)
	waitFor(t, "failed attempts", func() bool { return len(down.attemptsSnapshot()) >= 2 })
	q1.Close()
	tried := down.attemptsSnapshot()
	time.Sleep(30 * time.Millisecond)
	if n := len(down.attemptsSnapshot()); n != len(tried) {
		t.Fatalf("%d sends after Close", n-len(tried))
	}
	sendPDUs(t, q1, dest, 3, 5) // stored for the next Queue to send

	up := &recorder{}
	q2 := newQueue(t, db, Config{}, up)
	waitFor(t, "delivery after restart", func() bool { return len(up.pdusTo("b.test")) >= 5 })

	last := tried[len(tried)-1].txn
	first := up.deliveredTo("b.test")[0]
	if first.TransactionID != last.TransactionID || fmt.Sprint(first.PDUs) != fmt.Sprint(last.PDUs) {
		t.Errorf("after restart sent %s %s, want the attempted %s %s",
			first.TransactionID, first.PDUs, last.TransactionID, last.PDUs)
	}
	if got := up.pdusTo("b.test"); !equal(got, pduRange(0, 5)) {
		t.Errorf("PDUs = %v", got)
	}
	assertDrained(t, db, q2)
}

func TestCloseCancelsSendInFlight(t *testing.T) {
	db := openDB(t)
	r := &recorder{block: true}
	q := newQueue(t, db, Config{}, r)
	sendPDUs(t, q, []spec.ServerName{"b.test"}, 0, 1)
	waitFor(t, "send in flight", func() bool { return len(r.attemptsSnapshot()) == 1 })

	done := make(chan struct{})
	go func() { q.Close(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("Close did not return while a send was in flight")
	}
	if p, _ := q.Pending("b.test"); p != 1 {
		t.Errorf("Pending = %d after a cancelled send, want 1", p)
	}
}

func TestManyDestinations(t *testing.T) {
	const (
		senders = 10
		perSend = 60
	)
	db := openDB(t)
	r := &recorder{delay: time.Millisecond}
	q := newQueue(t, db, Config{}, r)

	// Sender g sends its PDUs to three destinations of its own and to one
	// they all share; each sender also sends EDUs to its first destination.
	own := func(g, i int) spec.ServerName { return spec.ServerName(fmt.Sprintf("s%d-%d.test", g, i)) }
	var wg sync.WaitGroup
	for g := range senders {
		wg.Go(func() {
			dests := []spec.ServerName{own(g, 0), own(g, 1), own(g, 2), "shared.test"}
			for i := range perSend {
				p := json.RawMessage(fmt.Sprintf(`{"sender":%d,"seq":%d}`, g, i))
				if err := q.SendPDU(context.Background(), dests, p); err != nil {
					t.Error(err)
					return
				}
				if err := q.SendEDU(context.Background(), dests[:1], edu(i)); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()

	waitFor(t, "all deliveries", func() bool {
		for g := range senders {
			for i := range 3 {
				if len(r.pdusTo(own(g, i))) < perSend {
					return false
				}
			}
			if len(r.edusTo(own(g, 0))) < perSend {
				return false
			}
		}
		return len(r.pdusTo("shared.test")) >= senders*perSend
	})

	bySender := func(pdus []string) map[int][]int {
		out := map[int][]int{}
		for _, p := range pdus {
			var v struct{ Sender, Seq int }
			if err := json.Unmarshal([]byte(p), &v); err != nil {
				t.Fatal(err)
			}
			out[v.Sender] = append(out[v.Sender], v.Seq)
		}
		return out
	}
	want := fmt.Sprint(func() []int {
		s := make([]int, perSend)
		for i := range s {
			s[i] = i
		}
		return s
	}())
	for g := range senders {
		for i := range 3 {
			if got := bySender(r.pdusTo(own(g, i))); len(got) != 1 || fmt.Sprint(got[g]) != want {
				t.Errorf("%s got %v", own(g, i), got)
			}
		}
		if got := len(r.edusTo(own(g, 0))); got != perSend {
			t.Errorf("%s got %d EDUs, want %d", own(g, 0), got, perSend)
		}
	}
	shared := bySender(r.pdusTo("shared.test"))
	for g := range senders {
		if fmt.Sprint(shared[g]) != want {
			t.Errorf("shared.test got sender %d's PDUs as %v", g, shared[g])
		}
	}
	r.mu.Lock()
	maxFlight := r.maxFlight
	r.mu.Unlock()
	if maxFlight < 2 {
		t.Errorf("at most %d sends at once: destinations are not sent to in parallel", maxFlight)
	}
	assertDrained(t, db, q)
}

func TestIgnoresOwnServerAndDuplicates(t *testing.T) {
	tests := []struct {
		name  string
		dests []spec.ServerName
		want  map[spec.ServerName]int // PDUs delivered per destination
	}{
		{"only ourselves", []spec.ServerName{origin}, map[spec.ServerName]int{}},
		{"none", nil, map[spec.ServerName]int{}},
		{"duplicates", []spec.ServerName{"b.test", "b.test", "c.test", "b.test"},
			map[spec.ServerName]int{"b.test": 1, "c.test": 1}},
		{"ourselves among others", []spec.ServerName{origin, "b.test", "", origin},
			map[spec.ServerName]int{"b.test": 1}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			db := openDB(t)
			r := &recorder{}
			q := newQueue(t, db, Config{}, r)
			if err := q.SendPDU(context.Background(), tt.dests, pdu(1)); err != nil {
				t.Fatal(err)
			}
			if err := q.SendEDU(context.Background(), tt.dests, edu(1)); err != nil {
				t.Fatal(err)
			}
			assertDrained(t, db, q)
			got := map[spec.ServerName]int{}
			r.mu.Lock()
			for _, txn := range r.delivered {
				got[txn.Destination] += len(txn.PDUs)
			}
			r.mu.Unlock()
			if fmt.Sprint(got) != fmt.Sprint(tt.want) {
				t.Errorf("PDUs per destination = %v, want %v", got, tt.want)
			}
			if p, e := q.Pending(origin); p != 0 || e != 0 {
				t.Errorf("Pending(origin) = %d, %d", p, e)
			}
		})
	}
}

func TestRejectsInvalidPDU(t *testing.T) {
	db := openDB(t)
	q := newQueue(t, db, Config{}, &recorder{})
	if err := q.SendPDU(context.Background(), []spec.ServerName{"b.test"}, json.RawMessage(`{"seq":`)); err == nil {
		t.Fatal("SendPDU accepted invalid JSON")
	}
	if p, _ := q.Pending("b.test"); p != 0 {
		t.Errorf("Pending = %d after a rejected PDU", p)
	}
}

func TestBackoffBounds(t *testing.T) {
	q := &Queue{cfg: Config{MinBackoff: time.Second, MaxBackoff: 10 * time.Second}}
	tests := []struct {
		failures int
		want     time.Duration // before jitter
	}{
		{1, time.Second},
		{2, 2 * time.Second},
		{4, 8 * time.Second},
		{5, 10 * time.Second},
		{1000, 10 * time.Second},
	}
	for _, tt := range tests {
		for range 20 {
			if got := q.backoff(tt.failures); got > tt.want || got < tt.want*4/5 {
				t.Errorf("backoff(%d) = %v, want within [%v, %v]", tt.failures, got, tt.want*4/5, tt.want)
			}
		}
	}
}

// BenchmarkQueueThroughput measures PDUs per second from SendPDU to a
// SendFunc that returns at once, each PDU going to dests destinations.
func BenchmarkQueueThroughput(b *testing.B) {
	for _, n := range []int{1, 10} {
		b.Run(fmt.Sprintf("dests=%d", n), func(b *testing.B) {
			db := openDB(b)
			var sent atomic.Int64
			send := func(ctx context.Context, t gomatrixserverlib.Transaction) error {
				sent.Add(int64(len(t.PDUs)))
				return nil
			}
			q, err := New(context.Background(), db, Config{Origin: origin}, send, quietLog())
			if err != nil {
				b.Fatal(err)
			}
			b.Cleanup(q.Close)
			dests := make([]spec.ServerName, n)
			for i := range dests {
				dests[i] = spec.ServerName(fmt.Sprintf("d%d.test", i))
			}
			p := json.RawMessage(`{"type":"m.room.message","content":{"body":"hello"},"room_id":"!r:origin.test"}`)

			b.ResetTimer()
			start := time.Now()
			for range b.N {
				if err := q.SendPDU(context.Background(), dests, p); err != nil {
					b.Fatal(err)
				}
			}
			want := int64(b.N * n)
			for sent.Load() < want {
				time.Sleep(100 * time.Microsecond)
			}
			b.ReportMetric(float64(want)/time.Since(start).Seconds(), "PDUs/s")
		})
	}
}

// TestSendPDUTx: a PDU queued in the caller's transaction goes out if and
// only if that transaction commits.
func TestSendPDUTx(t *testing.T) {
	db := openDB(t)
	r := &recorder{}
	q := newQueue(t, db, Config{}, r)
	ctx := context.Background()
	dest := []spec.ServerName{"b.test"}
	rolledBack := errors.New("roll back")
	err := db.WithTx(ctx, func(tx *database.Tx) error {
		if err := q.SendPDUTx(ctx, tx, dest, json.RawMessage(`{"seq":"lost"}`)); err != nil {
			t.Fatal(err)
		}
		return rolledBack
	})
	if !errors.Is(err, rolledBack) {
		t.Fatal(err)
	}
	if err := db.WithTx(ctx, func(tx *database.Tx) error {
		return q.SendPDUTx(ctx, tx, dest, json.RawMessage(`{"seq":"kept"}`))
	}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the committed PDU", func() bool { return len(r.pdusTo("b.test")) >= 1 })
	assertDrained(t, db, q)
	if got := r.pdusTo("b.test"); len(got) != 1 || !strings.Contains(fmt.Sprint(got), "kept") {
		t.Fatalf("delivered %v, want only the committed PDU", got)
	}
}
