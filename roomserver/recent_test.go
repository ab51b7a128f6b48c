package roomserver

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"
)

// TestRecentWindow checks every answer the rings give against the full
// history, over random histories small enough to overflow both the rings
// and the room bound.
func TestRecentWindow(t *testing.T) {
	rooms := []string{"!a:x", "!b:x", "!c:x"}
	for seed := range uint64(50) {
		rng := rand.New(rand.NewPCG(seed, 7))
		const start = 10 // events up to here were there before the rings
		r := newRecentEvents(4, 2, start)
		type rec struct {
			room string
			pos  int64
			id   string
		}
		var all []rec
		pos := int64(start)
		answered := 0
		for range 12 {
			var batch []*Event
			batchStart := pos
			for range 1 + rng.IntN(3) {
				pos++
				ev := testEvent(t, fmt.Sprintf("$%d", pos))
				ev.RoomID, ev.StreamPos = rooms[rng.IntN(len(rooms))], pos
				batch = append(batch, ev)
				all = append(all, rec{ev.RoomID, pos, ev.EventID()})
			}
			r.add(batchStart, batch)
			for _, room := range rooms {
				for from := int64(start); from <= pos; from++ {
					for to := from; to <= pos; to++ {
						for limit := 0; limit <= 5; limit++ {
							ids, limited, ok := r.window(room, from, to, limit)
							if !ok {
								continue
							}
							answered++
							var want []string
							for _, e := range all {
								if e.room == room && e.pos > from && e.pos <= to {
									want = append(want, e.id)
								}
							}
							wantLimited := len(want) > limit
							if wantLimited {
								want = want[len(want)-limit:]
							}
							if !slices.Equal(ids, want) && !(len(ids) == 0 && len(want) == 0) || limited != wantLimited {
								t.Fatalf("seed %d room %s (%d, %d] limit %d: got %v limited %v, want %v limited %v",
									seed, room, from, to, limit, ids, limited, want, wantLimited)
							}
						}
					}
				}
			}
		}
		if answered == 0 {
			t.Fatalf("seed %d: the rings answered nothing", seed)
		}
	}
	// Before the rings existed nothing is known.
	r := newRecentEvents(4, 2, 10)
	if _, _, ok := r.window("!a:x", 9, 10, 5); ok {
		t.Fatal("answered for a range before the rings began")
	}
	if ids, limited, ok := r.window("!a:x", 10, 10, 5); !ok || len(ids) != 0 || limited {
		t.Fatal("an empty range after the start was not answered as empty")
	}
}
