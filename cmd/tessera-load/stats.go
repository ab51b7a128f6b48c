package main

import (
	"fmt"
	"math"
	"slices"
	"time"
)

// percentile returns the p-th percentile (0-100) of sorted, which must be in
// ascending order, by the nearest-rank method: the smallest value such that
// at least p% of the values are less than or equal to it. It is always one
// of the measured values, never an interpolation. An empty list gives 0.
func percentile(sorted []time.Duration, p float64) time.Duration {
	n := len(sorted)
	if n == 0 {
		return 0
	}
	if p <= 0 {
		return sorted[0]
	}
	if p >= 100 {
		return sorted[n-1]
	}
	// rank = ceil(p/100 * n), 1-based. The small tolerance keeps float error
	// (1.1% of 3000 computes as 33.00000000000001) from pushing an exact
	// rank up by one.
	x := p * float64(n) / 100
	rank := int(math.Ceil(x - 1e-9*math.Max(1, x)))
	return sorted[min(max(rank, 1), n)-1]
}

// latencyStats are the latency figures of a report, in milliseconds.
type latencyStats struct {
	P50  float64 `json:"p50_ms"`
	P90  float64 `json:"p90_ms"`
	P99  float64 `json:"p99_ms"`
	Max  float64 `json:"max_ms"`
	Min  float64 `json:"min_ms"`
	Mean float64 `json:"mean_ms"`
}

// summarize computes the latency figures of lat (which it does not modify).
func summarize(lat []time.Duration) latencyStats {
	if len(lat) == 0 {
		return latencyStats{}
	}
	s := slices.Clone(lat)
	slices.Sort(s)
	var sum time.Duration
	for _, d := range s {
		sum += d
	}
	return latencyStats{
		P50:  ms(percentile(s, 50)),
		P90:  ms(percentile(s, 90)),
		P99:  ms(percentile(s, 99)),
		Max:  ms(s[len(s)-1]),
		Min:  ms(s[0]),
		Mean: ms(sum / time.Duration(len(s))),
	}
}

func (l latencyStats) String() string {
	return fmt.Sprintf("p50 %.2f ms, p90 %.2f ms, p99 %.2f ms, max %.2f ms (min %.2f, mean %.2f)",
		l.P50, l.P90, l.P99, l.Max, l.Min, l.Mean)
}

// ms is d in milliseconds, to the microsecond.
func ms(d time.Duration) float64 { return round(float64(d)/float64(time.Millisecond), 3) }

// seconds is d in seconds, to the microsecond: a fast paging run is over in
// a few milliseconds.
func seconds(d time.Duration) float64 { return round(d.Seconds(), 6) }

// fmtSeconds shows a report's seconds for people.
func fmtSeconds(s float64) string {
	return time.Duration(s * float64(time.Second)).Round(time.Microsecond).String()
}

// perSecond is n per second of d, to one decimal.
func perSecond(n int, d time.Duration) float64 {
	if d <= 0 {
		return 0
	}
	return round(float64(n)/d.Seconds(), 1)
}

func round(x float64, places int) float64 {
	p := math.Pow10(places)
	return math.Round(x*p) / p
}
