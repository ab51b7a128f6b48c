package clientapi

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/url"
	"strconv"
	"sync"
	"time"

	"github.com/coder/websocket"
	"github.com/gorilla/mux"
	"github.com/sirupsen/logrus"

	"github.com/tessera-hs/tessera/internal/config"
	"github.com/tessera-hs/tessera/internal/httpx"
	"github.com/tessera-hs/tessera/internal/mxerr"
	"github.com/tessera-hs/tessera/syncapi"
	"github.com/tessera-hs/tessera/users"
)

// The sync stream: /sync over a WebSocket. The server pushes a message
// shaped exactly like a /sync response whenever something changes for the
// device, and the client may send requests (send a message, set state,
// typing, read markers, ack) on the same socket. docs/websocket.md is the
// protocol's description for client authors.
//
// Each connection has three goroutines besides the handler's own (which
// reads the client's requests): the sync loop, which long-polls the sync
// service and queues each response with news; the writer, the only one
// that writes data messages; and the keepalive, which pings. They all end
// when the connection does, and the handler returns only after they have.

// StreamPath is where the sync stream is served.
const StreamPath = "/_matrix/client/unstable/org.tessera.stream"

// StreamClosedMessage is the message of the log entry written when the
// server closes a stream; its fields "code" and "reason" say why.
const StreamClosedMessage = "closing sync stream"

// streamSubprotocol is the WebSocket subprotocol a client must ask for:
// JSON text messages.
const streamSubprotocol = "m.json"

// Close codes of the stream besides the standard ones (1000 normal, 1001
// going away, 1008 policy violation, 1009 too big, 1011 internal error).
// 4000 + an HTTP status, as the Matrix error that ended the stream would
// have had; the reason is its errcode.
const (
	closeTokenInvalid websocket.StatusCode = 4401
)

// streamLimits bound what one connection may hold and how long it may
// stall. The operator sets most of them (sync_stream in the config).
type streamLimits struct {
	// queueLen bounds the outgoing messages waiting for the writer. The
	// sync loop queues one message at a time and waits for it to be
	// written; request answers wait for room in the queue, up to the
	// write timeout.
	queueLen int
	// writeTimeout is how long one message may take to write, plus
	// 1 s per minWriteRate bytes of it.
	writeTimeout time.Duration
	minWriteRate int64
	// pingInterval is the keepalive period; pingTimeout how long a pong
	// may take.
	pingInterval, pingTimeout time.Duration
	// readLimit is the largest request message accepted (else close 1009):
	// the HTTP body limit, as a request over the stream is an HTTP
	// request's body.
	readLimit int64
	// syncTimeout is how long each wait of the sync loop lasts before it
	// computes again (an empty answer, not sent).
	syncTimeout time.Duration
}

func newStreamLimits(cfg *config.Config) streamLimits {
	ss := cfg.SyncStream
	return streamLimits{
		queueLen:     ss.QueueLength,
		writeTimeout: ss.WriteTimeout.Std(),
		minWriteRate: ss.MinWriteRate,
		pingInterval: ss.PingInterval.Std(),
		pingTimeout:  ss.PingTimeout.Std(),
		readLimit:    cfg.HTTP.MaxRequestBodyBytes,
		syncTimeout:  5 * time.Minute,
	}
}

// streamHub keeps the open streams of one API, so that shutdown can close
// them: http.Server.Shutdown neither closes nor waits for hijacked
// connections.
type streamHub struct {
	a        *API
	dispatch http.Handler // the client API's own routes, for requests
	limits   streamLimits

	mu      sync.Mutex
	conns   map[*streamConn]struct{}
	closing bool
	wg      sync.WaitGroup // handlers of open streams
}

// registerStream serves the sync stream on r and keeps r to dispatch the
// stream's requests to, with the same body limit as HTTP requests, so that
// a request over the stream means exactly what the endpoint means.
func (a *API) registerStream(r *mux.Router) {
	a.stream = &streamHub{
		a:        a,
		dispatch: httpx.LimitBody(a.cfg.HTTP.MaxRequestBodyBytes, r),
		limits:   newStreamLimits(a.cfg),
		conns:    map[*streamConn]struct{}{},
	}
	r.Handle(StreamPath, a.stream).Methods(http.MethodGet)
}

// CloseStreams closes every open sync stream with 1001 (going away) and
// waits, until ctx ends, for their handlers to return. Streams opened
// afterwards are refused. The server calls it as it shuts down, after the
// sync service has stopped.
func (a *API) CloseStreams(ctx context.Context) {
	h := a.stream
	if h == nil {
		return
	}
	h.mu.Lock()
	h.closing = true
	for c := range h.conns {
		c.close(websocket.StatusGoingAway, "server shutting down")
	}
	h.mu.Unlock()
	done := make(chan struct{})
	go func() { h.wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-ctx.Done():
	}
}

// TokensRevoked has every open stream of userID re-check its access token
// at once, closing those whose token is gone (4401): users calls it after
// a logout, a device deletion, a password change that logs devices out, a
// deactivation or a token refresh. It does not wait for the checks.
func (a *API) TokensRevoked(userID string) {
	h := a.stream
	if h == nil {
		return
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	for c := range h.conns {
		if c.who.UserID != userID {
			continue
		}
		select {
		case c.recheck <- struct{}{}:
		default: // a check is already due
		}
	}
}

// add registers a new stream; false when the server is shutting down.
func (h *streamHub) add(c *streamConn) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closing {
		return false
	}
	h.conns[c] = struct{}{}
	h.wg.Add(1)
	return true
}

func (h *streamHub) remove(c *streamConn) {
	h.mu.Lock()
	delete(h.conns, c)
	h.mu.Unlock()
	h.wg.Done()
}

// ServeHTTP: GET StreamPath. Everything that can be refused is checked
// before the upgrade, so that a refusal is a normal Matrix error: the
// access token (401), the upgrade and the subprotocol (400
// M_INVALID_PARAM), and the /sync parameters (whose first response is
// computed before the upgrade, too).
func (h *streamHub) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	a := h.a
	fail := func(err error) { httpx.WriteError(w, r, a.log, err) }
	token, inProtocol, err := streamToken(r)
	if err != nil {
		fail(err)
		return
	}
	// An application service's stream is its asserted user's (user_id,
	// device_id), as on every other endpoint.
	who, err := a.authenticate(r, token)
	if err != nil {
		if !inProtocol || !refuseInStream(w, r, err) {
			fail(err)
		}
		return
	}
	if !httpx.HeaderHasToken(r.Header, "Connection", "upgrade") || !httpx.HeaderHasToken(r.Header, "Upgrade", "websocket") {
		fail(mxerr.InvalidParam("This endpoint is a WebSocket: send an Upgrade: websocket request"))
		return
	}
	if !httpx.HeaderHasToken(r.Header, "Sec-WebSocket-Protocol", streamSubprotocol) {
		fail(mxerr.InvalidParam("Ask for the WebSocket subprotocol %q (Sec-WebSocket-Protocol)", streamSubprotocol))
		return
	}
	h.mu.Lock()
	closing := h.closing
	h.mu.Unlock()
	if closing {
		fail(mxerr.Unknown(http.StatusServiceUnavailable, "The server is shutting down"))
		return
	}

	// The stream keeps the request context's values but not its
	// cancellation: that context must not be used after the hijack.
	ctx, cancel := context.WithCancel(context.WithoutCancel(r.Context()))
	defer cancel()
	c := &streamConn{
		hub: h, who: who, token: token, assertion: assertion(r), query: r.URL.Query(),
		remoteAddr: r.RemoteAddr, header: r.Header.Clone(),
		ctx: ctx, cancel: cancel,
		out:     make(chan outMessage, h.limits.queueLen),
		acked:   make(chan struct{}, 1),
		recheck: make(chan struct{}, 1),
		log:     a.log.WithFields(logrus.Fields{"user_id": who.UserID, "device_id": who.DeviceID}),
	}
	// The first response: for since (an initial sync without it), with
	// every /sync parameter, at once.
	first, nextBatch, toDevice, _, err := c.syncOnce(r.Context(), "", 0, true)
	if err != nil {
		fail(err)
		return
	}

	ws, err := websocket.Accept(w, r, &websocket.AcceptOptions{
		Subprotocols: []string{streamSubprotocol},
		// Any origin: Matrix clients are served from anywhere, and the
		// stream is authorised by the access token alone, never by
		// cookies, so a page from another origin gains nothing it does not
		// already hold (this is why /_matrix/client sends
		// Access-Control-Allow-Origin: * too).
		InsecureSkipVerify: true,
	})
	if err != nil {
		return // Accept has answered
	}
	ws.SetReadLimit(h.limits.readLimit)
	c.ws = ws
	if !h.add(c) {
		_ = ws.Close(websocket.StatusGoingAway, "server shutting down")
		return
	}
	defer h.remove(c)

	// The user is syncing (online, or as set_presence says) while the
	// stream is open, not only while a wait is under way.
	done := a.syncs.Presence().Syncing(ctx, who.UserID, c.query.Get("set_presence"))
	defer done()

	c.wg.Go(c.writeLoop)
	c.wg.Go(c.keepalive)
	c.wg.Go(func() { c.syncLoop(first, nextBatch, toDevice) })
	c.readLoop()
	c.close(websocket.StatusNormalClosure, "")
	c.wg.Wait()
}

// streamConn is one open stream.
type streamConn struct {
	hub   *streamHub
	ws    *websocket.Conn
	who   *users.Requester
	token string
	// assertion is what an application service asserted (user_id,
	// device_id): re-checked with the token, and sent with its requests.
	assertion  users.Assertion
	query      url.Values // the request's parameters
	remoteAddr string
	header     http.Header
	log        logrus.FieldLogger

	// ctx ends when the connection closes; cancel ends it.
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup // the connection's goroutines

	out       chan outMessage
	closeOnce sync.Once
	// recheck asks the keepalive to re-check the access token now: some
	// of the user's tokens were just revoked (TokensRevoked).
	recheck chan struct{}

	// The ack state. lastSent is the next_batch of the last sync message
	// sent; pending, when not empty, is that of a message that carried
	// to-device events and is not acknowledged yet: the sync loop waits
	// for its ack (signalled on acked) before computing the next one.
	mu       sync.Mutex
	lastSent syncapi.Token
	pending  string
	acked    chan struct{}
}

// outMessage is a message for the writer. written, if not nil, is closed
// once it is written.
type outMessage struct {
	data    []byte
	written chan struct{}
}

// close ends the connection with a close frame (once; later calls, and
// abort, do nothing). It does not wait.
func (c *streamConn) close(code websocket.StatusCode, reason string) { c.end(code, reason, false) }

// abort ends the connection without a close frame, for when one cannot be
// written: the writer is stuck on a client that does not read.
func (c *streamConn) abort(code websocket.StatusCode, reason string) { c.end(code, reason, true) }

// end records why the connection ends (the first reason wins), stops the
// connection's goroutines and closes the socket. No call into the library
// is given a deadline of its own (a deadline that passes makes it drop the
// connection, and another goroutine would then record the wrong reason):
// timeouts are timers that call abort.
func (c *streamConn) end(code websocket.StatusCode, reason string, now bool) {
	c.closeOnce.Do(func() {
		c.cancel()
		// Info when the server ends the stream for a reason worth an
		// operator's notice (tests watch for it too), debug otherwise.
		entry := c.log.WithFields(logrus.Fields{"code": int(code), "reason": reason})
		if code != websocket.StatusNormalClosure && code != websocket.StatusGoingAway {
			entry.Info(StreamClosedMessage)
		} else {
			entry.Debug(StreamClosedMessage)
		}
		if now {
			c.wg.Go(func() { _ = c.ws.CloseNow() })
			return
		}
		// The close handshake takes up to 10 s against a peer that does
		// not answer; it runs on its own so nothing waits for it but the
		// handler.
		c.wg.Go(func() { _ = c.ws.Close(code, reason) })
	})
}

// send queues a message for the writer. When the queue is full it waits,
// up to the write timeout: the writer is blocked on a client that does not
// read, and a client that does not read for that long is disconnected
// (1008) rather than buffered for without limit. It reports whether the
// message was queued.
func (c *streamConn) send(data []byte, written chan struct{}) bool {
	m := outMessage{data: data, written: written}
	select {
	case c.out <- m:
		return true
	case <-c.ctx.Done():
		return false
	default:
	}
	t := time.NewTimer(c.hub.limits.writeTimeout)
	defer t.Stop()
	select {
	case c.out <- m:
		return true
	case <-c.ctx.Done():
		return false
	case <-t.C:
		c.close(websocket.StatusPolicyViolation, "slow reader: outgoing queue full")
		return false
	}
}

// sendJSON queues v, marshalled.
func (c *streamConn) sendJSON(v any) bool {
	data, err := json.Marshal(v)
	if err != nil {
		c.log.WithError(err).Error("sync stream: marshalling a message")
		c.close(websocket.StatusInternalError, "internal error")
		return false
	}
	return c.send(data, nil)
}

// writeLoop is the connection's only writer of data messages. Each write
// has a deadline; a client that does not take a message in time is
// disconnected.
func (c *streamConn) writeLoop() {
	l := c.hub.limits
	for {
		select {
		case <-c.ctx.Done():
			return
		case m := <-c.out:
			timeout := l.writeTimeout + time.Duration(int64(len(m.data))/l.minWriteRate)*time.Second
			t := time.AfterFunc(timeout, func() { c.abort(websocket.StatusPolicyViolation, "slow reader: write timed out") })
			err := c.ws.Write(context.Background(), websocket.MessageText, m.data)
			t.Stop()
			if err != nil {
				c.close(websocket.StatusInternalError, "write failed") // unless a reason is known
				return
			}
			if m.written != nil {
				close(m.written)
			}
		}
	}
}

// keepalive pings every pingInterval and closes the connection when a pong
// does not come back in time. It also re-checks the access token after
// each pong, and at once when asked to (recheck), so that a logged-out
// device's stream ends.
func (c *streamConn) keepalive() {
	l := c.hub.limits
	t := time.NewTicker(l.pingInterval)
	defer t.Stop()
	for {
		select {
		case <-c.ctx.Done():
			return
		case <-c.recheck:
			if !c.checkToken() {
				return
			}
			continue
		case <-t.C:
		}
		// Ping returns when the pong comes or the connection closes.
		pt := time.AfterFunc(l.pingTimeout, func() { c.close(websocket.StatusPolicyViolation, "keepalive: no pong") })
		err := c.ws.Ping(context.Background())
		pt.Stop()
		if err != nil || c.ctx.Err() != nil {
			return
		}
		if !c.checkToken() {
			return
		}
	}
}

// checkToken re-authenticates the stream's access token, closing the
// stream (4401) when it is no longer valid.
func (c *streamConn) checkToken() bool {
	who, err := c.hub.a.users.AuthenticateAs(c.ctx, c.token, users.ClientInfo{
		IP: c.clientIP(), UserAgent: c.header.Get("User-Agent"),
	}, c.assertion)
	if err == nil && who.Locked {
		err = mxerr.UserLocked()
	}
	if err == nil {
		return true
	}
	if c.ctx.Err() != nil {
		return false
	}
	if me, ok := mxerr.As(err); ok && me.Status == http.StatusUnauthorized {
		reason := me.Code
		if soft, _ := me.Extra["soft_logout"].(bool); soft {
			reason += " soft_logout"
		}
		c.close(closeTokenInvalid, reason)
		return false
	}
	// A database hiccup is not the client's fault: try again next time.
	c.log.WithError(err).Warn("sync stream: re-checking the access token")
	return true
}

func (c *streamConn) clientIP() string {
	r := &http.Request{RemoteAddr: c.remoteAddr, Header: c.header}
	return c.hub.a.clientIP(r)
}

// syncOnce computes one sync response through the /sync handler itself,
// so that every /sync parameter means here what it means there: since
// replaced by the given token (none: the request's own), the wait by
// timeout. full_state applies to the first response only. It returns the
// response's JSON, its next_batch, whether it carries to-device events and
// whether it has no news at all.
func (c *streamConn) syncOnce(ctx context.Context, since string, timeout time.Duration, first bool) (data []byte, nextBatch string, toDevice, empty bool, err error) {
	q := url.Values{}
	for k, v := range c.query {
		q[k] = v
	}
	q.Del("access_token")
	q.Set("timeout", strconv.FormatInt(timeout.Milliseconds(), 10))
	if since != "" {
		q.Set("since", since)
	}
	if !first {
		q.Del("full_state")
	}
	r, err := http.NewRequestWithContext(ctx, http.MethodGet, "/_matrix/client/v3/sync?"+q.Encode(), nil)
	if err != nil {
		return nil, "", false, false, err
	}
	r.RemoteAddr, r.Header = c.remoteAddr, c.header
	resp, err := c.hub.a.sync(r, c.who)
	if err != nil {
		return nil, "", false, false, err
	}
	if data, err = json.Marshal(resp); err != nil {
		return nil, "", false, false, err
	}
	if sr, ok := resp.(*syncapi.Response); ok {
		return data, sr.NextBatch, len(sr.ToDevice.Events) > 0, syncIsEmpty(resp, data), nil
	}
	var head struct {
		NextBatch string `json:"next_batch"`
		ToDevice  struct {
			Events []json.RawMessage `json:"events"`
		} `json:"to_device"`
	}
	if err := json.Unmarshal(data, &head); err != nil || head.NextBatch == "" {
		return nil, "", false, false, errors.New("sync response without next_batch")
	}
	return data, head.NextBatch, len(head.ToDevice.Events) > 0, syncIsEmpty(resp, data), nil
}

// syncLoop sends the first response, then every later one that has news:
// it long-polls the sync service from the last next_batch sent, so each
// message carries exactly what changed since the one before.
func (c *streamConn) syncLoop(first []byte, nextBatch string, toDevice bool) {
	since := nextBatch
	if !c.deliver(first, nextBatch, toDevice) {
		return
	}
	l := c.hub.limits
	for {
		if !c.waitAck() {
			return
		}
		start := time.Now()
		data, nb, td, empty, err := c.syncOnce(c.ctx, since, l.syncTimeout, false)
		if c.ctx.Err() != nil {
			return
		}
		if err != nil {
			reason := "internal error"
			if me, ok := mxerr.As(err); ok {
				reason = me.Code
			} else {
				c.log.WithError(err).Error("sync stream: computing a response")
			}
			c.close(websocket.StatusInternalError, reason)
			return
		}
		if empty {
			// The wait ended without news: its timeout, or the sync
			// service stopping (then the server is shutting down and
			// will close this stream; do not spin meanwhile).
			since = nb
			if time.Since(start) < l.syncTimeout/2 && !sleepCtx(c.ctx, 100*time.Millisecond) {
				return
			}
			continue
		}
		if !c.deliver(data, nb, td) {
			return
		}
		since = nb
	}
}

// deliver queues a sync message, waits until it is written and records its
// next_batch (as pending an ack when it carries to-device events).
func (c *streamConn) deliver(data []byte, nextBatch string, toDevice bool) bool {
	tok, err := syncapi.ParseToken(nextBatch)
	if err != nil {
		c.log.WithError(err).Error("sync stream: the sync service's own next_batch does not parse")
		c.close(websocket.StatusInternalError, "internal error")
		return false
	}
	c.mu.Lock()
	c.lastSent = tok
	if toDevice {
		c.pending = nextBatch
	}
	c.mu.Unlock()
	// Wait until it is written, so that a client that reads slowly gets
	// fewer, larger messages (each from the last one's next_batch) rather
	// than a queue of small ones.
	written := make(chan struct{})
	if !c.send(data, written) {
		return false
	}
	select {
	case <-written:
		return true
	case <-c.ctx.Done():
		return false
	}
}

// waitAck waits while a message with to-device events is not acknowledged.
func (c *streamConn) waitAck() bool {
	for {
		c.mu.Lock()
		pending := c.pending
		c.mu.Unlock()
		if pending == "" {
			return true
		}
		select {
		case <-c.acked:
		case <-c.ctx.Done():
			return false
		}
	}
}

// ack handles an ack of nextBatch. Acknowledging the message that waits
// for it lets the stream go on (and the next computation, from that
// next_batch, deletes the to-device messages it carried). An older token
// of this stream is a harmless no-op; anything past the last message sent
// is refused.
func (c *streamConn) ack(nextBatch string) error {
	tok, err := syncapi.ParseToken(nextBatch)
	if err != nil {
		return err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	for i, p := range tok {
		var sent int64
		if i < len(c.lastSent) {
			sent = c.lastSent[i]
		}
		if p > sent {
			return mxerr.InvalidParam("next_batch %q is not one this stream has sent", nextBatch)
		}
	}
	if c.pending != "" && tok.String() == c.lastSent.String() {
		c.pending = ""
		select {
		case c.acked <- struct{}{}:
		default:
		}
	}
	return nil
}

// syncIsEmpty reports whether a sync response has no news: every section
// empty. next_batch and the device's key counts, which every response
// carries, do not count. It reads the JSON rather than the Go type so that
// sections added later count as news without a change here.
func syncIsEmpty(resp any, data []byte) bool {
	// Most responses the loop sees have news in a section it knows: no
	// need to decode them to tell.
	if r, ok := resp.(*syncapi.Response); ok {
		if len(r.Rooms.Join)+len(r.Rooms.Invite)+len(r.Rooms.Leave)+len(r.Rooms.Knock) > 0 ||
			len(r.AccountData.Events)+len(r.Presence.Events)+len(r.ToDevice.Events) > 0 ||
			len(r.DeviceLists.Changed)+len(r.DeviceLists.Left) > 0 {
			return false
		}
	}
	d := json.NewDecoder(bytes.NewReader(data))
	d.UseNumber()
	var top map[string]any
	if d.Decode(&top) != nil {
		return false
	}
	for k, v := range top {
		switch k {
		case "next_batch", "device_one_time_keys_count", "device_unused_fallback_key_types",
			"org.matrix.msc2732.device_unused_fallback_key_types":
			continue
		}
		if !jsonEmpty(v) {
			return false
		}
	}
	return true
}

// jsonEmpty: null, an empty array, or an object of empty values.
func jsonEmpty(v any) bool {
	switch v := v.(type) {
	case nil:
		return true
	case []any:
		return len(v) == 0
	case map[string]any:
		for _, x := range v {
			if !jsonEmpty(x) {
				return false
			}
		}
		return true
	}
	return false
}

// sleepCtx waits d or until ctx ends, and reports whether d passed.
func sleepCtx(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}
