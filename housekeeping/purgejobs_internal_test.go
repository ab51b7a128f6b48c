package housekeeping

import (
	"fmt"
	"testing"
	"time"

	"github.com/tessera-hs/tessera/internal/config"
)

// TestPurgeJobsCover: the configured jobs, or one job for every room at
// the housekeeping interval; a job's shortest bound is exclusive and its
// longest inclusive, as in Synapse, so jobs split at a value cover every
// room once.
func TestPurgeJobsCover(t *testing.T) {
	h := time.Hour
	split := config.Housekeeping{Interval: config.Duration(h), Retention: config.Retention{PurgeJobs: []config.PurgeJob{
		{LongestMaxLifetime: config.Duration(72 * h), Interval: config.Duration(12 * h)},
		{ShortestMaxLifetime: config.Duration(72 * h)}, // interval: the housekeeping interval
	}}}
	for _, tc := range []struct {
		name      string
		cfg       config.Housekeeping
		lifetime  time.Duration
		want      []bool
		intervals []time.Duration
	}{
		{"default: one job for all", config.Housekeeping{Interval: config.Duration(h)}, 1000 * h, []bool{true}, []time.Duration{h}},
		{"split: short", split, time.Minute, []bool{true, false}, []time.Duration{12 * h, h}},
		{"split: at the split", split, 72 * h, []bool{true, false}, []time.Duration{12 * h, h}},
		{"split: above it", split, 72*h + time.Millisecond, []bool{false, true}, []time.Duration{12 * h, h}},
	} {
		jobs := purgeJobs(tc.cfg)
		var got []bool
		var intervals []time.Duration
		for _, j := range jobs {
			got = append(got, j.covers(tc.lifetime))
			intervals = append(intervals, j.interval)
		}
		if fmt.Sprint(got) != fmt.Sprint(tc.want) || fmt.Sprint(intervals) != fmt.Sprint(tc.intervals) {
			t.Errorf("%s: covers %v at intervals %v, want %v at %v", tc.name, got, intervals, tc.want, tc.intervals)
		}
	}
}
