// Package ratelimit is a keyed token-bucket limiter (per client address, per
// account), the model Synapse's rc_* settings use.
package ratelimit

import (
	"math"
	"sync"
	"time"
)

// Limiter holds one bucket per key. The zero value is not usable; use New.
// A nil *Limiter allows everything, which is how limits are switched off.
type Limiter struct {
	rate  float64 // tokens per second
	burst float64
	now   func() time.Time

	mu        sync.Mutex
	buckets   map[string]*bucket
	lastSweep time.Time
}

type bucket struct {
	tokens float64
	at     time.Time
	// rate and burst are the limiter's, or a key's own (AllowAt).
	rate, burst float64
}

// New makes a limiter that allows burst requests at once per key, refilled
// at perSecond.
func New(perSecond float64, burst int) *Limiter {
	return &Limiter{rate: perSecond, burst: float64(burst), now: time.Now, buckets: map[string]*bucket{}}
}

// Allow takes a token from key's bucket. If none is left it returns false
// and how long until one is.
func (l *Limiter) Allow(key string) (bool, time.Duration) {
	if l == nil {
		return true, 0
	}
	return l.allow(key, l.rate, l.burst)
}

// AllowAt is Allow for a key with its own rate and burst instead of the
// limiter's, such as a user an admin gave other limits.
func (l *Limiter) AllowAt(key string, perSecond float64, burst int) (bool, time.Duration) {
	if l == nil {
		return true, 0
	}
	return l.allow(key, perSecond, float64(burst))
}

func (l *Limiter) allow(key string, rate, burst float64) (bool, time.Duration) {
	l.mu.Lock()
	defer l.mu.Unlock()
	b := l.refill(key, l.now(), rate, burst)
	if b.tokens >= 1 {
		b.tokens--
		return true, 0
	}
	return false, b.wait()
}

// Check reports, without taking a token, whether key has one left.
func (l *Limiter) Check(key string) (bool, time.Duration) {
	if l == nil {
		return true, 0
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	b := l.refill(key, l.now(), l.rate, l.burst)
	if b.tokens >= 1 {
		return true, 0
	}
	return false, b.wait()
}

func (b *bucket) wait() time.Duration {
	secs := (1 - b.tokens) / b.rate
	return time.Duration(math.Ceil(secs*1000)) * time.Millisecond
}

// refill brings key's bucket up to now at rate and burst (which replace
// the bucket's own: a key whose limits changed keeps its tokens, capped).
func (l *Limiter) refill(key string, now time.Time, rate, burst float64) *bucket {
	l.sweep(now)
	b, ok := l.buckets[key]
	if !ok {
		b = &bucket{tokens: burst, at: now, rate: rate, burst: burst}
		l.buckets[key] = b
		return b
	}
	b.rate, b.burst = rate, burst
	b.tokens = math.Min(burst, b.tokens+now.Sub(b.at).Seconds()*rate)
	b.at = now
	return b
}

// sweep drops buckets that have refilled completely (they are the same as a
// new one), at most once a minute, so memory does not grow with every
// address ever seen.
func (l *Limiter) sweep(now time.Time) {
	if now.Sub(l.lastSweep) < time.Minute {
		return
	}
	l.lastSweep = now
	for k, b := range l.buckets {
		if b.tokens+now.Sub(b.at).Seconds()*b.rate >= b.burst {
			delete(l.buckets, k)
		}
	}
}
