// Package httpx holds the HTTP plumbing every edge shares: JSON handlers that
// return a body or an error, request decoding with the spec's error codes,
// and the middleware for CORS, body limits, panics and request logs.
package httpx

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"net/url"
	"runtime/debug"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/sirupsen/logrus"

	"github.com/tessera-hs/tessera/internal/jsonx"
	"github.com/tessera-hs/tessera/internal/mxerr"
)

// Response lets a handler choose a status other than 200.
type Response struct {
	Status int
	Body   any
}

// HandlerFunc answers a request with a JSON body (or a *Response) or an error.
// A *mxerr.Error is sent as is; any other error is logged and becomes a 500.
type HandlerFunc func(r *http.Request) (any, error)

// JSON adapts a HandlerFunc to http.Handler.
func JSON(log logrus.FieldLogger, fn HandlerFunc) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, err := fn(r)
		if err != nil {
			WriteError(w, r, log, err)
			return
		}
		status := http.StatusOK
		if resp, ok := body.(*Response); ok {
			status, body = resp.Status, resp.Body
		}
		WriteJSON(w, status, body)
	})
}

// WriteJSON writes body as JSON with the given status.
func WriteJSON(w http.ResponseWriter, status int, body any) {
	buf, err := json.Marshal(body)
	if err != nil {
		status = http.StatusInternalServerError
		buf = []byte(`{"errcode":"M_UNKNOWN","error":"Internal server error"}`)
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = w.Write(buf)
}

// WriteError writes err as the spec's error body. Errors that are not Matrix
// errors are internal: their detail goes to the log, never to the client.
func WriteError(w http.ResponseWriter, r *http.Request, log logrus.FieldLogger, err error) {
	if me, ok := mxerr.As(err); ok {
		// The spec lets a 429 carry Retry-After (whole seconds) besides
		// retry_after_ms; HTTP libraries honour the header on their own.
		// https://spec.matrix.org/v1.19/client-server-api/#rate-limiting
		if ms, ok := me.Extra["retry_after_ms"].(int64); ok && me.Status == http.StatusTooManyRequests && ms > 0 {
			w.Header().Set("Retry-After", strconv.FormatInt((ms+999)/1000, 10))
		}
		WriteJSON(w, me.Status, me.Body())
		return
	}
	if errors.Is(err, context.Canceled) && r.Context().Err() != nil {
		// The client went away (it gave up on a long-poll, say): nobody
		// reads the answer, and nothing went wrong here.
		w.WriteHeader(499)
		return
	}
	log.WithError(err).WithFields(logrus.Fields{"method": r.Method, "path": r.URL.Path}).
		Error("internal error handling request")
	WriteJSON(w, http.StatusInternalServerError, mxerr.Unknown(http.StatusInternalServerError, "Internal server error").Body())
}

// DecodeJSON reads a JSON object from the request body into v.
// Syntax errors are M_NOT_JSON, values of the wrong type M_BAD_JSON, a body
// over the limit M_TOO_LARGE. An empty body decodes as {} when allowEmpty.
func DecodeJSON(r *http.Request, v any, allowEmpty bool) error {
	raw, err := ReadRawBody(r) // Unmarshal checks it

	if err != nil {
		return err
	}
	if len(bytes.TrimSpace(raw)) == 0 {
		if allowEmpty {
			raw = []byte("{}")
		} else {
			return mxerr.NotJSON("Request body is empty")
		}
	}
	return Unmarshal(raw, v)
}

// Unmarshal decodes a JSON object with the same error mapping as DecodeJSON.
func Unmarshal(raw []byte, v any) error {
	if err := CheckJSON(raw); err != nil {
		return err
	}
	trimmed := bytes.TrimSpace(raw)
	if len(trimmed) == 0 || trimmed[0] != '{' {
		return mxerr.BadJSON("Request body must be a JSON object")
	}
	if err := json.Unmarshal(raw, v); err != nil {
		var te *json.UnmarshalTypeError
		if errors.As(err, &te) && te.Field != "" {
			return mxerr.BadJSON("Field %q has the wrong type: expected %s", te.Field, te.Type)
		}
		return mxerr.BadJSON("Request body has the wrong shape: %v", err)
	}
	return nil
}

// CheckJSON refuses, with 400 M_NOT_JSON, a document that is not JSON as
// Matrix needs it (see jsonx): malformed, not UTF-8, with a lone surrogate
// escape, or nested over jsonx.MaxDepth. Stored, such a document breaks
// /sync for everyone who can see it and every transaction that carries it
// to another server.
func CheckJSON(raw []byte) error {
	if err := jsonx.Validate(raw, jsonx.MaxDepth); err != nil {
		return mxerr.NotJSON("Request body is not valid JSON: %v", err)
	}
	return nil
}

// ReadBody reads the whole body of a JSON request, mapping an over-limit
// body to M_TOO_LARGE and, through CheckJSON, a body that is not JSON to
// M_NOT_JSON. An empty body is returned as is, for the caller to refuse
// or take as {}.
func ReadBody(r *http.Request) ([]byte, error) {
	raw, err := ReadRawBody(r)
	if err != nil {
		return nil, err
	}
	if len(bytes.TrimSpace(raw)) == 0 {
		return raw, nil
	}
	if err := CheckJSON(raw); err != nil {
		return nil, err
	}
	return raw, nil
}

// ReadRawBody reads the whole body without looking at it, mapping an
// over-limit body to M_TOO_LARGE.
func ReadRawBody(r *http.Request) ([]byte, error) {
	raw, err := io.ReadAll(r.Body)
	if err != nil {
		return nil, BodyError(err)
	}
	return raw, nil
}

// BodyError is the Matrix error for a failure to read a request body: 413
// M_TOO_LARGE over the limit (LimitBody), 408 when it came too slowly
// (BodyDeadline), else 400.
func BodyError(err error) *mxerr.Error {
	var mbe *http.MaxBytesError
	switch {
	case errors.As(err, &mbe):
		return mxerr.TooLarge("Request body is larger than %d bytes", mbe.Limit)
	case errors.Is(err, ErrBodyTimeout):
		return mxerr.Unknown(http.StatusRequestTimeout, "Request body was not received in time")
	}
	return mxerr.Unknown(http.StatusBadRequest, "Could not read request body")
}

// CORS answers every preflight and adds the headers the spec asks for to
// every response, so browser clients such as Element Web work.
// https://spec.matrix.org/v1.19/client-server-api/#web-browser-clients
func CORS(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("Access-Control-Allow-Origin", "*")
		h.Set("Access-Control-Allow-Methods", "GET, POST, PUT, DELETE, OPTIONS")
		h.Set("Access-Control-Allow-Headers", "X-Requested-With, Content-Type, Authorization, Date")
		if r.Method == http.MethodOptions {
			WriteJSON(w, http.StatusOK, struct{}{})
			return
		}
		next.ServeHTTP(w, r)
	})
}

// UTF8Params answers 400 M_INVALID_PARAM to a request whose path or query,
// once percent-decoded, is not UTF-8: every identifier and parameter in
// Matrix is a string, and a room ID, event type or filename with invalid
// UTF-8 in it would be stored and sent on like a bad event body.
func UTF8Params(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !validParams(r.URL) {
			WriteJSON(w, http.StatusBadRequest,
				mxerr.InvalidParam("Path and query parameters must be UTF-8").Body())
			return
		}
		next.ServeHTTP(w, r)
	})
}

func validParams(u *url.URL) bool {
	if !utf8.ValidString(u.Path) {
		return false
	}
	if u.RawQuery == "" {
		return true
	}
	q, err := url.ParseQuery(u.RawQuery)
	if err != nil {
		// Left for the handler, which reads the parameters it knows.
		return true
	}
	for k, vs := range q {
		if !utf8.ValidString(k) {
			return false
		}
		for _, v := range vs {
			if !utf8.ValidString(v) {
				return false
			}
		}
	}
	return true
}

// LimitBody caps request bodies. A declared Content-Length over the limit is
// refused with 413 M_TOO_LARGE before the body is read: a client that sent
// Expect: 100-continue gets the answer instead of the go-ahead and never
// sends the body. One that sends it regardless has up to oversizeDiscard
// bytes of it read and dropped first, so that a client that writes its
// whole request before reading finds the answer rather than a connection
// reset; the connection is closed after the answer either way.
func LimitBody(limit int64, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.ContentLength > limit {
			if !HeaderHasToken(r.Header, "Expect", "100-continue") {
				_, _ = io.CopyN(io.Discard, r.Body, oversizeDiscard)
			}
			w.Header().Set("Connection", "close")
			WriteJSON(w, http.StatusRequestEntityTooLarge,
				mxerr.TooLarge("Request body is larger than %d bytes", limit).Body())
			return
		}
		next.ServeHTTP(w, WithBody(r, http.MaxBytesReader(w, r.Body, limit)))
	})
}

// oversizeDiscard is how much of a body declared over the limit is read
// and dropped before the 413 (LimitBody).
const oversizeDiscard = 16 << 20

// WithBody is a shallow copy of r reading body instead. Middleware must not
// set r.Body in place: net/http looks at the request's own body after the
// handler, to tell whether the client still waits for 100 Continue or has
// unread bytes on the wire, and a replaced body makes it read (and wait
// for) up to 256 KiB more before it answers.
func WithBody(r *http.Request, body io.ReadCloser) *http.Request {
	r2 := new(http.Request)
	*r2 = *r
	r2.Body = body
	return r2
}

// HeaderHasToken reports whether a comma-separated header has token, case
// insensitively.
func HeaderHasToken(h http.Header, key, token string) bool {
	for _, v := range h.Values(key) {
		for _, t := range strings.Split(v, ",") {
			if strings.EqualFold(strings.TrimSpace(t), token) {
				return true
			}
		}
	}
	return false
}

// statusRecorder remembers the status a handler wrote, for the request log.
type statusRecorder struct {
	http.ResponseWriter
	status int
}

func (s *statusRecorder) WriteHeader(code int) {
	if s.status == 0 {
		s.status = code
	}
	s.ResponseWriter.WriteHeader(code)
}

func (s *statusRecorder) Write(b []byte) (int, error) {
	if s.status == 0 {
		s.status = http.StatusOK
	}
	return s.ResponseWriter.Write(b)
}

// Unwrap lets http.ResponseController reach the underlying writer (for
// flushing and hijacking, which the WebSocket sync stream needs).
func (s *statusRecorder) Unwrap() http.ResponseWriter { return s.ResponseWriter }

// Logging writes one line per request: method, path, status, duration.
// It logs the path only (the query string may carry an access token),
// through LogPath.
// A panic in a handler is logged with its stack and answered with a 500.
func Logging(log logrus.FieldLogger, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		rec := &statusRecorder{ResponseWriter: w}
		defer func() {
			if p := recover(); p != nil {
				if p == http.ErrAbortHandler {
					panic(p)
				}
				log.WithFields(logrus.Fields{"panic": p, "stack": string(debug.Stack())}).
					Error("handler panicked")
				if rec.status == 0 {
					WriteJSON(rec, http.StatusInternalServerError,
						mxerr.Unknown(http.StatusInternalServerError, "Internal server error").Body())
				}
			}
			log.WithFields(logrus.Fields{
				"method":      r.Method,
				"path":        LogPath(r.URL.Path),
				"status":      rec.status,
				"duration_ms": float64(time.Since(start).Microseconds()) / 1000,
			}).Info("request")
		}()
		next.ServeHTTP(rec, r)
	})
}

// ClientIP is the request's client address: the first X-Forwarded-For
// entry when trustForwardedFor (behind a reverse proxy that sets it),
// otherwise the peer address.
func ClientIP(r *http.Request, trustForwardedFor bool) string {
	if trustForwardedFor {
		if xff := r.Header.Get("X-Forwarded-For"); xff != "" {
			first, _, _ := strings.Cut(xff, ",")
			return strings.TrimSpace(first)
		}
	}
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}

// LogPath is a request path fit for the log: a delayed event's ID, which
// MSC4140 makes the bearer's authority over the event, is replaced.
func LogPath(path string) string {
	const seg = "/delayed_events/"
	i := strings.Index(path, seg)
	if i < 0 {
		return path
	}
	rest := path[i+len(seg):]
	if rest == "" {
		return path
	}
	tail := ""
	if j := strings.IndexByte(rest, '/'); j >= 0 {
		tail = rest[j:]
	}
	return path[:i+len(seg)] + "<redacted>" + tail
}

// LogID is a secret identifier shortened for the log: enough to follow
// one through the lines, too little to use.
func LogID(id string) string {
	if len(id) <= 6 {
		return "…"
	}
	return id[:4] + "…"
}
