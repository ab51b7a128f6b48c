package clientapi

import (
	"testing"
	"time"

	"github.com/coder/websocket"
)

// StreamLimits are the sync stream's limits that tests may lower; a zero
// field keeps the default.
type StreamLimits struct {
	QueueLen     int
	WriteTimeout time.Duration
	MinWriteRate int64
	PingInterval time.Duration
	PingTimeout  time.Duration
	ReadLimit    int64
	SyncTimeout  time.Duration
}

// SetStreamLimits makes servers built from now until the test ends use l.
// A test that calls it must not be parallel: every server the package's
// tests build meanwhile gets the limits.
func SetStreamLimits(t testing.TB, l StreamLimits) {
	streamLimitsMu.Lock()
	old := newStreamLimits
	n := defaultStreamLimits
	if l.QueueLen > 0 {
		n.queueLen = l.QueueLen
	}
	if l.WriteTimeout > 0 {
		n.writeTimeout = l.WriteTimeout
	}
	if l.MinWriteRate > 0 {
		n.minWriteRate = l.MinWriteRate
	}
	if l.PingInterval > 0 {
		n.pingInterval = l.PingInterval
	}
	if l.PingTimeout > 0 {
		n.pingTimeout = l.PingTimeout
	}
	if l.ReadLimit > 0 {
		n.readLimit = l.ReadLimit
	}
	if l.SyncTimeout > 0 {
		n.syncTimeout = l.SyncTimeout
	}
	newStreamLimits = n
	streamLimitsMu.Unlock()
	t.Cleanup(func() {
		streamLimitsMu.Lock()
		newStreamLimits = old
		streamLimitsMu.Unlock()
	})
}

// OnStreamClose makes f be told, until the test ends, why each stream
// the server closes closed. The same rule as SetStreamLimits applies.
func OnStreamClose(t testing.TB, f func(code websocket.StatusCode, reason string)) {
	streamClosedHook.Store(&f)
	t.Cleanup(func() { streamClosedHook.Store(nil) })
}
