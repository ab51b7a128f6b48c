package federation_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/fclient"
	"maunium.net/go/mautrix/id"
)

// TestHostilePDUs: PDUs with lone surrogate escapes or
// nesting over the limit are refused one by one in the transaction's
// results, never stored, and the good PDUs beside them are accepted.
func TestHostilePDUs(t *testing.T) {
	p := joinedPair(t)
	ctx := context.Background()
	bKey := signingKey(t, p.b)
	bob := p.bob.UserID.String()
	nested := func(n int) string { return strings.Repeat("[", n) + strings.Repeat("]", n) }
	build := func(content string) json.RawMessage {
		return p.buildAs(t, p.b, bKey, bob, "m.room.message", nil, json.RawMessage(content)).JSON()
	}
	// gomatrixserverlib's canonical JSON drops a lone surrogate escape, so
	// an event and a request with one hash and sign as they would without
	// it: the escapes are put into the signed request's body, as a hostile
	// or buggy server would send them, and every hash and signature holds.
	bad := map[string]json.RawMessage{
		"lone surrogate":     build(`{"msgtype":"m.text","body":"hi!"}`),
		"lone low surrogate": build(`{"msgtype":"m.text","body":"lo!"}`),
		"content 101 deep":   build(`{"msgtype":"m.text","body":"deep","n":` + nested(100) + `}`),
		"content 3000 deep":  build(`{"msgtype":"m.text","body":"deeper","n":` + nested(2999) + `}`),
	}
	good := build(`{"msgtype":"m.text","body":"good \ud83d\udc08","n":` + nested(99) + `}`)
	pdus := []any{json.RawMessage(good)}
	for _, raw := range bad {
		pdus = append(pdus, json.RawMessage(raw))
	}
	bKeyID, bPriv := bKey.ID, bKey.PrivateKey
	req := signedRequest(t, p.b.ServerName(), p.a.ServerName(), bKeyID, bPriv, http.MethodPut,
		"/_matrix/federation/v1/send/hostile", map[string]any{"origin": p.b.ServerName(), "origin_server_ts": 1, "pdus": pdus})
	body, err := io.ReadAll(req.Body)
	if err != nil {
		t.Fatal(err)
	}
	body = bytes.Replace(body, []byte(`"hi!"`), []byte(`"hi!\ud800"`), 1)
	body = bytes.Replace(body, []byte(`"lo!"`), []byte(`"lo!\udc00"`), 1)
	req.Body, req.ContentLength = io.NopCloser(bytes.NewReader(body)), int64(len(body))
	r := do(t, req)
	if r.status != http.StatusOK {
		t.Fatalf("transaction: %d %s", r.status, r.raw)
	}
	var res fclient.RespSend
	if err := json.Unmarshal(r.raw, &res); err != nil {
		t.Fatal(err)
	}
	goodID := eventIDOfJSON(t, good)
	if r, ok := res.PDUs[goodID]; !ok || r.Error != "" {
		t.Fatalf("the good event got %+v", res.PDUs)
	}
	for name, raw := range bad {
		evID := eventIDOfJSON(t, raw)
		if r, ok := res.PDUs[evID]; !ok || r.Error == "" {
			t.Errorf("the %s event was not refused: %+v", name, res.PDUs)
		}
		if _, err := p.alice.GetEvent(ctx, p.roomID, id.EventID(evID)); err == nil {
			t.Errorf("the %s event can be read in the room", name)
		}
	}
	waitForMessage(t, p.alice, p.roomID, "good \U0001F408")

	// Raw invalid UTF-8 is not JSON (RFC 8259 section 8.1): the whole
	// transaction is refused, as the spec, gomatrixserverlib's signature
	// check and Synapse all do; the sender's queue sets it aside.
	_, err = p.sendTxn(t, build("{\"msgtype\":\"m.text\",\"body\":\"caf\xe9\"}"))
	if status, code := fedError(t, err); status != http.StatusBadRequest || code != "M_NOT_JSON" {
		t.Fatalf("a transaction with invalid UTF-8: %d %s, want 400 M_NOT_JSON", status, code)
	}
	// Everyone's /sync still works.
	if _, err := p.alice.SyncRequest(ctx, 0, "", "", true, ""); err != nil {
		t.Fatalf("alice's sync: %v", err)
	}
}

// eventIDOfJSON is the event ID of a room version 12 event.
func eventIDOfJSON(t *testing.T, raw json.RawMessage) string {
	t.Helper()
	ev, err := gomatrixserverlib.MustGetRoomVersion("12").NewEventFromTrustedJSON(raw, false)
	if err != nil {
		t.Fatalf("parse own event: %v", err)
	}
	return ev.EventID()
}

// TestOversizedFederatedEventIs413: an event over 65,536 bytes in a
// request of its own (send_leave here) is 413 M_TOO_LARGE.
func TestOversizedFederatedEventIs413(t *testing.T) {
	p := joinedPair(t)
	bKey := signingKey(t, p.b)
	bob := p.bob.UserID.String()
	leave := p.buildAs(t, p.b, bKey, bob, "m.room.member", &bob, map[string]string{"membership": "leave"})
	// gomatrixserverlib will not build it that big: grown after signing,
	// which the size check comes before.
	var ev map[string]any
	if err := json.Unmarshal(leave.JSON(), &ev); err != nil {
		t.Fatal(err)
	}
	ev["content"] = map[string]string{"membership": "leave", "reason": strings.Repeat("r", 70000)}
	// With its content hash right, or the event would be redacted (to a
	// small one) instead of refused. The signatures, over the redacted
	// form, still hold.
	delete(ev, "hashes")
	unhashed := map[string]any{}
	for k, v := range ev {
		if k != "signatures" && k != "unsigned" {
			unhashed[k] = v
		}
	}
	raw, _ := json.Marshal(unhashed)
	canonical, err := gomatrixserverlib.CanonicalJSON(raw)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(canonical)
	ev["hashes"] = map[string]string{"sha256": base64.RawStdEncoding.EncodeToString(sum[:])}
	uri := "/_matrix/federation/v2/send_leave/" + url.PathEscape(p.roomID.String()) + "/" + url.PathEscape(leave.EventID())
	r := do(t, signedRequest(t, p.b.ServerName(), p.a.ServerName(), bKey.ID, bKey.PrivateKey, http.MethodPut, uri, ev))
	if r.status != http.StatusRequestEntityTooLarge || r.errcode() != "M_TOO_LARGE" {
		t.Fatalf("got %d %s (%s), want 413 M_TOO_LARGE", r.status, r.errcode(), r.raw)
	}
}
