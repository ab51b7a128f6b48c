package clientapi_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"runtime"
	"runtime/pprof"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/sirupsen/logrus"
	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/tessera-hs/tessera/clientapi"
	"github.com/tessera-hs/tessera/internal/config"
	"github.com/tessera-hs/tessera/internal/testserver"
)

// These tests drive the sync stream (docs/websocket.md) with a real
// WebSocket client, github.com/coder/websocket, against a real server.

// wsMsg is a message from the stream: a sync response (NextBatch set) or
// the answer to a request (ID set).
type wsMsg struct {
	raw       []byte
	NextBatch *string `json:"next_batch"`
	Rooms     struct {
		Join map[string]struct {
			Timeline struct {
				Events  []wsEvent `json:"events"`
				Limited bool      `json:"limited"`
			} `json:"timeline"`
			State struct {
				Events []wsEvent `json:"events"`
			} `json:"state"`
			Ephemeral struct {
				Events []wsEvent `json:"events"`
			} `json:"ephemeral"`
		} `json:"join"`
	} `json:"rooms"`
	ToDeviceEvents []wsEvent       `json:"-"` // to_device.events
	ID             json.RawMessage `json:"id"`
	Result         json.RawMessage `json:"result"`
	Error          *struct {
		ErrCode string `json:"errcode"`
		Message string `json:"error"`
	} `json:"error"`
}

type wsEvent struct {
	EventID  string          `json:"event_id"`
	Type     string          `json:"type"`
	Sender   string          `json:"sender"`
	StateKey *string         `json:"state_key"`
	Content  json.RawMessage `json:"content"`
}

func (e wsEvent) body() string {
	var c struct {
		Body string `json:"body"`
		N    int    `json:"n"`
	}
	_ = json.Unmarshal(e.Content, &c)
	if c.Body == "" && c.N != 0 {
		return fmt.Sprint(c.N)
	}
	return c.Body
}

func parseWSMsg(t testing.TB, data []byte) wsMsg {
	t.Helper()
	var m wsMsg
	if err := json.Unmarshal(data, &m); err != nil {
		t.Fatalf("stream message is not what it should be: %v: %s", err, data)
	}
	var td struct {
		ToDevice struct {
			Events []wsEvent `json:"events"`
		} `json:"to_device"`
	}
	_ = json.Unmarshal(data, &td)
	m.ToDeviceEvents = td.ToDevice.Events
	m.raw = data
	return m
}

// timelineBodies lists the bodies of the message events of a room in a
// sync message.
func (m wsMsg) timeline(roomID id.RoomID) []wsEvent {
	return m.Rooms.Join[roomID.String()].Timeline.Events
}

func (m wsMsg) hasEvent(roomID id.RoomID, eventID string) bool {
	for _, ev := range m.timeline(roomID) {
		if ev.EventID == eventID {
			return true
		}
	}
	return false
}

func streamURL(srv *testserver.Server, q url.Values) string {
	u := "ws" + strings.TrimPrefix(srv.URL, "http") + clientapi.StreamPath
	if len(q) > 0 {
		u += "?" + q.Encode()
	}
	return u
}

// wsOpts adjust a dial.
type wsOpts struct {
	query        url.Values
	tokenInQuery bool
	// tokenInProtocol offers the token as a subprotocol, as browsers do.
	tokenInProtocol bool
	noSubproto      bool
	origin          string
	httpClient      *http.Client
}

// wsDialRaw dials the stream and returns the connection, or the refusal.
func wsDialRaw(srv *testserver.Server, token string, o wsOpts) (*websocket.Conn, *http.Response, error) {
	q := url.Values{}
	for k, v := range o.query {
		q[k] = v
	}
	h := http.Header{}
	if token != "" {
		if o.tokenInQuery {
			q.Set("access_token", token)
		} else if o.tokenInProtocol {
			// set below, after m.json
		} else {
			h.Set("Authorization", "Bearer "+token)
		}
	}
	if o.origin != "" {
		h.Set("Origin", o.origin)
	}
	opts := &websocket.DialOptions{HTTPHeader: h, HTTPClient: o.httpClient}
	if !o.noSubproto {
		opts.Subprotocols = []string{"m.json"}
	}
	if token != "" && o.tokenInProtocol {
		opts.Subprotocols = append(opts.Subprotocols, clientapi.StreamTokenProtocolPrefix+token)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, resp, err := websocket.Dial(ctx, streamURL(srv, q), opts)
	if err == nil {
		c.SetReadLimit(64 << 20)
	}
	return c, resp, err
}

// wsClient is an open stream whose messages a goroutine reads into a
// channel, so that a test can wait for one with a timeout (a read with a
// context that expires would close the connection).
type wsClient struct {
	t    testing.TB
	c    *websocket.Conn
	msgs chan []byte
	err  error // why msgs was closed
	n    int   // request ids
}

func wsConnect(t testing.TB, srv *testserver.Server, token string, o wsOpts) *wsClient {
	t.Helper()
	c, resp, err := wsDialRaw(srv, token, o)
	if err != nil {
		body := ""
		if resp != nil && resp.Body != nil {
			b, _ := io.ReadAll(resp.Body)
			body = string(b)
		}
		t.Fatalf("dial the stream: %v %s", err, body)
	}
	w := &wsClient{t: t, c: c, msgs: make(chan []byte, 1024)}
	go func() {
		defer close(w.msgs)
		for {
			_, data, err := c.Read(context.Background())
			if err != nil {
				w.err = err
				return
			}
			w.msgs <- data
		}
	}()
	t.Cleanup(func() { c.CloseNow() })
	return w
}

// next returns the next message, failing the test after timeout.
func (w *wsClient) next(timeout time.Duration) wsMsg {
	w.t.Helper()
	select {
	case data, ok := <-w.msgs:
		if !ok {
			w.t.Fatalf("stream closed: %v", w.err)
		}
		return parseWSMsg(w.t, data)
	case <-time.After(timeout):
		w.t.Fatalf("no stream message within %v", timeout)
	}
	panic("unreachable")
}

// quiet checks that no message comes within d.
func (w *wsClient) quiet(d time.Duration) {
	w.t.Helper()
	select {
	case data, ok := <-w.msgs:
		if ok {
			w.t.Fatalf("unexpected stream message: %s", data)
		}
		w.t.Fatalf("stream closed: %v", w.err)
	case <-time.After(d):
	}
}

// nextSync waits for a sync message for which ok is true, skipping others.
func (w *wsClient) nextSync(timeout time.Duration, ok func(wsMsg) bool) wsMsg {
	w.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		m := w.next(time.Until(deadline))
		if m.NextBatch != nil && ok(m) {
			return m
		}
	}
}

// closed waits for the stream to end and returns why.
func (w *wsClient) closed(timeout time.Duration) error {
	w.t.Helper()
	deadline := time.After(timeout)
	for {
		select {
		case _, ok := <-w.msgs:
			if !ok {
				return w.err
			}
		case <-deadline:
			w.t.Fatalf("stream still open after %v", timeout)
		}
	}
}

func (w *wsClient) write(data []byte) {
	w.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := w.c.Write(ctx, websocket.MessageText, data); err != nil {
		w.t.Fatalf("write: %v", err)
	}
}

// call sends a request and waits for its answer; sync messages that come
// first are returned too.
func (w *wsClient) call(method string, params any) (answer wsMsg, syncs []wsMsg) {
	w.t.Helper()
	w.n++
	reqID := fmt.Sprintf("r%d", w.n)
	raw, err := json.Marshal(map[string]any{"id": reqID, "method": method, "params": params})
	if err != nil {
		w.t.Fatal(err)
	}
	w.write(raw)
	for {
		m := w.next(10 * time.Second)
		if m.NextBatch != nil {
			syncs = append(syncs, m)
			continue
		}
		if string(m.ID) != `"`+reqID+`"` {
			w.t.Fatalf("answer for id %s, want %s: %s", m.ID, reqID, m.raw)
		}
		return m, syncs
	}
}

// mustCall is call that fails the test on an error answer.
func (w *wsClient) mustCall(method string, params any) json.RawMessage {
	w.t.Helper()
	m, _ := w.call(method, params)
	if m.Error != nil || m.Result == nil {
		w.t.Fatalf("%s: %s", method, m.raw)
	}
	return m.Result
}

func wantCallError(t testing.TB, w *wsClient, method string, params any, errcode string) {
	t.Helper()
	m, _ := w.call(method, params)
	if m.Error == nil || m.Error.ErrCode != errcode || m.Result != nil {
		t.Fatalf("%s: %s, want error %s", method, m.raw, errcode)
	}
}

func wsRoom(t testing.TB, owner *mautrix.Client, others ...*mautrix.Client) id.RoomID {
	t.Helper()
	bg := context.Background()
	room, err := owner.CreateRoom(bg, &mautrix.ReqCreateRoom{Preset: "public_chat", Name: "Stream"})
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range others {
		if _, err := c.JoinRoom(bg, room.RoomID.String(), nil); err != nil {
			t.Fatal(err)
		}
	}
	return room.RoomID
}

func wsSendText(t testing.TB, c *mautrix.Client, room id.RoomID, body string) string {
	t.Helper()
	resp, err := c.SendText(context.Background(), room, body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.EventID.String()
}

func TestStreamConnect(t *testing.T) {
	t.Parallel()
	srv := testserver.Start(t)
	alice := srv.Register("alice", "correct horse")
	room := wsRoom(t, alice)
	sent := wsSendText(t, alice, room, "hello")

	for _, o := range []wsOpts{
		{},                                      // Authorization: Bearer
		{tokenInQuery: true},                    // ?access_token=, as browsers must
		{origin: "https://app.element.example"}, // a browser client from another origin
		{tokenInProtocol: true},                 // org.tessera.token.<token>, as browsers should
	} {
		w := wsConnect(t, srv, alice.AccessToken, o)
		if p := w.c.Subprotocol(); p != "m.json" {
			t.Fatalf("subprotocol %q, want m.json (never the token)", p)
		}
		first := w.next(10 * time.Second)
		if first.NextBatch == nil || *first.NextBatch == "" {
			t.Fatalf("first message has no next_batch: %s", first.raw)
		}
		if !first.hasEvent(room, sent) {
			t.Fatalf("the initial sync lacks the room's message: %s", first.raw)
		}
		var create bool
		jr := first.Rooms.Join[room.String()]
		for _, ev := range append(jr.State.Events, jr.Timeline.Events...) {
			create = create || ev.Type == "m.room.create"
		}
		if !create {
			t.Fatalf("the initial sync lacks m.room.create: %s", first.raw)
		}
		w.c.Close(websocket.StatusNormalClosure, "")
	}

	// since works as for /sync: from the initial sync's next_batch,
	// nothing is new, and the first message says so (it is always sent).
	w := wsConnect(t, srv, alice.AccessToken, wsOpts{})
	nb := *w.next(10 * time.Second).NextBatch
	w.c.Close(websocket.StatusNormalClosure, "")
	w = wsConnect(t, srv, alice.AccessToken, wsOpts{query: url.Values{"since": {nb}}})
	first := w.next(10 * time.Second)
	if first.NextBatch == nil || len(first.Rooms.Join) != 0 {
		t.Fatalf("first message from since = the latest next_batch: %s", first.raw)
	}
	// A filter applies to every message.
	filter := `{"room":{"timeline":{"limit":1}}}`
	w = wsConnect(t, srv, alice.AccessToken, wsOpts{query: url.Values{"filter": {filter}}})
	if n := len(w.next(10 * time.Second).timeline(room)); n != 1 {
		t.Fatalf("timeline of %d events with a limit of 1", n)
	}
}

func TestStreamRefusedBeforeUpgrade(t *testing.T) {
	t.Parallel()
	srv := testserver.Start(t)
	alice := srv.Register("alice", "correct horse")

	refused := func(name, token string, o wsOpts, status int, errcode string) {
		t.Helper()
		c, resp, err := wsDialRaw(srv, token, o)
		if err == nil {
			c.CloseNow()
			t.Fatalf("%s: the upgrade succeeded", name)
		}
		if resp == nil {
			t.Fatalf("%s: no HTTP answer: %v", name, err)
		}
		b, _ := io.ReadAll(resp.Body)
		var e struct {
			ErrCode string `json:"errcode"`
		}
		if resp.StatusCode != status || json.Unmarshal(b, &e) != nil || e.ErrCode != errcode {
			t.Fatalf("%s: %d %s, want %d %s", name, resp.StatusCode, b, status, errcode)
		}
		if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
			t.Fatalf("%s: Content-Type %q", name, ct)
		}
	}
	refused("no token", "", wsOpts{}, 401, "M_MISSING_TOKEN")
	refused("unknown token", "not-a-token", wsOpts{}, 401, "M_UNKNOWN_TOKEN")
	refused("unknown token in the query", "not-a-token", wsOpts{tokenInQuery: true}, 401, "M_UNKNOWN_TOKEN")
	refused("no subprotocol", alice.AccessToken, wsOpts{noSubproto: true}, 400, "M_INVALID_PARAM")
	refused("bad since", alice.AccessToken, wsOpts{query: url.Values{"since": {"nonsense"}}}, 400, "M_INVALID_PARAM")
	refused("bad set_presence", alice.AccessToken, wsOpts{query: url.Values{"set_presence": {"asleep"}}}, 400, "M_INVALID_PARAM")

	// A plain GET (no upgrade) is refused too, with the token checked first.
	req, _ := http.NewRequest(http.MethodGet, srv.URL+clientapi.StreamPath, nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 401 {
		t.Fatalf("plain GET without a token: %d", resp.StatusCode)
	}
	req.Header.Set("Authorization", "Bearer "+alice.AccessToken)
	resp, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 400 || !bytes.Contains(b, []byte("M_INVALID_PARAM")) {
		t.Fatalf("plain GET: %d %s", resp.StatusCode, b)
	}
}

func TestStreamLiveDelivery(t *testing.T) {
	t.Parallel()
	srv := testserver.Start(t)
	alice := srv.Register("alice", "correct horse")
	bob := srv.Register("bob", "correct horse")
	room := wsRoom(t, alice, bob)

	w := wsConnect(t, srv, bob.AccessToken, wsOpts{})
	first := w.next(10 * time.Second)
	if _, ok := first.Rooms.Join[room.String()]; !ok {
		t.Fatalf("initial sync lacks the room: %s", first.raw)
	}
	// No empty messages: nothing happens, nothing is sent.
	w.quiet(300 * time.Millisecond)

	for i := range 3 {
		start := time.Now()
		sent := wsSendText(t, alice, room, fmt.Sprintf("live %d", i))
		m := w.nextSync(5*time.Second, func(m wsMsg) bool { return m.hasEvent(room, sent) })
		t.Logf("message %d arrived %v after the send started", i, time.Since(start))

		// The message is shaped exactly like a /sync response: the same
		// top-level keys as an incremental /sync.
		var wsKeys, syncKeys map[string]json.RawMessage
		if err := json.Unmarshal(m.raw, &wsKeys); err != nil {
			t.Fatal(err)
		}
		syncKeys = rawSyncKeys(t, bob, *first.NextBatch)
		if !slices.Equal(sortedKeys(wsKeys), sortedKeys(syncKeys)) {
			t.Fatalf("stream message keys %v, /sync keys %v", sortedKeys(wsKeys), sortedKeys(syncKeys))
		}
		// Each message starts where the one before ended: the event is
		// not sent twice.
		if len(m.timeline(room)) != 1 {
			t.Fatalf("timeline %v, want the one new event", m.timeline(room))
		}
	}
	w.quiet(300 * time.Millisecond)
}

// rawSyncKeys makes an incremental /sync and returns its top-level fields.
func rawSyncKeys(t testing.TB, c *mautrix.Client, since string) map[string]json.RawMessage {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, c.HomeserverURL.String()+"/_matrix/client/v3/sync?timeout=0&since="+url.QueryEscape(since), nil)
	req.Header.Set("Authorization", "Bearer "+c.AccessToken)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var out map[string]json.RawMessage
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
		t.Fatal(err)
	}
	return out
}

func sortedKeys(m map[string]json.RawMessage) []string {
	var ks []string
	for k := range m {
		ks = append(ks, k)
	}
	slices.Sort(ks)
	return ks
}

func TestStreamRequests(t *testing.T) {
	t.Parallel()
	srv := testserver.Start(t)
	alice := srv.Register("alice", "correct horse")
	bob := srv.Register("bob", "correct horse")
	room := wsRoom(t, alice, bob)
	private, err := bob.CreateRoom(context.Background(), &mautrix.ReqCreateRoom{Preset: "private_chat"})
	if err != nil {
		t.Fatal(err)
	}

	w := wsConnect(t, srv, alice.AccessToken, wsOpts{})
	w.next(10 * time.Second)
	bw := wsConnect(t, srv, bob.AccessToken, wsOpts{})
	bw.next(10 * time.Second)

	if r := w.mustCall("ping", nil); string(r) != "{}" {
		t.Fatalf("ping: %s", r)
	}

	// send: the event reaches bob's stream, and a retry with the same
	// txn_id is the same event (the endpoint's idempotency).
	content := map[string]any{"msgtype": "m.text", "body": "over the socket"}
	var sent struct {
		EventID string `json:"event_id"`
	}
	r := w.mustCall("send", map[string]any{"room_id": room, "content": content, "txn_id": "t1"})
	if json.Unmarshal(r, &sent) != nil || sent.EventID == "" {
		t.Fatalf("send: %s", r)
	}
	bm := bw.nextSync(5*time.Second, func(m wsMsg) bool { return m.hasEvent(room, sent.EventID) })
	for _, ev := range bm.timeline(room) {
		if ev.EventID == sent.EventID && (ev.Type != "m.room.message" || ev.body() != "over the socket" || ev.Sender != alice.UserID.String()) {
			t.Fatalf("sent event as bob sees it: %+v", ev)
		}
	}
	r = w.mustCall("send", map[string]any{"room_id": room, "content": content, "txn_id": "t1"})
	var again struct {
		EventID string `json:"event_id"`
	}
	if json.Unmarshal(r, &again) != nil || again.EventID != sent.EventID {
		t.Fatalf("retried send: %s, want event %s", r, sent.EventID)
	}
	// Another type, and no txn_id.
	r = w.mustCall("send", map[string]any{"room_id": room, "type": "org.example.custom", "content": map[string]any{"x": 1}})
	if !bytes.Contains(r, []byte("event_id")) {
		t.Fatalf("send custom: %s", r)
	}

	// state
	r = w.mustCall("state", map[string]any{"room_id": room, "type": "m.room.topic", "state_key": "", "content": map[string]any{"topic": "sockets"}})
	var st struct {
		EventID string `json:"event_id"`
	}
	if json.Unmarshal(r, &st) != nil || st.EventID == "" {
		t.Fatalf("state: %s", r)
	}
	var topic event.TopicEventContent
	if err := bob.StateEvent(context.Background(), room, event.StateTopic, "", &topic); err != nil || topic.Topic != "sockets" {
		t.Fatalf("topic after state request: %+v %v", topic, err)
	}
	// state with a state key
	w.mustCall("state", map[string]any{"room_id": room, "type": "org.example.state", "state_key": "k", "content": map[string]any{"v": 1}})

	// read_markers and typing
	if r := w.mustCall("read_markers", map[string]any{"room_id": room, "m.fully_read": sent.EventID, "m.read": sent.EventID}); string(r) != "{}" {
		t.Fatalf("read_markers: %s", r)
	}
	if r := w.mustCall("typing", map[string]any{"room_id": room, "typing": true, "timeout": 30000}); string(r) != "{}" {
		t.Fatalf("typing: %s", r)
	}

	// Errors: the endpoint's own (not joined, bad event), and the stream's.
	wantCallError(t, w, "send", map[string]any{"room_id": private.RoomID, "content": content}, "M_FORBIDDEN")
	wantCallError(t, w, "send", map[string]any{"content": content}, "M_MISSING_PARAM")
	wantCallError(t, w, "send", map[string]any{"room_id": 5}, "M_BAD_JSON")
	wantCallError(t, w, "state", map[string]any{"room_id": room}, "M_MISSING_PARAM")
	wantCallError(t, w, "typing", map[string]any{"room_id": room}, "M_MISSING_PARAM")
	wantCallError(t, w, "read_markers", map[string]any{}, "M_MISSING_PARAM")
	wantCallError(t, w, "teleport", map[string]any{}, "M_UNRECOGNIZED")
	wantCallError(t, w, "ack", map[string]any{"next_batch": "nonsense"}, "M_INVALID_PARAM")

	// Not JSON, not an object: answered with id null.
	for _, tc := range []struct{ msg, errcode string }{
		{`{"id": 1, "method": "ping"`, "M_NOT_JSON"},
		{`{"id": 1, "method": "send", "params": {"room_id": "!r:x", "content": {"body": "\ud800"}}}`, "M_NOT_JSON"},
		{`{"id": 1, "method": "ping", "params": {"n": ` + strings.Repeat("[", 120) + strings.Repeat("]", 120) + `}}`, "M_NOT_JSON"},
		{`[1, 2]`, "M_BAD_JSON"},
		{`{"id": 7, "method": 3}`, "M_BAD_JSON"},
		{`{"id": 8}`, "M_MISSING_PARAM"},
	} {
		w.write([]byte(tc.msg))
		var m wsMsg
		for m = w.next(5 * time.Second); m.NextBatch != nil; m = w.next(5 * time.Second) {
		}
		if m.Error == nil || m.Error.ErrCode != tc.errcode {
			t.Fatalf("%s: %s, want %s", tc.msg, m.raw, tc.errcode)
		}
		wantID := "null"
		if strings.Contains(tc.msg, `"id": 7`) {
			wantID = "7"
		} else if strings.Contains(tc.msg, `"id": 8`) {
			wantID = "8"
		}
		if string(m.ID) != wantID {
			t.Fatalf("%s: answered with id %s, want %s", tc.msg, m.ID, wantID)
		}
	}

	// Answers keep the order of the requests.
	var batch bytes.Buffer
	for i := range 20 {
		batch.Reset()
		fmt.Fprintf(&batch, `{"id": %d, "method": "ping"}`, i)
		w.write(batch.Bytes())
	}
	for i := 0; i < 20; {
		m := w.next(5 * time.Second)
		if m.NextBatch != nil {
			continue
		}
		if string(m.ID) != fmt.Sprint(i) {
			t.Fatalf("answer %s, want id %d", m.raw, i)
		}
		i++
	}
}

// putJSON makes an authenticated PUT and fails the test on anything but 200.
func putJSON(t testing.TB, srv *testserver.Server, path, token string, body any) {
	t.Helper()
	raw, _ := json.Marshal(body)
	req, _ := http.NewRequest(http.MethodPut, srv.URL+path, bytes.NewReader(raw))
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("PUT %s: %d %s", path, resp.StatusCode, b)
	}
}

// httpToDevice makes one /sync over HTTP and returns its to-device events.
func httpToDevice(t testing.TB, c *mautrix.Client, since string) []wsEvent {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, c.HomeserverURL.String()+"/_matrix/client/v3/sync?timeout=0&since="+url.QueryEscape(since), nil)
	req.Header.Set("Authorization", "Bearer "+c.AccessToken)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 {
		t.Fatalf("/sync: %d %s", resp.StatusCode, b)
	}
	return parseWSMsg(t, b).ToDeviceEvents
}

func TestStreamAckReleasesToDevice(t *testing.T) {
	t.Parallel()
	srv := testserver.Start(t)
	alice := srv.Register("alice", "correct horse")
	bob := srv.Register("bob", "correct horse")
	room := wsRoom(t, alice, bob)

	toBob := func(txn string, n int) {
		putJSON(t, srv, "/_matrix/client/v3/sendToDevice/org.example.test/"+txn, alice.AccessToken, map[string]any{
			"messages": map[string]any{bob.UserID.String(): map[string]any{bob.DeviceID.String(): map[string]any{"n": n}}},
		})
	}

	w := wsConnect(t, srv, bob.AccessToken, wsOpts{})
	nb0 := *w.next(10 * time.Second).NextBatch

	toBob("t1", 1)
	m1 := w.nextSync(5*time.Second, func(m wsMsg) bool { return len(m.ToDeviceEvents) > 0 })
	if len(m1.ToDeviceEvents) != 1 || m1.ToDeviceEvents[0].body() != "1" || m1.ToDeviceEvents[0].Sender != alice.UserID.String() {
		t.Fatalf("to-device message: %s", m1.raw)
	}
	nb1 := *m1.NextBatch

	// Until bob acks it, the stream waits: a room message does not come.
	sent := wsSendText(t, alice, room, "after the to-device message")
	w.quiet(500 * time.Millisecond)
	// Not acknowledged, the message is still there for a sync from before it.
	if evs := httpToDevice(t, bob, nb0); len(evs) != 1 {
		t.Fatalf("before the ack, a /sync from before the message has %d to-device events, want 1", len(evs))
	}

	// Acks of a token from the future, or without one, are refused; an
	// older token is a harmless no-op.
	wantCallError(t, w, "ack", map[string]any{"next_batch": "s999999_999999_999999_999999_999999_999999"}, "M_INVALID_PARAM")
	wantCallError(t, w, "ack", map[string]any{}, "M_MISSING_PARAM")
	w.mustCall("ack", map[string]any{"next_batch": nb0})
	w.quiet(300 * time.Millisecond)

	// The ack releases the stream, and the next message starts from the
	// acked token: the room message comes, the to-device one is gone.
	answer, syncs := w.call("ack", map[string]any{"next_batch": nb1})
	if answer.Error != nil || string(answer.Result) != "{}" || len(syncs) != 0 {
		t.Fatalf("ack: %s (and %d sync messages first)", answer.raw, len(syncs))
	}
	m2 := w.nextSync(5*time.Second, func(m wsMsg) bool { return m.hasEvent(room, sent) })
	if len(m2.ToDeviceEvents) != 0 {
		t.Fatalf("the to-device message came again after its ack: %s", m2.raw)
	}
	if evs := httpToDevice(t, bob, nb0); len(evs) != 0 {
		t.Fatalf("after the ack, a /sync from before the message still has %d to-device events", len(evs))
	}

	// Not acknowledged before the stream ends, a message is sent again to
	// whoever syncs from before it.
	nb2 := *m2.NextBatch
	toBob("t2", 2)
	m3 := w.nextSync(5*time.Second, func(m wsMsg) bool { return len(m.ToDeviceEvents) > 0 })
	if m3.ToDeviceEvents[0].body() != "2" {
		t.Fatalf("second to-device message: %s", m3.raw)
	}
	w.c.Close(websocket.StatusNormalClosure, "")
	w = wsConnect(t, srv, bob.AccessToken, wsOpts{query: url.Values{"since": {nb2}}})
	again := w.next(10 * time.Second)
	if len(again.ToDeviceEvents) != 1 || again.ToDeviceEvents[0].body() != "2" {
		t.Fatalf("reconnecting from before the unacknowledged message: %s", again.raw)
	}
}

func TestStreamMessageTooBig(t *testing.T) {
	t.Parallel()
	srv := testserver.Start(t)
	alice := srv.Register("alice", "correct horse")
	w := wsConnect(t, srv, alice.AccessToken, wsOpts{})
	w.next(10 * time.Second)
	big := `{"id": 1, "method": "ping", "params": {"pad": "` + strings.Repeat("x", 5<<20) + `"}}`
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_ = w.c.Write(ctx, websocket.MessageText, []byte(big)) // may fail half way: the server hangs up
	err := w.closed(10 * time.Second)
	if got := websocket.CloseStatus(err); got != websocket.StatusMessageTooBig {
		t.Fatalf("closed with %v (%v), want 1009", got, err)
	}
}

func TestStreamShutdownClosesPromptly(t *testing.T) {
	t.Parallel()
	srv := testserver.Start(t)
	alice := srv.Register("alice", "correct horse")
	var ws []*wsClient
	for range 3 {
		w := wsConnect(t, srv, alice.AccessToken, wsOpts{})
		w.next(10 * time.Second)
		ws = append(ws, w)
	}
	start := time.Now()
	stopped := make(chan struct{})
	go func() { srv.Stop(); close(stopped) }()
	for _, w := range ws {
		err := w.closed(5 * time.Second)
		if got := websocket.CloseStatus(err); got != websocket.StatusGoingAway {
			t.Fatalf("closed with %v (%v), want 1001 going away", got, err)
		}
	}
	select {
	case <-stopped:
	case <-time.After(5 * time.Second):
		t.Fatal("shutdown still waiting 5 s later")
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Fatalf("shutdown with open streams took %v", d)
	}
}

func TestStreamTokenRevoked(t *testing.T) {
	srv := testserver.Start(t, streamLimits(func(l *config.SyncStream) { l.PingInterval = config.Duration(100 * time.Millisecond) }))
	alice := srv.Register("alice", "correct horse")
	w := wsConnect(t, srv, alice.AccessToken, wsOpts{})
	w.next(10 * time.Second)
	if _, err := alice.Logout(context.Background()); err != nil {
		t.Fatal(err)
	}
	err := w.closed(5 * time.Second)
	var ce websocket.CloseError
	if !errors.As(err, &ce) || ce.Code != 4401 || ce.Reason != "M_UNKNOWN_TOKEN" {
		t.Fatalf("closed with %v, want 4401 M_UNKNOWN_TOKEN", err)
	}
}

// streamLimits sets the server's sync_stream limits, and logs at info so
// that closeReasons sees why streams close.
func streamLimits(f func(*config.SyncStream)) testserver.Option {
	return func(c *config.Config) {
		f(&c.SyncStream)
		c.Logging.Level = "info"
	}
}

// closeReasons collects why the server closed its streams ("code reason"),
// from the entries its log gets.
func closeReasons(srv *testserver.Server) chan string {
	reasons := make(chan string, 100)
	srv.Log.AddHook(closeHook(reasons))
	return reasons
}

type closeHook chan string

func (closeHook) Levels() []logrus.Level { return logrus.AllLevels }

func (h closeHook) Fire(e *logrus.Entry) error {
	if e.Message == clientapi.StreamClosedMessage {
		select {
		case h <- fmt.Sprintf("%v %v", e.Data["code"], e.Data["reason"]):
		default:
		}
	}
	return nil
}

func waitReason(t *testing.T, reasons chan string, prefix string, timeout time.Duration) {
	t.Helper()
	deadline := time.After(timeout)
	for {
		select {
		case r := <-reasons:
			if strings.HasPrefix(r, prefix) {
				return
			}
			t.Logf("stream closed: %s", r)
		case <-deadline:
			t.Fatalf("no stream closed with %q within %v", prefix, timeout)
		}
	}
}

// readToEnd reads a stream that a test stopped reading, until it ends,
// and returns the room events it got.
func readToEnd(t *testing.T, c *websocket.Conn, room id.RoomID) (events int, err error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	for {
		_, data, err := c.Read(ctx)
		if err != nil {
			if ctx.Err() != nil {
				t.Fatalf("still connected 20 s later, %d events read", events)
			}
			return events, err
		}
		events += len(parseWSMsg(t, data).timeline(room))
	}
}

func TestStreamSlowReaderDisconnected(t *testing.T) {
	srv := testserver.Start(t, streamLimits(func(l *config.SyncStream) {
		l.QueueLength, l.WriteTimeout, l.MinWriteRate = 2, config.Duration(300*time.Millisecond), 1<<40
		l.PingInterval = config.Duration(time.Hour) // this test is about writes, not pongs
	}))
	reasons := closeReasons(srv)
	alice := srv.Register("alice", "correct horse")
	bob := srv.Register("bob", "correct horse")
	room := wsRoom(t, alice, bob)

	// Bob reads the first message and then nothing. (A timeline limit
	// above the number of events, so that the server cannot shrink what
	// it has to send by skipping events.)
	c, _, err := wsDialRaw(srv, bob.AccessToken, wsOpts{
		httpClient: smallBufferClient(),
		query:      url.Values{"filter": {`{"room":{"timeline":{"limit":500}}}`}},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer c.CloseNow()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	if _, _, err := c.Read(ctx); err != nil {
		t.Fatal(err)
	}
	cancel()

	// 120 events of 50 kB: 6 MB, more than the kernel buffers between
	// the server and a client that does not read can hold.
	const total = 120
	pad := strings.Repeat("slow reader ", 4200)
	var senders sync.WaitGroup
	for g := range 4 {
		senders.Go(func() {
			for i := g; i < total; i += 4 {
				if _, err := alice.SendText(context.Background(), room, fmt.Sprintf("%d %s", i, pad)); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	senders.Wait()
	waitReason(t, reasons, "1008 slow reader", 30*time.Second)

	// The server keeps working for everyone else.
	w := wsConnect(t, srv, alice.AccessToken, wsOpts{})
	w.next(10 * time.Second)

	// Bob, reading now, gets what was buffered, then the end.
	events, err := readToEnd(t, c, room)
	t.Logf("disconnected after %d of %d events: %v", events, total, err)
	if events >= total {
		t.Fatalf("all %d events arrived: the slow reader was not disconnected", events)
	}
}

func TestStreamKeepaliveDisconnectsNonReader(t *testing.T) {
	srv := testserver.Start(t, streamLimits(func(l *config.SyncStream) {
		l.PingInterval, l.PingTimeout = config.Duration(100*time.Millisecond), config.Duration(200*time.Millisecond)
	}))
	reasons := closeReasons(srv)
	alice := srv.Register("alice", "correct horse")

	// A client that reads answers pings (the library does it as it
	// reads): it stays.
	w := wsConnect(t, srv, alice.AccessToken, wsOpts{})
	w.next(10 * time.Second)

	// One that does not read does not answer them: it goes.
	c, _, err := wsDialRaw(srv, alice.AccessToken, wsOpts{})
	if err != nil {
		t.Fatal(err)
	}
	defer c.CloseNow()
	waitReason(t, reasons, "1008 keepalive", 10*time.Second)
	_, err = readToEnd(t, c, "")
	var ce websocket.CloseError
	if !errors.As(err, &ce) || ce.Code != websocket.StatusPolicyViolation {
		t.Fatalf("closed with %v, want 1008", err)
	}
	w.mustCall("ping", nil)
}

func TestStreamNoGoroutineLeak(t *testing.T) {
	srv := testserver.Start(t)
	alice := srv.Register("alice", "correct horse")
	room := wsRoom(t, alice)
	settle := func(limit int) int {
		n := runtime.NumGoroutine()
		for deadline := time.Now().Add(5 * time.Second); n > limit && time.Now().Before(deadline); n = runtime.NumGoroutine() {
			time.Sleep(20 * time.Millisecond)
		}
		return n
	}
	cycle := func() {
		w := wsConnect(t, srv, alice.AccessToken, wsOpts{})
		w.next(10 * time.Second)
		w.mustCall("ping", nil)
		w.mustCall("send", map[string]any{"room_id": room, "content": map[string]any{"msgtype": "m.text", "body": "x"}})
		w.c.Close(websocket.StatusNormalClosure, "bye")
		w.closed(5 * time.Second)
	}
	cycle() // warm up: connections and goroutines the server keeps anyway
	time.Sleep(200 * time.Millisecond)
	before := runtime.NumGoroutine()
	for range 5 {
		cycle()
	}
	if after := settle(before); after > before {
		var b strings.Builder
		pprof.Lookup("goroutine").WriteTo(&b, 1)
		t.Fatalf("%d goroutines before, %d after 5 streams came and went:\n%s", before, after, b.String())
	}
}
