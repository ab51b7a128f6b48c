package httpx

import (
	"errors"
	"io"
	"net/http"
	"os"
	"time"
)

// ErrBodyTimeout is the error reading a request body that came too slowly
// (BodyDeadline).
var ErrBodyTimeout = errors.New("request body was not received in time")

// BodyDeadline bounds how long reading a request body may take, so that a
// client that declares a body and then sends nothing, or a trickle, cannot
// hold a connection (and its handler) forever. http.Server's ReadTimeout
// cannot do this: one timeout for every request would cut off large
// uploads on slow links, or else allow minutes of silence on every
// request.
//
// The body must not stall for longer than stall, and must arrive at
// minRate bytes per second on average, counted from the first read, with
// stall as the allowance for the first bytes: a fast start earns slack, so
// a large upload on a slow but steady link is not cut off. A body that
// falls behind fails with ErrBodyTimeout; ReadBody answers it 408, and the
// connection is closed after the answer. A stall of 0 disables the limit.
//
// Once the body has been read to its end the deadline is lifted: the
// server's own read that watches for the client going away (which cancels
// the request's context) must not time out while a long-poll waits.
func BodyDeadline(stall time.Duration, minRate int64, next http.Handler) http.Handler {
	if stall <= 0 || minRate <= 0 {
		return next
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Body == nil || r.Body == http.NoBody || r.ContentLength == 0 {
			next.ServeHTTP(w, r)
			return
		}
		b := &deadlineBody{
			body: r.Body, w: w, rc: http.NewResponseController(w),
			start: time.Now(), stall: stall, minRate: minRate,
		}
		if b.extend(time.Now()) != nil {
			// The writer cannot set read deadlines (not a server
			// connection, as in a test recorder): nothing to bound.
			next.ServeHTTP(w, r)
			return
		}
		next.ServeHTTP(w, WithBody(r, b))
	})
}

// deadlineBody moves the connection's read deadline as a body arrives.
type deadlineBody struct {
	body    io.ReadCloser
	w       http.ResponseWriter
	rc      *http.ResponseController
	start   time.Time
	stall   time.Duration
	minRate int64
	read    int64
	done    bool // no more deadlines: the end, an error or a timeout
	late    bool // the timeout: every later read fails with it too
}

// extend sets the read deadline for the next read: stall from now, but no
// later than the minimum rate allows for what has been read so far.
func (b *deadlineBody) extend(now time.Time) error {
	byRate := b.start.Add(b.stall + time.Duration(float64(b.read)/float64(b.minRate)*float64(time.Second)))
	d := now.Add(b.stall)
	if byRate.Before(d) {
		d = byRate
	}
	return b.rc.SetReadDeadline(d)
}

func (b *deadlineBody) Read(p []byte) (int, error) {
	if b.late {
		return 0, ErrBodyTimeout
	}
	if b.done {
		return b.body.Read(p)
	}
	n, err := b.body.Read(p)
	b.read += int64(n)
	switch {
	case err == nil:
		_ = b.extend(time.Now())
	case errors.Is(err, os.ErrDeadlineExceeded):
		// The client is too slow. Whatever the handler answers, the
		// connection cannot be reused: the rest of the body is unread.
		b.done, b.late = true, true
		b.w.Header().Set("Connection", "close")
		return n, ErrBodyTimeout
	default:
		// The end of the body (the server starts its background read
		// now), or another error: no more deadline either way.
		b.done = true
		_ = b.rc.SetReadDeadline(time.Time{})
	}
	return n, err
}

func (b *deadlineBody) Close() error { return b.body.Close() }
