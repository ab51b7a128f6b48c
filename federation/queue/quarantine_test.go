package queue

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/matrix-org/gomatrix"
	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"
)

// refuseBad answers like a server that will not take a transaction with
// anything "bad" in it: 400 M_NOT_JSON, as Synapse answers invalid UTF-8.
func refuseBad(t gomatrixserverlib.Transaction) error {
	body, _ := json.Marshal(t)
	if strings.Contains(string(body), "bad") {
		return fmt.Errorf("send: %w", gomatrix.HTTPError{Code: http.StatusBadRequest, Message: "M_NOT_JSON"})
	}
	return nil
}

// TestRefusedItemQuarantined: a PDU and an EDU the destination refuses for
// good (400) are split out of their transactions and quarantined; all the
// rest is delivered, in order, and nothing is left queued.
func TestRefusedItemQuarantined(t *testing.T) {
	db := openDB(t)
	r := &recorder{refuse: refuseBad}
	q := newQueue(t, db, Config{}, r)
	dest := []spec.ServerName{"a.test"}
	ctx := context.Background()

	var want []string
	for i := 0; i < 120; i++ {
		p := pdu(i)
		if i == 37 {
			p = json.RawMessage(`{"seq":37,"bad":true}`)
		} else {
			want = append(want, string(p))
		}
		if err := q.SendPDU(ctx, dest, p); err != nil {
			t.Fatal(err)
		}
	}
	sendEDUs(t, q, dest, 0, 5)
	if err := q.SendEDU(ctx, dest, gomatrixserverlib.EDU{Type: "m.typing", Content: spec.RawJSON(`{"bad":1}`)}); err != nil {
		t.Fatal(err)
	}
	sendEDUs(t, q, dest, 5, 10)

	waitFor(t, "the queue to drain", func() bool {
		p, e := q.Pending("a.test")
		return p == 0 && e == 0
	})
	if got := r.pdusTo("a.test"); !equal(got, want) {
		t.Fatalf("delivered PDUs %v, want %v", got, want)
	}
	if got := r.edusTo("a.test"); len(got) != 10 {
		t.Fatalf("delivered %d EDUs, want 10: %v", len(got), got)
	}
	if n := q.Quarantined("a.test"); n != 2 {
		t.Fatalf("quarantined %d items, want 2", n)
	}
	rows, err := db.QueryContext(ctx, `SELECT kind, json, error FROM federation_queue_quarantine
		WHERE destination = 'a.test' ORDER BY kind DESC`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var got []string
	for rows.Next() {
		var kind, js, reason string
		if err := rows.Scan(&kind, &js, &reason); err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(reason, "400") && !strings.Contains(reason, "M_NOT_JSON") {
			t.Errorf("quarantined %s with reason %q", kind, reason)
		}
		got = append(got, kind+" "+js)
	}
	if len(got) != 2 || got[0] != `pdu {"seq":37,"bad":true}` || !strings.HasPrefix(got[1], "edu ") || !strings.Contains(got[1], `"bad":1`) {
		t.Fatalf("quarantine holds %q", got)
	}
	assertDrained(t, db, q)
}

// TestRetriableRefusalKept: answers that may change (429, 401, 500) are
// retried with the same items, never quarantined.
func TestRetriableRefusalKept(t *testing.T) {
	for _, code := range []int{http.StatusTooManyRequests, http.StatusUnauthorized, http.StatusInternalServerError} {
		t.Run(fmt.Sprint(code), func(t *testing.T) {
			db := openDB(t)
			var failing atomic.Bool
			failing.Store(true)
			r := &recorder{}
			r.refuse = func(gomatrixserverlib.Transaction) error {
				if failing.Load() {
					return gomatrix.HTTPError{Code: code}
				}
				return nil
			}
			q := newQueue(t, db, Config{}, r)
			sendPDUs(t, q, []spec.ServerName{"a.test"}, 0, 3)
			waitFor(t, "retries", func() bool { return len(r.attemptsSnapshot()) >= 3 })
			failing.Store(false)
			waitFor(t, "delivery", func() bool { return len(r.pdusTo("a.test")) == 3 })
			if n := q.Quarantined("a.test"); n != 0 {
				t.Fatalf("quarantined %d items after a %d", n, code)
			}
		})
	}
}
