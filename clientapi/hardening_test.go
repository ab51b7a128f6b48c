package clientapi_test

import (
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/tessera-hs/tessera/internal/testserver"
)

// Bodies no edge may take: each, once stored, wedges federation to every
// server that refuses it, or /sync for everyone who can see it.
var hostileBodies = []struct {
	name string
	body string
}{
	{"invalid UTF-8", "{\"body\":\"caf\xe9\",\"msgtype\":\"m.text\"}"},
	{"UTF-8 encoded surrogate", "{\"body\":\"\xed\xa0\x80\",\"msgtype\":\"m.text\"}"},
	{"lone high surrogate escape", `{"body":"\ud800","msgtype":"m.text"}`},
	{"lone low surrogate escape", `{"body":"x\udfff","msgtype":"m.text"}`},
	{"nested 101 deep", `{"msgtype":"m.text","body":"x","n":` + nested(100) + `}`},
	{"nested 5000 deep", `{"msgtype":"m.text","body":"x","n":` + nested(4999) + `}`},
}

// nested is n levels of arrays.
func nested(n int) string { return strings.Repeat("[", n) + strings.Repeat("]", n) }

// TestHostileJSONRefused: invalid UTF-8, lone surrogates and deep nesting
// are refused with 400 M_NOT_JSON on every endpoint that takes a body.
// https://spec.matrix.org/v1.19/appendices/#canonical-json
func TestHostileJSONRefused(t *testing.T) {
	t.Parallel()
	srv := testserver.Start(t)
	alice := registerUser(t, srv, "alice", "password1")
	roomID := rmCreate(t, srv, alice, nil)
	tok := alice.AccessToken

	endpoints := []struct {
		name, method, path, token string
	}{
		{"send", http.MethodPut, rmRoom(roomID, "send", "m.room.message", "txn-hostile"), tok},
		{"state", http.MethodPut, rmRoom(roomID, "state", "m.room.topic", ""), tok},
		{"account data", http.MethodPut, globalDataPath(alice.UserID, "org.example.x"), tok},
		{"room account data", http.MethodPut, adPath("user", alice.UserID, "rooms", roomID, "account_data", "org.example.x"), tok},
		{"to-device", http.MethodPut, v3 + "/sendToDevice/org.example.x/txn-hostile", tok},
		{"profile", http.MethodPut, profilePath(alice.UserID, "displayname"), tok},
		{"filter", http.MethodPost, adPath("user", alice.UserID, "filter"), tok},
		{"keys upload", http.MethodPost, v3 + "/keys/upload", tok},
		{"key backup version", http.MethodPost, v3 + "/room_keys/version", tok},
		{"push rule", http.MethodPut, v3 + "/pushrules/global/content/hostile", tok},
		{"create room", http.MethodPost, v3 + "/createRoom", tok},
		{"register", http.MethodPost, v3 + "/register", ""},
		{"login", http.MethodPost, v3 + "/login", ""},
	}
	for _, ep := range endpoints {
		for _, hb := range hostileBodies {
			t.Run(ep.name+"/"+hb.name, func(t *testing.T) {
				do(t, srv, req{Method: ep.method, Path: ep.path, Token: ep.token, Body: hb.body}).
					expect(t, http.StatusBadRequest, "M_NOT_JSON")
			})
		}
	}

	// Register with invalid UTF-8 in the fields that become the account.
	do(t, srv, req{Method: http.MethodPost, Path: v3 + "/register",
		Body: "{\"username\":\"m\xffallory\",\"password\":\"pass\xffword\",\"auth\":{\"type\":\"m.login.dummy\"}}"}).
		expect(t, http.StatusBadRequest, "M_NOT_JSON")

	// What is allowed still goes through: a pair of surrogate escapes, and
	// content nested as deep as canonical JSON takes.
	rmSendRaw(t, srv, alice, roomID, "m.room.message", rmTxn(),
		`{"msgtype":"m.text","body":"\ud83d\udc08 caf`+"\u00e9"+`","n":`+nested(99)+`}`).expect(t, http.StatusOK, "")
}

// TestNonUTF8ParamsRefused: a path or query parameter that decodes to
// invalid UTF-8 is 400 M_INVALID_PARAM.
func TestNonUTF8ParamsRefused(t *testing.T) {
	t.Parallel()
	srv := testserver.Start(t)
	alice := registerUser(t, srv, "alice", "password1")
	roomID := rmCreate(t, srv, alice, nil)
	for name, path := range map[string]string{
		"event type":     rmRoom(roomID) + "/send/m.room%FFmessage/txn1",
		"txn id":         rmRoom(roomID) + "/send/m.room.message/txn%C3",
		"state key":      rmRoom(roomID) + "/state/m.room.topic/%ED%A0%80",
		"query":          v3 + "/sync?timeout=0&filter=" + url.QueryEscape("\xff"),
		"account data":   adPath("user", alice.UserID, "account_data") + "/org.example%FE",
		"publicRooms qs": v3 + "/publicRooms?server=%FF",
	} {
		t.Run(name, func(t *testing.T) {
			do(t, srv, req{Method: http.MethodPut, Path: path, Token: alice.AccessToken, Body: `{"msgtype":"m.text","body":"x"}`}).
				expect(t, http.StatusBadRequest, "M_INVALID_PARAM")
		})
	}
}

// TestOversizedEventIs413: an event over 65,536 bytes is 413 M_TOO_LARGE.
// https://spec.matrix.org/v1.19/client-server-api/#size-limits
func TestOversizedEventIs413(t *testing.T) {
	t.Parallel()
	srv := testserver.Start(t)
	alice := registerUser(t, srv, "alice", "password1")
	roomID := rmCreate(t, srv, alice, nil)
	big := map[string]any{"msgtype": "m.text", "body": strings.Repeat("x", 65536)}
	rmSendRaw(t, srv, alice, roomID, "m.room.message", rmTxn(), big).expect(t, http.StatusRequestEntityTooLarge, "M_TOO_LARGE")
	put(t, srv, rmRoom(roomID, "state", "org.example.big", ""), alice.AccessToken, big).
		expect(t, http.StatusRequestEntityTooLarge, "M_TOO_LARGE")
	// Just under the limit is fine.
	small := map[string]any{"msgtype": "m.text", "body": strings.Repeat("x", 60000)}
	rmSendRaw(t, srv, alice, roomID, "m.room.message", rmTxn(), small).expect(t, http.StatusOK, "")
}
