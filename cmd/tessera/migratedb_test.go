package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"os"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/tessera-hs/tessera/internal/database/dbtest"
	"github.com/tessera-hs/tessera/internal/testserver"
)

// TestMigrateDBToPostgres is the operator's path from SQLite to PostgreSQL:
// a server on SQLite gets users, a room with messages, media and keys;
// migrate-db refuses while it runs, copies it once stopped, refuses a
// second copy into the now non-empty database; the server started on
// PostgreSQL then serves the same /messages, /sync and media, and goes on
// from there.
func TestMigrateDBToPostgres(t *testing.T) {
	testserver.MissingPostgres(t)
	ctx := context.Background()
	dir := t.TempDir()
	path := generate(t, dir, "-open-registration")
	editConfig(t, path,
		"  # Answer 429 M_LIMIT_EXCEEDED when a client goes over these rates.\n  enabled: true\n",
		"  # Answer 429 M_LIMIT_EXCEEDED when a client goes over these rates.\n  enabled: false\n",
		"  hash_memory_kib: 19456\n  hash_iterations: 2\n", "  hash_memory_kib: 1024\n  hash_iterations: 1\n",
	)
	srv := start(t, dir, "run", "-config", path)
	base := "http://" + srv.addr

	alice, bob := registerClient(t, base, "alice"), registerClient(t, base, "bob")
	room, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "public_chat", Name: "Migration", Topic: "moving house"})
	if err != nil {
		t.Fatalf("create room: %v", err)
	}
	if _, err := bob.JoinRoomByID(ctx, room.RoomID); err != nil {
		t.Fatalf("join: %v", err)
	}
	for i := range 30 {
		c := alice
		if i%3 == 2 {
			c = bob
		}
		if _, err := c.SendText(ctx, room.RoomID, "message "+strconv.Itoa(i)); err != nil {
			t.Fatalf("send %d: %v", i, err)
		}
	}
	up, err := alice.UploadBytesWithName(ctx, []byte("the picture, in bytes"), "image/png", "picture.png")
	if err != nil {
		t.Fatalf("upload: %v", err)
	}
	image, err := alice.SendMessageEvent(ctx, room.RoomID, event.EventMessage, map[string]any{
		"msgtype": "m.image", "body": "picture.png", "url": up.ContentURI.String(),
	})
	if err != nil {
		t.Fatalf("send image: %v", err)
	}
	otks := map[string]any{"curve25519:AAAAAQ": "cGljdHVyZQ", "curve25519:AAAAAg": "c2Vjb25k"}
	if st, body := authedJSON(t, http.MethodPost, base+"/_matrix/client/v3/keys/upload", alice.AccessToken,
		map[string]any{"one_time_keys": otks}); st != 200 {
		t.Fatalf("keys/upload: %d %v", st, body)
	}
	// Syncing sets a user's presence: a first round of syncs, so that the
	// snapshot is of a settled server.
	snapshot(t, base, alice, bob, room.RoomID, up.ContentURI)
	before := snapshot(t, base, alice, bob, room.RoomID, up.ContentURI)

	// While the server runs, its database is not copied.
	dsn := dbtest.CreatePostgres(t)
	if _, stderr, code := tessera(t, dir, "migrate-db", "-from", path, "-to", dsn); code != 1 || !strings.Contains(stderr, "stop Tessera") {
		t.Fatalf("migrate-db of a running server: exit %d %q", code, stderr)
	}
	srv.stop(t)
	if _, stderr, code := tessera(t, dir, "migrate-db", "-from", path); code != 2 {
		t.Errorf("migrate-db without -to: exit %d %q", code, stderr)
	}
	out, stderr, code := tessera(t, dir, "migrate-db", "-from", path, "-to", dsn)
	if code != 0 || !strings.Contains(out, "row counts match") || !strings.Contains(out, "events ") {
		t.Fatalf("migrate-db: exit %d %q %q", code, out, stderr)
	}
	t.Logf("migrate-db:\n%s", out)
	if _, stderr, code := tessera(t, dir, "migrate-db", "-from", path, "-to", dsn); code != 1 || !strings.Contains(stderr, "not empty") {
		t.Errorf("migrate-db into the migrated database: exit %d %q", code, stderr)
	}

	editConfig(t, path,
		"  engine: sqlite\n", "  engine: postgres\n",
		"  dsn: \"\"\n", "  dsn: "+strconv.Quote(dsn)+"\n",
	)
	srv = start(t, dir, "run", "-config", path)
	if !strings.Contains(srv.logs.String(), "postgres://127.0.0.1") {
		t.Errorf("the server did not start on PostgreSQL:\n%s", srv.logs)
	}
	base = "http://" + srv.addr
	after := snapshot(t, base, alice, bob, room.RoomID, up.ContentURI)
	for name, b := range before {
		if !bytes.Equal(b, after[name]) {
			t.Errorf("%s differs after the migration:\nSQLITE %s\nPOSTGRES %s", name, b, after[name])
		}
	}

	// The copy goes on: new events after the old ones, new keys claimed
	// from the old, a new account.
	alice.HomeserverURL, _ = url.Parse(base)
	bob.HomeserverURL, _ = url.Parse(base)
	sent, err := bob.SendText(ctx, room.RoomID, "after the move")
	if err != nil {
		t.Fatalf("send after the migration: %v", err)
	}
	msgs, err := alice.Messages(ctx, room.RoomID, "", "", mautrix.DirectionBackward, nil, 2)
	if err != nil || len(msgs.Chunk) != 2 || msgs.Chunk[0].ID != sent.EventID || msgs.Chunk[1].ID != image.EventID {
		t.Fatalf("/messages after a new event: %v %+v", err, msgs)
	}
	st, claimed := authedJSON(t, http.MethodPost, base+"/_matrix/client/v3/keys/claim", bob.AccessToken, map[string]any{
		"one_time_keys": map[string]any{alice.UserID.String(): map[string]any{alice.DeviceID.String(): "curve25519"}}})
	if got, _ := json.Marshal(claimed["one_time_keys"]); st != 200 || !strings.Contains(string(got), "AAAA") {
		t.Errorf("claim a key uploaded before the migration: %d %v", st, claimed)
	}
	registerClient(t, base, "carol")
	srv.stop(t)

	// db-stats reads the sizes of PostgreSQL's tables.
	out, stderr, code = tessera(t, dir, "db-stats", "-config", path)
	if code != 0 || !strings.Contains(out, "accounts") || !strings.Contains(out, "events") {
		t.Errorf("db-stats on PostgreSQL: exit %d %q %q", code, out, stderr)
	}
	t.Logf("db-stats:\n%s", out)
}

// editConfig replaces text in the config file, in pairs of old and new.
func editConfig(t *testing.T, path string, pairs ...string) {
	t.Helper()
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	cfg := string(raw)
	for i := 0; i < len(pairs); i += 2 {
		if !strings.Contains(cfg, pairs[i]) {
			t.Fatalf("config has no %q", pairs[i])
		}
		cfg = strings.Replace(cfg, pairs[i], pairs[i+1], 1)
	}
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
}

func registerClient(t *testing.T, base, user string) *mautrix.Client {
	t.Helper()
	c, err := mautrix.NewClient(base, "", "")
	if err != nil {
		t.Fatal(err)
	}
	c.Client = &http.Client{Timeout: 30 * time.Second}
	resp, err := c.RegisterDummy(context.Background(), &mautrix.ReqRegister[any]{Username: user, Password: "migration password"})
	if err != nil {
		t.Fatalf("register %s: %v", user, err)
	}
	c.SetCredentials(resp.UserID, resp.AccessToken)
	c.DeviceID = resp.DeviceID
	return c
}

// snapshot is what the clients see of the server, to compare before and
// after: both users' /messages and initial /sync of the room, and the media.
// Times that depend on when they are asked (unsigned.age, presence's
// last_active_ago) are left out.
func snapshot(t *testing.T, base string, alice, bob *mautrix.Client, roomID id.RoomID, mxc id.ContentURI) map[string][]byte {
	t.Helper()
	out := map[string][]byte{}
	for _, c := range []*mautrix.Client{alice, bob} {
		who := c.UserID.Localpart()
		out[who+" /messages"] = getJSON(t, base+"/_matrix/client/v3/rooms/"+url.PathEscape(roomID.String())+
			"/messages?dir=b&limit=100", c.AccessToken)
		sync := getJSON(t, base+"/_matrix/client/v3/sync", c.AccessToken)
		// The typing stream's position is not stored: it starts from the
		// clock at each start of the server, migrated or not.
		out[who+" /sync"] = typingPos.ReplaceAll(sync, []byte("${1}TYPING${2}"))
	}
	req, _ := http.NewRequest(http.MethodGet, base+"/_matrix/client/v1/media/download/"+mxc.Homeserver+"/"+mxc.FileID, nil)
	req.Header.Set("Authorization", "Bearer "+alice.AccessToken)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 {
		t.Fatalf("media download: %d %s", resp.StatusCode, body)
	}
	out["media"] = append([]byte(resp.Header.Get("Content-Type")+"\n"), body...)
	return out
}

var typingPos = regexp.MustCompile(`("next_batch":"s\d+_\d+_\d+_)\d+(_)`)

// getJSON gets a JSON document, without the fields that depend on when
// it is asked, re-encoded so that equal documents are equal bytes.
func getJSON(t *testing.T, u, token string) []byte {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, u, nil)
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var doc any
	if err := json.NewDecoder(resp.Body).Decode(&doc); err != nil || resp.StatusCode != 200 {
		t.Fatalf("GET %s: %d %v", u, resp.StatusCode, err)
	}
	raw, _ := json.Marshal(withoutTimes(doc))
	return raw
}

func withoutTimes(v any) any {
	switch x := v.(type) {
	case map[string]any:
		for k, e := range x {
			if k == "age" || k == "last_active_ago" {
				delete(x, k)
				continue
			}
			x[k] = withoutTimes(e)
		}
	case []any:
		for i, e := range x {
			x[i] = withoutTimes(e)
		}
	}
	return v
}
