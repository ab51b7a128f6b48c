package cluster

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"time"
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
	msg, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("call %s on %s: %s: %s", op, instance, resp.Status, bytes.TrimSpace(msg))
	}
	return nil
}
