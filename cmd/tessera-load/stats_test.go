package main

import (
	"slices"
	"testing"
	"time"
)

// durations returns 1..n milliseconds, in order.
func durations(n int) []time.Duration {
	d := make([]time.Duration, n)
	for i := range d {
		d[i] = time.Duration(i+1) * time.Millisecond
	}
	return d
}

func msList(v ...int) []time.Duration {
	d := make([]time.Duration, len(v))
	for i, x := range v {
		d[i] = time.Duration(x) * time.Millisecond
	}
	return d
}

func TestPercentile(t *testing.T) {
	tests := []struct {
		name   string
		sorted []time.Duration
		p      float64
		want   time.Duration
	}{
		{"empty", nil, 50, 0},
		{"one value p0", msList(7), 0, 7 * time.Millisecond},
		{"one value p50", msList(7), 50, 7 * time.Millisecond},
		{"one value p100", msList(7), 100, 7 * time.Millisecond},
		// The classic nearest-rank example (Wikipedia, "Percentile").
		{"five p5", msList(15, 20, 35, 40, 50), 5, 15 * time.Millisecond},
		{"five p30", msList(15, 20, 35, 40, 50), 30, 20 * time.Millisecond},
		{"five p40", msList(15, 20, 35, 40, 50), 40, 20 * time.Millisecond},
		{"five p50", msList(15, 20, 35, 40, 50), 50, 35 * time.Millisecond},
		{"five p100", msList(15, 20, 35, 40, 50), 100, 50 * time.Millisecond},
		{"four p25 exact rank", msList(1, 2, 3, 4), 25, 1 * time.Millisecond},
		{"four p26 rounds up", msList(1, 2, 3, 4), 26, 2 * time.Millisecond},
		{"four p75", msList(1, 2, 3, 4), 75, 3 * time.Millisecond},
		{"four p76", msList(1, 2, 3, 4), 76, 4 * time.Millisecond},
		{"ten p50", durations(10), 50, 5 * time.Millisecond},
		{"ten p90", durations(10), 90, 9 * time.Millisecond},
		{"ten p99 is the max", durations(10), 99, 10 * time.Millisecond},
		{"hundred p1", durations(100), 1, 1 * time.Millisecond},
		{"hundred p50", durations(100), 50, 50 * time.Millisecond},
		{"hundred p99", durations(100), 99, 99 * time.Millisecond},
		{"thousand p99", durations(1000), 99, 990 * time.Millisecond},
		{"thousand p99.9", durations(1000), 99.9, 999 * time.Millisecond},
		// 1.1*3000/100 is 33.00000000000001 in floating point; the rank is 33.
		{"float error does not bump the rank", durations(3000), 1.1, 33 * time.Millisecond},
		{"2000 p50", durations(2000), 50, 1000 * time.Millisecond},
		{"below 0 clamps", durations(3), -5, 1 * time.Millisecond},
		{"above 100 clamps", durations(3), 150, 3 * time.Millisecond},
		{"ties", msList(1, 1, 1, 9), 75, 1 * time.Millisecond},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := percentile(tt.sorted, tt.p); got != tt.want {
				t.Errorf("percentile(%v, %v) = %v, want %v", tt.sorted, tt.p, got, tt.want)
			}
		})
	}
}

func TestSummarize(t *testing.T) {
	in := msList(9, 1, 5, 3, 7) // unsorted on purpose
	orig := slices.Clone(in)
	got := summarize(in)
	want := latencyStats{P50: 5, P90: 9, P99: 9, Max: 9, Min: 1, Mean: 5}
	if got != want {
		t.Errorf("summarize = %+v, want %+v", got, want)
	}
	if !slices.Equal(in, orig) {
		t.Errorf("summarize reordered its input: %v", in)
	}
	if got := summarize(nil); got != (latencyStats{}) {
		t.Errorf("summarize(nil) = %+v, want zeros", got)
	}
}

func TestPerSecond(t *testing.T) {
	tests := []struct {
		n    int
		d    time.Duration
		want float64
	}{
		{2000, time.Second, 2000},
		{2000, 900 * time.Millisecond, 2222.2},
		{5, 0, 0},
	}
	for _, tt := range tests {
		if got := perSecond(tt.n, tt.d); got != tt.want {
			t.Errorf("perSecond(%d, %v) = %v, want %v", tt.n, tt.d, got, tt.want)
		}
	}
}
