package clientapi

import (
	"net/http"
	"testing"

	"github.com/tessera-hs/tessera/internal/httpx"
	"github.com/tessera-hs/tessera/syncapi"
)

func TestSyncIsEmpty(t *testing.T) {
	for _, tc := range []struct {
		json  string
		empty bool
	}{
		{`{"next_batch":"s1_0","rooms":{"join":{},"invite":{},"leave":{},"knock":{}},"account_data":{"events":[]},` +
			`"presence":{"events":[]},"to_device":{"events":[]},"device_lists":{"changed":[],"left":[]},` +
			`"device_one_time_keys_count":{"signed_curve25519":5},"device_unused_fallback_key_types":["signed_curve25519"]}`, true},
		{`{"next_batch":"s1_0"}`, true},
		{`{"next_batch":"s1_0","rooms":{"join":{"!r:x":{"timeline":{"events":[],"limited":false}}}}}`, false},
		{`{"next_batch":"s1_0","to_device":{"events":[{"type":"m.x"}]}}`, false},
		{`{"next_batch":"s1_0","device_lists":{"changed":["@a:x"],"left":[]}}`, false},
		// A section this code does not know of yet counts as news.
		{`{"next_batch":"s1_0","org.example.new":{"events":[1]}}`, false},
		{`{"next_batch":"s1_0","org.example.flag":true}`, false},
		{`{"next_batch":"s1_0","org.example.new":{"events":[],"more":{}}}`, true},
	} {
		if got := syncIsEmpty(nil, []byte(tc.json)); got != tc.empty {
			t.Errorf("syncIsEmpty(%s) = %v, want %v", tc.json, got, tc.empty)
		}
	}
	// With the typed response, news in a known section is seen without
	// decoding.
	r := &syncapi.Response{NextBatch: "s1_0"}
	r.ToDevice.Events = []any{map[string]any{"type": "m.x"}}
	if syncIsEmpty(r, []byte(`{"next_batch":"s1_0"}`)) {
		t.Error("a typed response with to-device events reads as empty")
	}
}

func TestHeaderHasToken(t *testing.T) {
	h := http.Header{}
	h.Add("Sec-WebSocket-Protocol", "chat, M.JSON")
	h.Add("Connection", "keep-alive, Upgrade")
	if !httpx.HeaderHasToken(h, "Sec-WebSocket-Protocol", "m.json") || !httpx.HeaderHasToken(h, "Connection", "upgrade") {
		t.Error("tokens not found")
	}
	if httpx.HeaderHasToken(h, "Sec-WebSocket-Protocol", "m.cbor") || httpx.HeaderHasToken(h, "Upgrade", "websocket") {
		t.Error("token found that is not there")
	}
}
