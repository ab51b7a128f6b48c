package roomserver

import (
	"fmt"
	"testing"

	"github.com/matrix-org/gomatrixserverlib"
)

func testEvent(t *testing.T, id string) *Event {
	t.Helper()
	verImpl := gomatrixserverlib.MustGetRoomVersion(gomatrixserverlib.RoomVersionV10)
	pdu, err := verImpl.NewEventFromTrustedJSONWithEventID(id,
		[]byte(`{"type":"m.room.message","room_id":"!r:x","sender":"@a:x","content":{},"depth":1,"origin_server_ts":1,"prev_events":[],"auth_events":[]}`), false)
	if err != nil {
		t.Fatal(err)
	}
	return &Event{PDU: pdu}
}

// TestCacheDoesNotResurrectRedacted: a read that began before a redaction
// dropped an event must not put the unredacted copy back.
func TestCacheDoesNotResurrectRedacted(t *testing.T) {
	c := newEventCache(100)
	ev := testEvent(t, "$a")
	start := c.generation() // a read begins and loads $a from the database
	c.forget("$a")          // meanwhile its redaction commits
	c.putLoaded(ev, start)  // the read finishes
	if c.get("$a") != nil {
		t.Fatal("a stale read put a redacted event back into the cache")
	}
	c.putLoaded(ev, c.generation()) // a read that began after the redaction
	if c.get("$a") == nil {
		t.Fatal("a fresh read was not cached")
	}
}

// TestCacheFloor: once the forget memory is reset, reads that began before
// the reset are not cached at all.
func TestCacheFloor(t *testing.T) {
	c := newEventCache(100)
	start := c.generation()
	for i := 0; i <= maxForgotten; i++ {
		c.forget(fmt.Sprint("$", i))
	}
	c.putLoaded(testEvent(t, "$b"), start)
	if c.get("$b") != nil {
		t.Fatal("a read from before the reset was cached")
	}
}
