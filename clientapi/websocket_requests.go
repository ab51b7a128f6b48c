package clientapi

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"

	"github.com/coder/websocket"

	"github.com/tessera-hs/tessera/internal/httpx"
	"github.com/tessera-hs/tessera/internal/jsonx"
	"github.com/tessera-hs/tessera/internal/mxerr"
	"github.com/tessera-hs/tessera/users"
)

// The requests a client may send on the sync stream:
//
//	{"id": ..., "method": "...", "params": {...}}
//
// each answered, in order, with {"id": ..., "result": {...}} or
// {"id": ..., "error": {"errcode": ..., "error": ...}}. id is any JSON value
// and is given back as it came.

type streamRequest struct {
	ID     json.RawMessage `json:"id"`
	Method string          `json:"method"`
	Params json.RawMessage `json:"params"`
}

type streamResult struct {
	ID     json.RawMessage `json:"id"`
	Result json.RawMessage `json:"result"`
}

type streamError struct {
	ID    json.RawMessage `json:"id"`
	Error json.RawMessage `json:"error"`
}

var jsonNull = json.RawMessage("null")

// readLoop reads and answers the client's requests one after another, so
// their effects (two sends, say) happen in the order they were sent. It
// returns when the connection closes.
func (c *streamConn) readLoop() {
	for {
		// Not c.ctx: the library would drop the connection without a
		// close frame when it ends. close() ends the read instead.
		_, data, err := c.ws.Read(context.Background())
		if err != nil {
			if errors.Is(err, websocket.ErrMessageTooBig) {
				// The library has sent 1009 already.
				c.close(websocket.StatusMessageTooBig, "message too big")
			}
			return
		}
		if c.ctx.Err() != nil {
			return
		}
		c.handle(data)
	}
}

// handle answers one request.
func (c *streamConn) handle(data []byte) {
	var req streamRequest
	// As every request body: UTF-8, no lone surrogates, not too deep.
	// The params, a request body, sit two levels down.
	if err := jsonx.Validate(data, jsonx.MaxDepth+2); err != nil {
		c.answerError(jsonNull, mxerr.NotJSON("The message is not valid JSON: %v", err))
		return
	}
	trimmed := bytes.TrimSpace(data)
	if len(trimmed) == 0 || trimmed[0] != '{' {
		c.answerError(jsonNull, mxerr.BadJSON("The message must be a JSON object"))
		return
	}
	if err := json.Unmarshal(data, &req); err != nil {
		// The id, if it can be read, still comes back.
		var idOnly struct {
			ID json.RawMessage `json:"id"`
		}
		_ = json.Unmarshal(data, &idOnly)
		c.answerError(orNull(idOnly.ID), mxerr.BadJSON("The message has the wrong shape: %v", err))
		return
	}
	id := orNull(req.ID)
	if req.Method == "" {
		c.answerError(id, mxerr.MissingParam("Missing method"))
		return
	}
	params := req.Params
	if len(params) == 0 || string(params) == "null" {
		params = json.RawMessage("{}")
	}
	result, err := c.call(req.Method, params)
	if err != nil {
		c.answerError(id, err)
		return
	}
	c.sendJSON(streamResult{ID: id, Result: result})
}

func orNull(id json.RawMessage) json.RawMessage {
	if len(id) == 0 {
		return jsonNull
	}
	return id
}

// answerError sends err as the spec's error body. An error that is not a
// Matrix error is internal: logged, and M_UNKNOWN to the client.
func (c *streamConn) answerError(id json.RawMessage, err error) {
	var raw rawMatrixError
	if errors.As(err, &raw) {
		c.sendJSON(streamError{ID: id, Error: json.RawMessage(raw)})
		return
	}
	var body map[string]any
	if me, ok := mxerr.As(err); ok {
		body = me.Body()
	} else {
		c.log.WithError(err).Error("sync stream: handling a request")
		body = mxerr.Unknown(http.StatusInternalServerError, "Internal server error").Body()
	}
	b, _ := json.Marshal(body)
	c.sendJSON(streamError{ID: id, Error: b})
}

var emptyResult = json.RawMessage("{}")

// call runs one method.
func (c *streamConn) call(method string, params json.RawMessage) (json.RawMessage, error) {
	switch method {
	case "ping":
		return emptyResult, nil
	case "ack":
		var p struct {
			NextBatch *string `json:"next_batch"`
		}
		if err := httpx.Unmarshal(params, &p); err != nil {
			return nil, err
		}
		if p.NextBatch == nil {
			return nil, mxerr.MissingParam("Missing next_batch")
		}
		if err := c.ack(*p.NextBatch); err != nil {
			return nil, err
		}
		return emptyResult, nil
	case "send":
		var p struct {
			RoomID  string          `json:"room_id"`
			Type    string          `json:"type"`
			Content json.RawMessage `json:"content"`
			TxnID   string          `json:"txn_id"`
		}
		if err := httpx.Unmarshal(params, &p); err != nil {
			return nil, err
		}
		if p.RoomID == "" {
			return nil, mxerr.MissingParam("Missing room_id")
		}
		if p.Type == "" {
			p.Type = "m.room.message"
		}
		if p.TxnID == "" {
			// Without a txn_id of the client's, a retry is a new event.
			p.TxnID = "ws." + rand.Text()
		}
		return c.dispatch(http.MethodPut, roomRequestPath(p.RoomID, "send", p.Type, p.TxnID), contentOrEmpty(p.Content))
	case "state":
		var p struct {
			RoomID   string          `json:"room_id"`
			Type     string          `json:"type"`
			StateKey string          `json:"state_key"`
			Content  json.RawMessage `json:"content"`
		}
		if err := httpx.Unmarshal(params, &p); err != nil {
			return nil, err
		}
		if p.RoomID == "" {
			return nil, mxerr.MissingParam("Missing room_id")
		}
		if p.Type == "" {
			return nil, mxerr.MissingParam("Missing type")
		}
		path := roomRequestPath(p.RoomID, "state", p.Type)
		if p.StateKey != "" {
			path = roomRequestPath(p.RoomID, "state", p.Type, p.StateKey)
		}
		return c.dispatch(http.MethodPut, path, contentOrEmpty(p.Content))
	case "typing":
		var p map[string]json.RawMessage
		if err := httpx.Unmarshal(params, &p); err != nil {
			return nil, err
		}
		roomID, err := roomIDParam(p)
		if err != nil {
			return nil, err
		}
		return c.dispatch(http.MethodPut, roomRequestPath(roomID, "typing", c.who.UserID), p)
	case "read_markers":
		var p map[string]json.RawMessage
		if err := httpx.Unmarshal(params, &p); err != nil {
			return nil, err
		}
		roomID, err := roomIDParam(p)
		if err != nil {
			return nil, err
		}
		return c.dispatch(http.MethodPost, roomRequestPath(roomID, "read_markers"), p)
	}
	return nil, mxerr.Unrecognized("Unknown method %q", method)
}

// roomIDParam takes room_id out of params (the rest is the request body).
func roomIDParam(p map[string]json.RawMessage) (string, error) {
	raw, ok := p["room_id"]
	if !ok {
		return "", mxerr.MissingParam("Missing room_id")
	}
	delete(p, "room_id")
	var roomID string
	if err := json.Unmarshal(raw, &roomID); err != nil || roomID == "" {
		return "", mxerr.BadJSON("room_id must be a non-empty string")
	}
	return roomID, nil
}

// contentOrEmpty is an event's content, {} when not given.
func contentOrEmpty(content json.RawMessage) json.RawMessage {
	if len(content) == 0 || string(content) == "null" {
		return emptyResult
	}
	return content
}

// roomRequestPath is /_matrix/client/v3/rooms/{roomId}/{segments...}, each
// segment escaped (the routes match on the escaped path).
func roomRequestPath(roomID string, segments ...string) string {
	p := "/_matrix/client/v3/rooms/" + url.PathEscape(roomID)
	for _, s := range segments {
		p += "/" + url.PathEscape(s)
	}
	return p
}

// dispatch makes a request to the client API's own routes with the
// stream's access token and returns the answer's body: the result of a 2xx,
// else the Matrix error. So a request over the stream has the endpoint's
// semantics exactly (validation, auth rules, txn IDs, rate limits), and an
// endpoint this server lacks answers 404 M_UNRECOGNIZED.
func (c *streamConn) dispatch(method, path string, body any) (json.RawMessage, error) {
	raw, err := json.Marshal(body)
	if err != nil {
		return nil, err
	}
	if c.assertion != (users.Assertion{}) {
		q := url.Values{}
		if c.assertion.UserID != "" {
			q.Set("user_id", c.assertion.UserID)
		}
		if c.assertion.DeviceID != "" {
			q.Set("device_id", c.assertion.DeviceID)
		}
		sep := "?"
		if strings.Contains(path, "?") {
			sep = "&"
		}
		path += sep + q.Encode()
	}
	r, err := http.NewRequestWithContext(c.ctx, method, path, bytes.NewReader(raw))
	if err != nil {
		return nil, mxerr.InvalidParam("Invalid request: %v", err)
	}
	r.RemoteAddr = c.remoteAddr
	r.Header.Set("Authorization", "Bearer "+c.token)
	r.Header.Set("Content-Type", "application/json")
	for _, h := range []string{"User-Agent", "X-Forwarded-For"} {
		if v := c.header.Get(h); v != "" {
			r.Header.Set(h, v)
		}
	}
	rec := httptest.NewRecorder()
	c.hub.dispatch.ServeHTTP(rec, r)
	out := bytes.TrimSpace(rec.Body.Bytes())
	if rec.Code >= 200 && rec.Code < 300 {
		if len(out) == 0 || !json.Valid(out) {
			return emptyResult, nil
		}
		return out, nil
	}
	var me struct {
		ErrCode string `json:"errcode"`
	}
	if json.Unmarshal(out, &me) == nil && me.ErrCode != "" {
		return nil, rawMatrixError(out)
	}
	return nil, mxerr.Unknown(rec.Code, "Request failed with HTTP %d", rec.Code)
}

// rawMatrixError is an error body from a dispatched request, passed on as
// it came (with retry_after_ms, soft_logout and the like).
type rawMatrixError json.RawMessage

func (e rawMatrixError) Error() string { return string(e) }
