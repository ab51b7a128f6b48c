package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// maxResponseBytes bounds what is read of one response, so a misbehaving
// server cannot make the load generator itself the bottleneck (or crash it).
const maxResponseBytes = 16 << 20

// Bounds on waiting out 429s during setup.
const (
	maxSetupRetries = 100
	minRetryWait    = 10 * time.Millisecond
	maxRetryWait    = time.Minute
)

// client is a tiny JSON-over-HTTP client for one homeserver.
type client struct {
	base    string // scheme://host[:port][/prefix], no trailing slash
	hc      *http.Client
	timeout time.Duration // of each request
	logf    func(format string, args ...any)
}

// newClient returns a client for the homeserver at base (already validated)
// that keeps up to conns connections alive.
func newClient(base string, timeout time.Duration, conns int, logf func(string, ...any)) *client {
	tr := &http.Transport{
		// Straight to the server: a proxy from the environment would be
		// measured along with it.
		Proxy:       nil,
		DialContext: (&net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		// Every worker keeps its own keep-alive connection, so a new
		// connection (and, with https, a handshake) is not measured as part
		// of a request. The default of 2 idle connections per host would
		// make most workers dial for every request.
		MaxIdleConns:        conns + 4,
		MaxIdleConnsPerHost: conns + 4,
		IdleConnTimeout:     90 * time.Second,
		TLSHandshakeTimeout: 10 * time.Second,
		// HTTP/1.1 with one connection per worker, as most clients and
		// reverse proxies talk to a homeserver; HTTP/2 would multiplex every
		// worker onto one connection and measure that instead.
		ForceAttemptHTTP2: false,
	}
	return &client{
		base: strings.TrimRight(base, "/"),
		hc: &http.Client{
			Transport: tr,
			// Never follow a redirect: every request must go to -hs itself.
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		},
		timeout: timeout,
		logf:    logf,
	}
}

// matrixError is a non-2xx answer, decoded as the spec's standard error
// response where the body is one.
// https://spec.matrix.org/v1.19/client-server-api/#standard-error-response
type matrixError struct {
	// Not from the body: json:"-" keeps a body's "status" or "path" from
	// landing here.
	Method       string        `json:"-"`
	Path         string        `json:"-"`
	Status       int           `json:"-"`
	Body         []byte        `json:"-"` // the raw body, e.g. a UIA challenge
	retryAfter   time.Duration // from the Retry-After header, if any
	ErrCode      string        `json:"errcode"`
	Message      string        `json:"error"`
	RetryAfterMS int64         `json:"retry_after_ms"`
}

func (e *matrixError) Error() string {
	where := fmt.Sprintf("%s %s: HTTP %d", e.Method, e.Path, e.Status)
	if e.ErrCode == "" {
		body := strings.TrimSpace(string(e.Body))
		if len(body) > 200 {
			body = body[:200] + "..."
		}
		return fmt.Sprintf("%s (not a Matrix error body: %q)", where, body)
	}
	msg := fmt.Sprintf("%s %s: %s", where, e.ErrCode, e.Message)
	if e.ErrCode == "M_UNRECOGNIZED" && (e.Status == http.StatusNotFound || e.Status == http.StatusMethodNotAllowed) {
		msg += " (the server does not implement this endpoint)"
	}
	return msg
}

// retryWait is how long the server asked us to wait before trying again.
func (e *matrixError) retryWait() time.Duration {
	wait := time.Second // neither field given: a modest guess
	switch {
	case e.RetryAfterMS > 0:
		wait = time.Duration(e.RetryAfterMS) * time.Millisecond
	case e.retryAfter > 0:
		wait = e.retryAfter
	}
	return min(max(wait, minRetryWait), maxRetryWait)
}

// isRateLimited reports whether err is a 429.
func isRateLimited(err error) (*matrixError, bool) {
	var me *matrixError
	if errors.As(err, &me) && me.Status == http.StatusTooManyRequests {
		return me, true
	}
	return nil, false
}

// isFatal reports whether err is an answer that will not change if the same
// request is made again (the endpoint is missing, the token or the room
// membership is refused). Measured phases stop on these rather than send
// thousands more requests that would bury the first error.
func isFatal(err error) bool {
	var me *matrixError
	if !errors.As(err, &me) {
		return false
	}
	switch me.Status {
	case http.StatusUnauthorized, http.StatusForbidden, http.StatusNotFound, http.StatusMethodNotAllowed:
		return true
	}
	return false
}

// do sends one request to base+path with body (if not nil) as JSON and
// decodes a 2xx response into out (if not nil). token, if not empty, is sent
// as the access token. Any other status is returned as a *matrixError.
func (c *client) do(ctx context.Context, method, path string, query url.Values, token string, body, out any) error {
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return err
		}
		rd = bytes.NewReader(b)
	}
	u := c.base + path
	if len(query) > 0 {
		u += "?" + query.Encode()
	}
	req, err := http.NewRequestWithContext(ctx, method, u, rd)
	if err != nil {
		return err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	req.Header.Set("User-Agent", "tessera-load")
	resp, err := c.hc.Do(req)
	if err != nil {
		return fmt.Errorf("%s %s: %w", method, path, err)
	}
	defer resp.Body.Close()
	// Read to the end so the connection can be reused.
	data, err := io.ReadAll(io.LimitReader(resp.Body, maxResponseBytes+1))
	if err != nil {
		return fmt.Errorf("%s %s: reading response: %w", method, path, err)
	}
	if len(data) > maxResponseBytes {
		return fmt.Errorf("%s %s: response larger than %d bytes", method, path, maxResponseBytes)
	}
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		me := &matrixError{Method: method, Path: path, Status: resp.StatusCode, Body: data}
		_ = json.Unmarshal(data, me) // not JSON: Error() shows the raw body
		if s, err := strconv.Atoi(resp.Header.Get("Retry-After")); err == nil && s > 0 {
			me.retryAfter = time.Duration(s) * time.Second
		}
		return me
	}
	if out != nil {
		if err := json.Unmarshal(data, out); err != nil {
			return fmt.Errorf("%s %s: decoding response: %w", method, path, err)
		}
	}
	return nil
}

// retry429 calls fn until it does not fail with 429, waiting as long as the
// server asks each time, at most maxSetupRetries times. It is for setup only:
// in a measured phase a 429 counts as an error.
func (c *client) retry429(ctx context.Context, what string, fn func() error) error {
	for attempt := 0; ; attempt++ {
		err := fn()
		me, limited := isRateLimited(err)
		if !limited {
			return err
		}
		if attempt >= maxSetupRetries {
			return fmt.Errorf("%s: still rate limited after %d retries: %w", what, attempt, err)
		}
		wait := me.retryWait()
		if attempt == 0 {
			c.logf("setup: %s: rate limited, waiting %v (and again as often as asked)", what, wait)
		}
		t := time.NewTimer(wait)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("%s: %w", what, context.Cause(ctx))
		}
	}
}
