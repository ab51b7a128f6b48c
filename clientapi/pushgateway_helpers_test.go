package clientapi_test

// A test push gateway: a real HTTP server that checks every request
// against the push gateway API's OpenAPI schema (testdata/push-gateway,
// a copy of the spec's push_notifier.yaml), answers as the test says
// (200, 500, a delay past the server's timeout, rejected pushkeys), and
// records what arrived.

import (
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/http/httptest"
	"os"
	"slices"
	"sync"
	"testing"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/tessera-hs/tessera/internal/config"
	"github.com/tessera-hs/tessera/internal/testserver"
)

// pgRequest is one request that reached the gateway.
type pgRequest struct {
	N      map[string]any // the notification object
	Status int            // what the gateway answered
}

func (r pgRequest) eventID() string { s, _ := r.N["event_id"].(string); return s }

// device is the notification's only device.
func (r pgRequest) device() map[string]any {
	ds, _ := r.N["devices"].([]any)
	if len(ds) != 1 {
		return nil
	}
	d, _ := ds[0].(map[string]any)
	return d
}

func (r pgRequest) pushkey() string { s, _ := r.device()["pushkey"].(string); return s }

// unread is counts.unread, 0 when omitted ("Counts whose value is zero
// should be omitted").
func (r pgRequest) unread() int {
	c, _ := r.N["counts"].(map[string]any)
	f, _ := c["unread"].(float64)
	return int(f)
}

// missedCalls is counts.missed_calls, 0 when omitted.
func (r pgRequest) missedCalls() int {
	c, _ := r.N["counts"].(map[string]any)
	f, _ := c["missed_calls"].(float64)
	return int(f)
}

// pgAnswer is how the gateway answers a request.
type pgAnswer struct {
	Status   int
	Rejected []string
	Delay    time.Duration
}

type pushGateway struct {
	t      testing.TB
	srv    *httptest.Server
	schema map[string]any
	URL    string

	mu      sync.Mutex
	reqs    []pgRequest
	answer  func(n map[string]any) pgAnswer
	arrived chan struct{}
}

func newPushGateway(t testing.TB) *pushGateway {
	t.Helper()
	g := &pushGateway{t: t, schema: pgSchema(t), arrived: make(chan struct{}, 1)}
	g.srv = httptest.NewServer(http.HandlerFunc(g.serve))
	t.Cleanup(g.srv.Close)
	g.URL = g.srv.URL + "/_matrix/push/v1/notify"
	return g
}

// pgSchema is the request body schema of POST /notify.
func pgSchema(t testing.TB) map[string]any {
	t.Helper()
	raw, err := os.ReadFile("testdata/push-gateway/push_notifier.yaml")
	if err != nil {
		t.Fatalf("push gateway API: %v", err)
	}
	var doc map[string]any
	if err := yaml.Unmarshal(raw, &doc); err != nil {
		t.Fatalf("push gateway API: %v", err)
	}
	schema, ok := kxPath(doc, "paths", "/notify", "post", "requestBody", "content", "application/json", "schema").(map[string]any)
	if !ok {
		t.Fatal("push gateway API: no request schema")
	}
	return schema
}

// pgValidate checks v against an OpenAPI schema: types, required
// properties, enums and array items, as far as push_notifier.yaml uses
// them.
func pgValidate(schema map[string]any, v any, path string) []string {
	var errs []string
	bad := func(format string, a ...any) { errs = append(errs, path+": "+fmt.Sprintf(format, a...)) }
	switch schema["type"] {
	case "object":
		m, ok := v.(map[string]any)
		if !ok {
			bad("want an object, got %T", v)
			return errs
		}
		req, _ := schema["required"].([]any)
		for _, r := range req {
			if _, ok := m[r.(string)]; !ok {
				bad("missing required %q", r)
			}
		}
		props, _ := schema["properties"].(map[string]any)
		for name, sub := range props {
			if val, ok := m[name]; ok {
				errs = append(errs, pgValidate(sub.(map[string]any), val, path+"."+name)...)
			}
		}
	case "array":
		arr, ok := v.([]any)
		if !ok {
			bad("want an array, got %T", v)
			return errs
		}
		if items, ok := schema["items"].(map[string]any); ok {
			for i, it := range arr {
				errs = append(errs, pgValidate(items, it, fmt.Sprintf("%s[%d]", path, i))...)
			}
		}
	case "string":
		if _, ok := v.(string); !ok {
			bad("want a string, got %T", v)
		}
	case "integer":
		if f, ok := v.(float64); !ok || f != math.Trunc(f) {
			bad("want an integer, got %v", v)
		}
	case "boolean":
		if _, ok := v.(bool); !ok {
			bad("want a boolean, got %T", v)
		}
	}
	if enum, ok := schema["enum"].([]any); ok && !slices.Contains(enum, v) {
		bad("%v is not one of %v", v, enum)
	}
	return errs
}

func (g *pushGateway) serve(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost || r.URL.Path != "/_matrix/push/v1/notify" {
		g.t.Errorf("push gateway: %s %s", r.Method, r.URL.Path)
		http.NotFound(w, r)
		return
	}
	if ct := r.Header.Get("Content-Type"); ct != "application/json" {
		g.t.Errorf("push gateway: Content-Type %q", ct)
	}
	raw, _ := io.ReadAll(r.Body)
	var body map[string]any
	if err := json.Unmarshal(raw, &body); err != nil {
		g.t.Errorf("push gateway: body is not JSON: %s", raw)
		http.Error(w, "bad json", http.StatusBadRequest)
		return
	}
	for _, e := range pgValidate(g.schema, body, "body") {
		g.t.Errorf("push gateway: request does not match the schema: %s; body %s", e, raw)
	}
	n, _ := body["notification"].(map[string]any)
	a := pgAnswer{Status: http.StatusOK}
	g.mu.Lock()
	if g.answer != nil {
		a = g.answer(n)
	}
	g.mu.Unlock()
	if a.Delay > 0 {
		select {
		case <-time.After(a.Delay):
		case <-r.Context().Done():
		}
	}
	g.mu.Lock()
	g.reqs = append(g.reqs, pgRequest{N: n, Status: a.Status})
	g.mu.Unlock()
	select {
	case g.arrived <- struct{}{}:
	default:
	}
	if a.Status != http.StatusOK {
		http.Error(w, `{"errcode":"M_UNKNOWN"}`, a.Status)
		return
	}
	rejected := a.Rejected
	if rejected == nil {
		rejected = []string{}
	}
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(map[string]any{"rejected": rejected})
}

// setAnswer sets how the gateway answers from now on.
func (g *pushGateway) setAnswer(f func(n map[string]any) pgAnswer) {
	g.mu.Lock()
	g.answer = f
	g.mu.Unlock()
}

// requests returns what arrived so far.
func (g *pushGateway) requests() []pgRequest {
	g.mu.Lock()
	defer g.mu.Unlock()
	return slices.Clone(g.reqs)
}

// waitFor waits until cond holds for what arrived, and returns it.
func (g *pushGateway) waitFor(what string, cond func([]pgRequest) bool) []pgRequest {
	g.t.Helper()
	deadline := time.After(15 * time.Second)
	for {
		reqs := g.requests()
		if cond(reqs) {
			return reqs
		}
		select {
		case <-g.arrived:
		case <-time.After(50 * time.Millisecond):
		case <-deadline:
			g.t.Fatalf("push gateway: timed out waiting for %s; got %d requests: %v", what, len(reqs), reqs)
		}
	}
}

// delivered returns the requests with the event ID answered 200.
func delivered(reqs []pgRequest, eventID string) []pgRequest {
	var out []pgRequest
	for _, r := range reqs {
		if r.eventID() == eventID && r.Status == http.StatusOK {
			out = append(out, r)
		}
	}
	return out
}

// waitDelivered waits for an event to reach the gateway (answered 200),
// and returns that request.
func (g *pushGateway) waitDelivered(eventID, pushkey string) pgRequest {
	g.t.Helper()
	var got pgRequest
	g.waitFor("event "+eventID+" for "+pushkey, func(reqs []pgRequest) bool {
		for _, r := range delivered(reqs, eventID) {
			if r.pushkey() == pushkey {
				got = r
				return true
			}
		}
		return false
	})
	return got
}

// withPushGateways lets the server reach gateways on loopback and retries
// fast.
func withPushGateways(c *config.Config) {
	c.Push.IPRangeWhitelist = []string{"127.0.0.1/32"}
	c.Push.Timeout = config.Duration(time.Second)
	c.Push.InitialBackoff = config.Duration(50 * time.Millisecond)
	c.Push.MaxBackoff = config.Duration(200 * time.Millisecond)
}

// setHTTPPusher sets an HTTP pusher for s at gateway URL u with extra data.
func setHTTPPusher(t testing.TB, srv *testserver.Server, s session, pushkey, u string, data map[string]any) {
	t.Helper()
	d := map[string]any{"url": u}
	for k, v := range data {
		d[k] = v
	}
	post(t, srv, v3+"/pushers/set", s.AccessToken, map[string]any{
		"kind": "http", "app_id": "io.element.test", "pushkey": pushkey, "app_display_name": "Test",
		"device_display_name": "Phone", "lang": "en", "data": d,
	}).expect(t, http.StatusOK, "")
}

// pgSetup starts a server that reaches gateways on loopback (with opts
// on top), a gateway, alice with a pusher "phone" at it, and bob in a
// public room with her.
func pgSetup(t *testing.T, opts ...testserver.Option) (gw *pushGateway, srv *testserver.Server, alice, bob session, room string) {
	t.Helper()
	gw = newPushGateway(t)
	srv = testserver.Start(t, append([]testserver.Option{withPushGateways}, opts...)...)
	alice = registerUser(t, srv, "alice", psPassword)
	bob = registerUser(t, srv, "bob", psPassword)
	setHTTPPusher(t, srv, alice, "phone", gw.URL, nil)
	room = adCreateRoom(t, srv, bob, map[string]any{"preset": "public_chat"})
	adJoin(t, srv, alice, room)
	return gw, srv, alice, bob, room
}
