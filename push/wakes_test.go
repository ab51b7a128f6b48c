package push

import (
	"maps"
	"slices"
	"testing"
)

func TestWakes(t *testing.T) {
	row := func(user string, notify bool) actionRow {
		return actionRow{userID: user, outcome: Outcome{Notify: notify}}
	}
	for _, tc := range []struct {
		name              string
		rows              []actionRow
		changed, notified []string
	}{
		{"none", nil, nil, nil},
		{"notify", []actionRow{row("a", true)}, []string{"a"}, []string{"a"}},
		{"unread only", []actionRow{row("a", false)}, []string{"a"}, nil},
		// A later notifying row of the same user still wakes their pushers.
		{"unread then notify", []actionRow{row("a", false), row("a", true), row("b", false)}, []string{"a", "b"}, []string{"a"}},
		{"notify then unread", []actionRow{row("a", true), row("a", false)}, []string{"a"}, []string{"a"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			changed, notified := wakes(tc.rows)
			if got := slices.Sorted(maps.Keys(changed)); !slices.Equal(got, tc.changed) {
				t.Errorf("changed = %v, want %v", got, tc.changed)
			}
			if got := slices.Sorted(maps.Keys(notified)); !slices.Equal(got, tc.notified) {
				t.Errorf("notified = %v, want %v", got, tc.notified)
			}
		})
	}
}
