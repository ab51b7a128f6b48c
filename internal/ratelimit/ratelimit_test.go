package ratelimit

import (
	"testing"
	"time"
)

func TestLimiter(t *testing.T) {
	now := time.Unix(1000, 0)
	l := New(0.5, 2) // 2 at once, one more every 2 s
	l.now = func() time.Time { return now }
	steps := []struct {
		advance  time.Duration
		key      string
		allow    bool
		wantWait time.Duration
	}{
		{0, "a", true, 0},
		{0, "a", true, 0},
		{0, "a", false, 2 * time.Second},
		{0, "b", true, 0}, // keys are independent
		{time.Second, "a", false, time.Second},
		{time.Second, "a", true, 0},
		{0, "a", false, 2 * time.Second},
		{time.Hour, "a", true, 0}, // refills, but only to the burst
		{0, "a", true, 0},
		{0, "a", false, 2 * time.Second},
	}
	for i, s := range steps {
		now = now.Add(s.advance)
		ok, wait := l.Allow(s.key)
		if ok != s.allow || wait != s.wantWait {
			t.Fatalf("step %d: Allow(%q) = %v, %v; want %v, %v", i, s.key, ok, wait, s.allow, s.wantWait)
		}
	}
}

func TestCheckDoesNotSpend(t *testing.T) {
	l := New(1, 1)
	for i := 0; i < 3; i++ {
		if ok, _ := l.Check("k"); !ok {
			t.Fatal("Check spent a token")
		}
	}
	l.Allow("k")
	if ok, wait := l.Check("k"); ok || wait <= 0 {
		t.Fatalf("Check after the last token = %v, %v", ok, wait)
	}
}

func TestNilLimiterAllows(t *testing.T) {
	var l *Limiter
	if ok, _ := l.Allow("x"); !ok {
		t.Fatal("a nil limiter refused")
	}
}

func TestSweepForgetsFullBuckets(t *testing.T) {
	now := time.Unix(0, 0)
	l := New(1, 1)
	l.now = func() time.Time { return now }
	for _, k := range []string{"a", "b", "c"} {
		l.Allow(k)
	}
	now = now.Add(2 * time.Minute)
	l.Allow("d")
	if len(l.buckets) != 1 {
		t.Fatalf("%d buckets after a sweep, want 1", len(l.buckets))
	}
}

// TestAllowAt: a key with its own rate and burst is limited by them, and
// goes back to the limiter's when they are gone.
func TestAllowAt(t *testing.T) {
	now := time.Unix(1000, 0)
	l := New(1, 1)
	l.now = func() time.Time { return now }
	for i := 0; i < 5; i++ {
		if ok, _ := l.AllowAt("k", 0.5, 5); !ok {
			t.Fatalf("request %d of a burst of 5 refused", i)
		}
	}
	if ok, wait := l.AllowAt("k", 0.5, 5); ok || wait != 2*time.Second {
		t.Fatalf("sixth = %v, %v; want refused for 2 s", ok, wait)
	}
	now = now.Add(time.Hour)
	if ok, _ := l.Allow("k"); !ok {
		t.Fatal("the limiter's own rate refused a refilled key")
	}
	if ok, wait := l.Allow("k"); ok || wait != time.Second {
		t.Fatalf("second at the limiter's burst of 1 = %v, %v", ok, wait)
	}
}
