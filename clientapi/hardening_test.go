package clientapi_test

import (
	"encoding/json"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/tessera-hs/tessera/internal/database/dbtest"
	"github.com/tessera-hs/tessera/internal/testserver"
	"github.com/tessera-hs/tessera/roomserver"
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

// TestStoredBadEventWithheld: an event already stored whose content cannot
// be served (stored before the edges refused such content) has its content
// withheld in /sync and /messages, marked in unsigned, rather than failing
// them, or the clients that parse them, for everyone in the room.
func TestStoredBadEventWithheld(t *testing.T) {
	t.Parallel()
	srv := testserver.Start(t)
	alice := registerUser(t, srv, "alice", "password1")
	bob := registerUser(t, srv, "bob", "password2")
	roomID := rmCreate(t, srv, alice, map[string]any{"preset": "public_chat"})
	post(t, srv, rmRoom(roomID, "join"), bob.AccessToken, map[string]any{}).expect(t, http.StatusOK, "")

	// Past the edge, as an older release stored them.
	withheld := 0
	for _, content := range []string{
		`{"msgtype":"m.text","body":"deep","n":` + nested(9990) + `}`,
		"{\"msgtype\":\"m.text\",\"body\":\"caf\xe9\"}",
	} {
		_, err := srv.Server().Rooms.Send(ctx, roomserver.SendRequest{RoomID: roomID, Sender: alice.UserID,
			Type: "m.room.message", Content: json.RawMessage(content)})
		if dbtest.Postgres() && !utf8.ValidString(content) {
			// PostgreSQL's TEXT refuses invalid UTF-8, so no release
			// could have stored it there.
			if err == nil {
				t.Fatalf("PostgreSQL stored invalid UTF-8 %.40q", content)
			}
			continue
		}
		if err != nil {
			t.Fatalf("could not store %.40q: %v", content, err)
		}
		withheld++
	}
	rmSendRaw(t, srv, alice, roomID, "m.room.message", rmTxn(), map[string]any{"msgtype": "m.text", "body": "after"}).
		expect(t, http.StatusOK, "")

	for _, who := range []session{alice, bob} {
		r := get(t, srv, v3+"/sync?timeout=0", who.AccessToken).expect(t, http.StatusOK, "")
		if !strings.Contains(string(r.Raw), `"after"`) {
			t.Fatalf("%s's sync lacks the later message: %.300s", who.UserID, r.Raw)
		}
		if strings.Contains(string(r.Raw), `"deep"`) || strings.Contains(string(r.Raw), `caf`) {
			t.Fatalf("%s's sync serves the bad events", who.UserID)
		}
		if n := strings.Count(string(r.Raw), `"io.tessera.withheld":true`); n != withheld {
			t.Fatalf("%s's sync marks %d events withheld, want %d", who.UserID, n, withheld)
		}
		m := get(t, srv, rmRoom(roomID, "messages")+"?dir=b&limit=50", who.AccessToken).expect(t, http.StatusOK, "")
		if !strings.Contains(string(m.Raw), `"after"`) || strings.Count(string(m.Raw), `"io.tessera.withheld":true`) != withheld {
			t.Fatalf("%s's /messages lacks the later message or the withheld ones: %.300s", who.UserID, m.Raw)
		}
	}
}
