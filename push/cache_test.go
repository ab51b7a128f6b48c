package push

import (
	"context"
	"fmt"
	"testing"

	"github.com/sirupsen/logrus"

	"github.com/tessera-hs/tessera/internal/database/dbtest"
)

func row(user, room, thread string, pos int64, highlight bool) actionRow {
	return actionRow{userID: user, roomID: room, threadID: thread, pos: pos, outcome: Outcome{Notify: true, Highlight: highlight}}
}

func TestCountCache(t *testing.T) {
	c := newCountCache()
	if _, ok := c.lookup("@a:x", "!r:x"); ok {
		t.Fatal("hit in an empty cache")
	}
	// A computed count is kept, and new notifications are added to it
	// unless they are already read.
	e := c.begin("@a:x", "!r:x")
	if c.begin("@a:x", "!r:x") != nil {
		t.Fatal("a second computation of the same count was registered")
	}
	read := readUpTo{unthreaded: 10, threads: map[string]int64{"$t": 20}}
	c.finish("@a:x", "!r:x", e, read, map[string]Counts{MainThread: {Notifications: 1}})
	c.addRows([]actionRow{
		row("@a:x", "!r:x", MainThread, 11, true),
		row("@a:x", "!r:x", "$t", 15, false), // read in its thread
		row("@a:x", "!r:x", "$t", 21, false),
		row("@b:x", "!r:x", MainThread, 11, false), // another user
		row("@a:x", "!s:x", MainThread, 11, false), // another room
	})
	got, ok := c.lookup("@a:x", "!r:x")
	if !ok || got[MainThread] != (Counts{Notifications: 2, Highlights: 1}) || got["$t"] != (Counts{Notifications: 1}) {
		t.Fatalf("counts after new rows: %v %v", got, ok)
	}
	// lookup returns a copy.
	got[MainThread] = Counts{}
	if again, _ := c.lookup("@a:x", "!r:x"); again[MainThread].Notifications != 2 {
		t.Fatal("lookup returned the cache's own map")
	}
	// A receipt in the room drops it.
	c.invalidateRoom("!r:x")
	if _, ok := c.lookup("@a:x", "!r:x"); ok {
		t.Fatal("counts survived a change of receipts")
	}

	// Changes during a computation make its result stale: not kept.
	for name, change := range map[string]func(){
		"new row":  func() { c.addRows([]actionRow{row("@a:x", "!r:x", MainThread, 30, false)}) },
		"receipts": func() { c.invalidateRoom("!r:x") },
		"sent":     func() { c.invalidate("@a:x", "!r:x") },
	} {
		e := c.begin("@a:x", "!r:x")
		change()
		c.finish("@a:x", "!r:x", e, read, map[string]Counts{})
		if _, ok := c.lookup("@a:x", "!r:x"); ok {
			t.Errorf("%s: a stale count was kept", name)
		}
	}
	// A failed computation keeps nothing.
	e = c.begin("@a:x", "!r:x")
	c.finish("@a:x", "!r:x", e, read, nil)
	if _, ok := c.lookup("@a:x", "!r:x"); ok {
		t.Error("a failed count was kept")
	}
}

func TestPendingStore(t *testing.T) {
	p := newPendingStore(100)
	p.add([]actionRow{row("@a:x", "!r:x", MainThread, 101, false), row("@b:x", "!r:x", MainThread, 101, false),
		row("@a:x", "!s:x", MainThread, 102, false), row("@a:x", "!r:x", MainThread, 103, true)},
		[]sentMark{{userID: "@a:x", roomID: "!r:x", threadID: MainThread, pos: 104}})
	if p.size() != 4 {
		t.Fatalf("size %d", p.size())
	}
	flushed, rows, marks := p.forUser("@a:x", "!r:x")
	if flushed != 100 || len(rows) != 2 || rows[0].pos != 101 || rows[1].pos != 103 || marks[MainThread] != 104 {
		t.Fatalf("forUser: %d %+v %v", flushed, rows, marks)
	}
	if _, all, _ := p.forUser("@a:x", ""); len(all) != 3 {
		t.Fatalf("forUser in every room: %+v", all)
	}
	// Part of a flush: rows up to 101 are written.
	p.flushedThrough(101)
	flushed, rows, _ = p.forUser("@a:x", "!r:x")
	if flushed != 101 || len(rows) != 1 || rows[0].pos != 103 || p.size() != 2 {
		t.Fatalf("after a partial flush: %d %+v size %d", flushed, rows, p.size())
	}
	if _, rows, _ := p.forUser("@b:x", "!r:x"); len(rows) != 0 {
		t.Fatalf("@b's written row is still pending: %+v", rows)
	}
	// The whole flush.
	p.flushed(104)
	flushed, rows, marks = p.forUser("@a:x", "!r:x")
	if flushed != 104 || len(rows) != 0 || len(marks) != 0 || p.size() != 0 {
		t.Fatalf("after the flush: %d %+v %v", flushed, rows, marks)
	}
}

func TestFlushInParts(t *testing.T) {
	ctx := context.Background()
	db := dbtest.Open(t)
	defer db.Close()
	if err := db.Migrate(ctx, "push", migrations); err != nil {
		t.Fatal(err)
	}
	s := &Service{db: db, log: logrus.New(), pending: newPendingStore(0), processed: 0}
	// More rows than one transaction takes, several per event.
	var rows []actionRow
	pos := int64(0)
	for len(rows) < 2*txRows+50 {
		pos++
		for u := 0; u < 7; u++ {
			r := row(fmt.Sprintf("@u%d:x", u), "!r:x", MainThread, pos, u == 0)
			r.eventID, r.actionsJSON = fmt.Sprintf("$e%d", pos), `["notify"]`
			rows = append(rows, r)
		}
	}
	s.pending.add(rows, []sentMark{{userID: "@u0:x", roomID: "!r:x", threadID: MainThread, pos: 3}})
	s.processed = pos
	s.flush()
	if n := s.pending.size(); n != 0 {
		t.Fatalf("%d rows still pending", n)
	}
	if f, _, _ := s.pending.forUser("@u0:x", "!r:x"); f != pos {
		t.Fatalf("flushed position %d, want %d", f, pos)
	}
	var n, h int
	if err := db.QueryRowContext(ctx, `SELECT COUNT(*), SUM(highlight) FROM event_push_actions`).Scan(&n, &h); err != nil {
		t.Fatal(err)
	}
	if n != len(rows) || h != int(pos) {
		t.Fatalf("%d rows (%d highlights) written, want %d (%d)", n, h, len(rows), pos)
	}
	var mark int64
	if err := db.QueryRowContext(ctx, `SELECT stream_pos FROM push_sent_marks WHERE user_id = '@u0:x'`).Scan(&mark); err != nil || mark != 3 {
		t.Fatalf("sent mark %d, %v", mark, err)
	}
	// Writing the same rows again (a retried flush) changes nothing.
	s.pending.add(rows[:10], nil)
	s.flush()
	if err := db.QueryRowContext(ctx, `SELECT COUNT(*) FROM event_push_actions`).Scan(&n); err != nil || n != len(rows) {
		t.Fatalf("%d rows after a repeated flush, %v", n, err)
	}
}
