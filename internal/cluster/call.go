package cluster

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/tessera-hs/tessera/internal/mxerr"
)

// InternalPrefix is the path of the calls instances make to each other
// (Call): only requests carrying the instance secret reach it.
const InternalPrefix = "/_tessera/internal/"

// callTimeout bounds one internal call: the owner runs one room write.
const callTimeout = 30 * time.Second

// Call asks instance to run op (served under InternalPrefix+op) with req
// as its JSON body, for the writes that do not come from a client request
// the forwarder could send on as is (a profile change's member events, a
// deactivated user's leaves). A non-2xx answer is an error carrying its
// body.
func (m *Map) Call(ctx context.Context, instance, op string, req any) error {
	return m.CallJSON(ctx, instance, op, req, nil)
}

// CallJSON is Call for an op that answers: its JSON body is decoded into
// out (unless nil).
func (m *Map) CallJSON(ctx context.Context, instance, op string, req, out any) error {
	u, ok := m.urls[instance]
	if !ok {
		return fmt.Errorf("call %s on %s: no such instance", op, instance)
	}
	body, err := json.Marshal(req)
	if err != nil {
		return fmt.Errorf("call %s on %s: %w", op, instance, err)
	}
	ctx, cancel := context.WithTimeout(ctx, callTimeout)
	defer cancel()
	hr, err := http.NewRequestWithContext(ctx, http.MethodPost, u.JoinPath(InternalPrefix+op).String(), bytes.NewReader(body))
	if err != nil {
		return fmt.Errorf("call %s on %s: %w", op, instance, err)
	}
	hr.Header.Set("Content-Type", "application/json")
	hr.Header.Set(SecretHeader, m.secret)
	resp, err := m.client.Do(hr)
	if err != nil {
		return fmt.Errorf("call %s on %s: %w", op, instance, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		msg, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		// The owner's answer to a request it refused (4xx) is the
		// caller's: the same error as if it had run here.
		var me struct {
			Code    string `json:"errcode"`
			Message string `json:"error"`
		}
		if resp.StatusCode/100 == 4 && json.Unmarshal(msg, &me) == nil && me.Code != "" {
			return &mxerr.Error{Status: resp.StatusCode, Code: me.Code, Message: me.Message}
		}
		return fmt.Errorf("call %s on %s: %s: %s", op, instance, resp.Status, bytes.TrimSpace(msg))
	}
	if out == nil {
		return nil
	}
	if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
		return fmt.Errorf("call %s on %s: answer: %w", op, instance, err)
	}
	return nil
}
