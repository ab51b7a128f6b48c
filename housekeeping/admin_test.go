package housekeeping_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"
	"maunium.net/go/mautrix/synapseadmin"

	"github.com/tessera-hs/tessera/internal/config"
	"github.com/tessera-hs/tessera/internal/testserver"
)

// call makes a request with an access token and returns the status and
// the JSON body.
func call(t *testing.T, s *testserver.Server, method, path, token string, body any) (int, map[string]any) {
	t.Helper()
	var rd io.Reader
	if body != nil {
		raw, _ := json.Marshal(body)
		rd = bytes.NewReader(raw)
	}
	req, err := http.NewRequest(method, s.URL+path, rd)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var out map[string]any
	raw, _ := io.ReadAll(resp.Body)
	if err := json.Unmarshal(raw, &out); err != nil {
		t.Fatalf("%s %s: %d %q is not JSON", method, path, resp.StatusCode, raw)
	}
	return resp.StatusCode, out
}

func expect(t *testing.T, what string, status int, body map[string]any, wantStatus int, wantCode string) {
	t.Helper()
	if status != wantStatus || (wantCode != "" && body["errcode"] != wantCode) {
		t.Errorf("%s: %d %v, want %d %s", what, status, body, wantStatus, wantCode)
	}
}

func registerAdmin(t *testing.T, s *testserver.Server) string {
	t.Helper()
	admin, err := (&synapseadmin.Client{Client: s.Client("", "")}).SharedSecretRegister(context.Background(), testserver.SharedSecret,
		synapseadmin.ReqSharedSecretRegister{Username: "root", Password: "root-password", Admin: true})
	if err != nil {
		t.Fatalf("register admin: %v", err)
	}
	return admin.AccessToken
}

// purgeAndWait starts a purge as an admin and polls
// purge_history_status until it completes.
func purgeAndWait(t *testing.T, s *testserver.Server, token, path string, body any) {
	t.Helper()
	status, resp := call(t, s, http.MethodPost, path, token, body)
	if status != http.StatusOK {
		t.Fatalf("POST %s: %d %v", path, status, resp)
	}
	for range 200 {
		status, st := call(t, s, http.MethodGet, "/_synapse/admin/v1/purge_history_status/"+resp["purge_id"].(string), token, nil)
		if status != http.StatusOK {
			t.Fatalf("purge status: %d %v", status, st)
		}
		switch st["status"] {
		case "complete":
			return
		case "active":
			time.Sleep(25 * time.Millisecond)
		default:
			t.Fatalf("purge: %v", st)
		}
	}
	t.Fatal("the purge never ended")
}

// messagesDown are the bodies m<from> down to m<to>, newest first.
func messagesDown(from, to int) []string {
	var out []string
	for i := from; i >= to; i-- {
		out = append(out, fmt.Sprintf("m%02d", i))
	}
	return out
}

// TestPurgeHistoryAdminAPI: Synapse's purge_history and
// purge_history_status, their refusals and their effect.
func TestPurgeHistoryAdminAPI(t *testing.T) {
	ctx := context.Background()
	s := testserver.Start(t)
	admin := registerAdmin(t, s)
	alice := s.Register("alice", "password-alice")
	room, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "private_chat"})
	if err != nil {
		t.Fatal(err)
	}
	var ids []id.EventID
	for i := range 20 {
		resp, err := alice.SendText(ctx, room.RoomID, fmt.Sprintf("m%02d", i))
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, resp.EventID)
	}
	purge := "/_synapse/admin/v1/purge_history/" + url.PathEscape(room.RoomID.String())

	status, body := call(t, s, http.MethodPost, purge, alice.AccessToken, map[string]any{"purge_up_to_ts": time.Now().UnixMilli()})
	expect(t, "non-admin purge", status, body, http.StatusForbidden, "M_FORBIDDEN")
	status, body = call(t, s, http.MethodGet, "/_synapse/admin/v1/purge_history_status/x", alice.AccessToken, nil)
	expect(t, "non-admin status", status, body, http.StatusForbidden, "M_FORBIDDEN")
	status, body = call(t, s, http.MethodPost, purge, admin, map[string]any{})
	expect(t, "no purge point", status, body, http.StatusBadRequest, "M_BAD_JSON")
	status, body = call(t, s, http.MethodPost, purge, admin, map[string]any{"purge_up_to_ts": "yesterday"})
	expect(t, "bad purge_up_to_ts", status, body, http.StatusBadRequest, "M_INVALID_PARAM")
	status, body = call(t, s, http.MethodPost, "/_synapse/admin/v1/purge_history/!nope:tessera.test", admin, map[string]any{"purge_up_to_ts": 1})
	expect(t, "unknown room", status, body, http.StatusNotFound, "M_NOT_FOUND")
	status, body = call(t, s, http.MethodPost, purge+"/$nope", admin, nil)
	expect(t, "unknown event", status, body, http.StatusNotFound, "M_NOT_FOUND")
	status, body = call(t, s, http.MethodGet, "/_synapse/admin/v1/purge_history_status/nope", admin, nil)
	expect(t, "unknown purge", status, body, http.StatusNotFound, "M_NOT_FOUND")

	// Without delete_local_events, local events stay (as in Synapse).
	purgeAndWait(t, s, admin, purge+"/"+url.PathEscape(ids[10].String()), nil)
	if got := messageBodies(t, alice, room.RoomID); len(got) != 20 {
		t.Errorf("after purging remote events only: %d messages, want 20", len(got))
	}

	// With it, the events before the given one go; it stays.
	purgeAndWait(t, s, admin, purge, map[string]any{"purge_up_to_event_id": ids[10], "delete_local_events": true})
	want := messagesDown(19, 10)
	if got := messageBodies(t, alice, room.RoomID); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("after the purge: %v, want %v", got, want)
	}
	if _, err := alice.SendText(ctx, room.RoomID, "still here"); err != nil {
		t.Errorf("send after purge: %v", err)
	}
}

// TestMediaRetention: purge_media_cache evicts B's cached copy of A's
// media (fetched again on the next download), and media retention deletes
// local media not downloaded for its lifetime, file included.
func TestMediaRetention(t *testing.T) {
	ctx := context.Background()
	a := testserver.Start(t, testserver.Federation("127.0.0.1"), func(c *config.Config) {
		c.Housekeeping.Interval = 0
		c.Housekeeping.LocalMediaLifetime = config.Duration(time.Hour)
	})
	b := testserver.Start(t, testserver.Federation("127.0.0.2"))
	alice := a.Register("alice", "password-alice")
	bob := b.Register("bob", "password-bob")
	admin := registerAdmin(t, b)

	kept, err := alice.UploadBytes(ctx, []byte("downloaded lately"), "text/plain")
	if err != nil {
		t.Fatal(err)
	}
	stale, err := alice.UploadBytes(ctx, []byte("never downloaded"), "text/plain")
	if err != nil {
		t.Fatal(err)
	}
	download := func(c *mautrix.Client, uri id.ContentURI) (string, error) {
		data, err := c.DownloadBytes(ctx, uri)
		return string(data), err
	}
	if got, err := download(bob, kept.ContentURI); err != nil || got != "downloaded lately" {
		t.Fatalf("bob downloads A's media: %q, %v", got, err)
	}
	if n := b.MediaFiles(); n != 1 {
		t.Fatalf("B's store holds %d files, want the cached one", n)
	}

	cache := "/_synapse/admin/v1/purge_media_cache"
	status, body := call(t, b, http.MethodPost, cache+"?before_ts=99999999999999", bob.AccessToken, nil)
	expect(t, "non-admin", status, body, http.StatusForbidden, "M_FORBIDDEN")
	status, body = call(t, b, http.MethodPost, cache, admin, nil)
	expect(t, "no before_ts", status, body, http.StatusBadRequest, "M_MISSING_PARAM")
	status, body = call(t, b, http.MethodPost, cache+"?before_ts=1700000000", admin, nil)
	expect(t, "before_ts in seconds", status, body, http.StatusBadRequest, "M_INVALID_PARAM")
	status, body = call(t, b, http.MethodPost, cache+"?before_ts=-1", admin, nil)
	expect(t, "negative before_ts", status, body, http.StatusBadRequest, "M_INVALID_PARAM")
	status, body = call(t, b, http.MethodPost, cache+fmt.Sprintf("?before_ts=%d", time.Now().Add(-time.Hour).UnixMilli()), admin, nil)
	if status != http.StatusOK || body["deleted"] != float64(0) {
		t.Errorf("purge of media older than an hour: %d %v, want deleted 0", status, body)
	}
	status, body = call(t, b, http.MethodPost, cache+fmt.Sprintf("?before_ts=%d", time.Now().Add(time.Second).UnixMilli()), admin, nil)
	if status != http.StatusOK || body["deleted"] != float64(1) {
		t.Errorf("purge_media_cache: %d %v, want deleted 1", status, body)
	}
	if n := b.MediaFiles(); n != 0 {
		t.Errorf("B's store holds %d files after the purge", n)
	}
	// Fetched again from A.
	if got, err := download(bob, kept.ContentURI); err != nil || got != "downloaded lately" {
		t.Errorf("download after the purge: %q, %v", got, err)
	}

	// Local media retention on A, a one-hour lifetime: half an hour on
	// both media stay; two hours on neither was downloaded within the
	// hour, and both go, files included.
	later := time.Now().Add(2 * time.Hour)
	filesBefore := a.MediaFiles()
	rep, err := a.Server().Housekeeping.RunOnce(ctx, later.Add(-90*time.Minute))
	if err != nil || rep.MediaDeleted != 0 {
		t.Errorf("media retention within the lifetime: deleted %d, %v", rep.MediaDeleted, err)
	}
	rep, err = a.Server().Housekeeping.RunOnce(ctx, later)
	if err != nil || rep.MediaDeleted != 2 {
		t.Errorf("media retention past the lifetime: deleted %d, %v; want 2", rep.MediaDeleted, err)
	}
	if n := a.MediaFiles(); n != filesBefore-2 {
		t.Errorf("A's store: %d files, want %d", n, filesBefore-2)
	}
	for _, uri := range []id.ContentURI{kept.ContentURI, stale.ContentURI} {
		if _, err := download(alice, uri); err == nil || !strings.Contains(err.Error(), "M_NOT_FOUND") {
			t.Errorf("download of deleted media %s: %v, want M_NOT_FOUND", uri, err)
		}
	}
}

// TestPurgedHistoryIsNotBackfilled: A joined B's room, which had history
// before the join (A never fetched it). A purges its copy up to a recent
// message: paging back on A ends at the purge instead of fetching the
// older history from B with backfill, and the two go on talking.
func TestPurgedHistoryIsNotBackfilled(t *testing.T) {
	ctx := context.Background()
	a := testserver.Start(t, testserver.Federation("127.0.0.1"))
	b := testserver.Start(t, testserver.Federation("127.0.0.2"))
	admin := registerAdmin(t, a)
	alice := a.Register("alice", "password-alice")
	bob := b.Register("bob", "password-bob")
	room, err := bob.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "public_chat", InitialState: []*event.Event{
		{Type: event.StateHistoryVisibility, Content: event.Content{Raw: map[string]any{"history_visibility": "shared"}}}}})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 10 {
		if _, err := bob.SendText(ctx, room.RoomID, fmt.Sprintf("before the join %d", i)); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := alice.JoinRoom(ctx, room.RoomID.String(), &mautrix.ReqJoinRoom{Via: []string{b.Config.ServerName}}); err != nil {
		t.Fatal(err)
	}
	var ids []id.EventID
	for i := range 20 {
		resp, err := bob.SendText(ctx, room.RoomID, fmt.Sprintf("m%02d", i))
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, resp.EventID)
	}
	waitFor(t, alice, room.RoomID, "m19")

	// bob's events are remote on A: no delete_local_events needed.
	purgeAndWait(t, a, admin, "/_synapse/admin/v1/purge_history/"+url.PathEscape(room.RoomID.String())+
		"/"+url.PathEscape(ids[10].String()), nil)
	want := messagesDown(19, 10)
	if got := messageBodies(t, alice, room.RoomID); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("alice's history on A after the purge: %v, want %v", got, want)
	}
	// B kept its copy.
	if got := messageBodies(t, bob, room.RoomID); len(got) != 30 {
		t.Errorf("bob's history on B: %d messages, want 30", len(got))
	}
	if _, err := bob.SendText(ctx, room.RoomID, "still talking"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, alice, room.RoomID, "still talking")
	if _, err := alice.SendText(ctx, room.RoomID, "me too"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, bob, room.RoomID, "me too")
}
