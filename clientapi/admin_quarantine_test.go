package clientapi_test

import (
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
)

// served checks that a download answered 200 (with the content, which is
// not JSON).
func served(t *testing.T, r resp) {
	t.Helper()
	if r.Status != http.StatusOK {
		t.Fatalf("download: %d %s", r.Status, r.Raw)
	}
}

// TestAdminQuarantine: media quarantined by ID, by room or by user is
// served to nobody (404 M_NOT_FOUND, thumbnails too) until it is
// unquarantined; protected media is never quarantined and survives the
// deletion by date; a room's media lists its local and remote mxc URIs.
func TestAdminQuarantine(t *testing.T) {
	srv, logs, root := auditedAdminServer(t)
	tok := root.AccessToken
	alice := srv.Register("alice", "alice-password")
	bob := srv.Register("bob", "bob-password")
	upload := func(c *mautrix.Client, body string) string { return uploadNote(t, c, body) }
	download := func(mediaID string) resp {
		return get(t, srv, "/_matrix/client/v1/media/download/tessera.test/"+mediaID, bob.AccessToken)
	}
	one, two, three := upload(alice, "one"), upload(alice, "two"), upload(bob, "three")

	t.Run("by ID", func(t *testing.T) {
		post(t, srv, adminV1+"/media/quarantine/tessera.test/"+one, tok, map[string]any{}).expect(t, http.StatusOK, "")
		download(one).expect(t, http.StatusNotFound, "M_NOT_FOUND")
		get(t, srv, "/_matrix/client/v1/media/thumbnail/tessera.test/"+one+"?width=32&height=32", bob.AccessToken).
			expect(t, http.StatusNotFound, "M_NOT_FOUND")
		served(t, download(two))
		r := get(t, srv, adminV1+"/users/"+url.PathEscape(string(alice.UserID))+"/media?order_by=media_id", tok).expect(t, http.StatusOK, "")
		for _, m := range r.Body["media"].([]any) {
			m := m.(map[string]any)
			want := any(nil)
			if m["media_id"] == one {
				want = string(root.UserID)
			}
			if m["quarantined_by"] != want || m["safe_from_quarantine"] != false {
				t.Fatalf("media list: %s", r.Raw)
			}
		}
		post(t, srv, adminV1+"/media/unquarantine/tessera.test/"+one, tok, map[string]any{}).expect(t, http.StatusOK, "")
		served(t, download(one))
		if !strings.Contains(logs.String(), "action=quarantine_media") || !strings.Contains(logs.String(), "action=unquarantine_media") {
			t.Fatalf("audit: %s", logs)
		}
		// Remote media is quarantined before it is ever fetched.
		post(t, srv, adminV1+"/media/quarantine/elsewhere.test/abcdef", tok, map[string]any{}).expect(t, http.StatusOK, "")
		get(t, srv, "/_matrix/client/v1/media/download/elsewhere.test/abcdef", bob.AccessToken).expect(t, http.StatusNotFound, "M_NOT_FOUND")
	})

	t.Run("protected", func(t *testing.T) {
		post(t, srv, adminV1+"/media/protect/"+two, tok, map[string]any{}).expect(t, http.StatusOK, "")
		post(t, srv, adminV1+"/media/quarantine/tessera.test/"+two, tok, map[string]any{}).expect(t, http.StatusOK, "")
		served(t, download(two))
		// The deletion by date keeps protected (and quarantined) media.
		post(t, srv, adminV1+"/media/quarantine/tessera.test/"+three, tok, map[string]any{}).expect(t, http.StatusOK, "")
		now := time.Now().Add(time.Minute).UnixMilli()
		r := post(t, srv, fmt.Sprintf("%s/media/delete?before_ts=%d&keep_profiles=false", adminV1, now), tok, map[string]any{}).
			expect(t, http.StatusOK, "")
		if deleted := r.Body["deleted_media"].([]any); len(deleted) != 1 || deleted[0] != one {
			t.Fatalf("deleted %v; want only %s", deleted, one)
		}
		post(t, srv, adminV1+"/media/unquarantine/tessera.test/"+three, tok, map[string]any{}).expect(t, http.StatusOK, "")
		post(t, srv, adminV1+"/media/unprotect/"+two, tok, map[string]any{}).expect(t, http.StatusOK, "")
		post(t, srv, adminV1+"/media/protect/nosuchmedia", tok, map[string]any{}).expect(t, http.StatusNotFound, "M_NOT_FOUND")
	})

	t.Run("by user", func(t *testing.T) {
		r := post(t, srv, adminV1+"/user/"+url.PathEscape(string(alice.UserID))+"/media/quarantine", tok, map[string]any{}).
			expect(t, http.StatusOK, "")
		if r.Body["num_quarantined"] != float64(1) { // two; one was deleted above
			t.Fatalf("by user: %s", r.Raw)
		}
		download(two).expect(t, http.StatusNotFound, "M_NOT_FOUND")
		served(t, download(three))
		post(t, srv, adminV1+"/media/unquarantine/tessera.test/"+two, tok, map[string]any{}).expect(t, http.StatusOK, "")
		post(t, srv, adminV1+"/user/"+url.PathEscape("@nobody:tessera.test")+"/media/quarantine", tok, map[string]any{}).
			expect(t, http.StatusNotFound, "M_NOT_FOUND")
	})

	t.Run("by room", func(t *testing.T) {
		room, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{})
		must(t, err, "create room")
		for _, c := range []map[string]any{
			{"msgtype": "m.image", "body": "img", "url": "mxc://tessera.test/" + two, "info": map[string]any{"thumbnail_url": "mxc://tessera.test/" + three}},
			{"msgtype": "m.file", "body": "remote", "url": "mxc://elsewhere.test/xyz"},
			{"msgtype": "m.text", "body": "mxc://tessera.test/notaurl"},
		} {
			_, err := alice.SendMessageEvent(ctx, room.RoomID, event.EventMessage, c)
			must(t, err, "send")
		}
		rid := url.PathEscape(string(room.RoomID))
		r := get(t, srv, adminV1+"/room/"+rid+"/media", tok).expect(t, http.StatusOK, "")
		local, remote := r.Body["local"].([]any), r.Body["remote"].([]any)
		if len(local) != 2 || !slices.Contains(local, any("mxc://tessera.test/"+two)) || !slices.Contains(local, any("mxc://tessera.test/"+three)) ||
			len(remote) != 1 || remote[0] != "mxc://elsewhere.test/xyz" {
			t.Fatalf("room media: %s", r.Raw)
		}
		r = post(t, srv, adminV1+"/room/"+rid+"/media/quarantine", tok, map[string]any{}).expect(t, http.StatusOK, "")
		if r.Body["num_quarantined"] != float64(3) {
			t.Fatalf("by room: %s", r.Raw)
		}
		download(two).expect(t, http.StatusNotFound, "M_NOT_FOUND")
		download(three).expect(t, http.StatusNotFound, "M_NOT_FOUND")
		get(t, srv, adminV1+"/room/"+url.PathEscape("!nope:tessera.test")+"/media", tok).expect(t, http.StatusNotFound, "M_NOT_FOUND")
	})

	for _, rt := range []struct{ method, path string }{
		{http.MethodPost, adminV1 + "/media/quarantine/tessera.test/" + one},
		{http.MethodPost, adminV1 + "/media/unquarantine/tessera.test/" + one},
		{http.MethodPost, adminV1 + "/media/protect/" + one},
		{http.MethodPost, adminV1 + "/media/unprotect/" + one},
		{http.MethodPost, adminV1 + "/user/" + url.PathEscape(string(alice.UserID)) + "/media/quarantine"},
		{http.MethodPost, adminV1 + "/room/" + url.PathEscape("!r:tessera.test") + "/media/quarantine"},
		{http.MethodGet, adminV1 + "/room/" + url.PathEscape("!r:tessera.test") + "/media"},
	} {
		do(t, srv, req{Method: rt.method, Path: rt.path, Token: bob.AccessToken, Body: map[string]any{}}).
			expect(t, http.StatusForbidden, "M_FORBIDDEN")
	}
}

// TestAdminQuarantineByHash: quarantining one media quarantines every
// copy of its content (the same SHA-256), whoever uploaded it, except
// protected media; lifting it lifts them all; a new upload of quarantined
// content succeeds but is served to nobody, quarantined by "system", as in
// Synapse.
func TestAdminQuarantineByHash(t *testing.T) {
	srv, _, root := auditedAdminServer(t)
	tok := root.AccessToken
	alice := srv.Register("alice", "alice-password")
	bob := srv.Register("bob", "bob-password")
	download := func(mediaID string) resp {
		return get(t, srv, "/_matrix/client/v1/media/download/tessera.test/"+mediaID, bob.AccessToken)
	}
	quarantinedBy := func(c *mautrix.Client, mediaID string) any {
		t.Helper()
		r := get(t, srv, adminV1+"/users/"+url.PathEscape(string(c.UserID))+"/media", tok).expect(t, http.StatusOK, "")
		for _, m := range r.Body["media"].([]any) {
			if m := m.(map[string]any); m["media_id"] == mediaID {
				return m["quarantined_by"]
			}
		}
		t.Fatalf("%s not in %s's media: %s", mediaID, c.UserID, r.Raw)
		return nil
	}
	a1, a2, b1 := uploadNote(t, alice, "the same"), uploadNote(t, alice, "the same"), uploadNote(t, bob, "the same")
	other := uploadNote(t, alice, "something else")

	post(t, srv, adminV1+"/media/quarantine/tessera.test/"+a1, tok, map[string]any{}).expect(t, http.StatusOK, "")
	for _, id := range []string{a1, a2, b1} {
		download(id).expect(t, http.StatusNotFound, "M_NOT_FOUND")
	}
	served(t, download(other))
	if by := quarantinedBy(bob, b1); by != string(root.UserID) {
		t.Errorf("bob's copy quarantined by %v, want %s", by, root.UserID)
	}

	// Lifting the quarantine of one copy lifts it from all.
	post(t, srv, adminV1+"/media/unquarantine/tessera.test/"+a2, tok, map[string]any{}).expect(t, http.StatusOK, "")
	for _, id := range []string{a1, a2, b1} {
		served(t, download(id))
	}

	// A protected copy stays served.
	post(t, srv, adminV1+"/media/protect/"+a2, tok, map[string]any{}).expect(t, http.StatusOK, "")
	post(t, srv, adminV1+"/media/quarantine/tessera.test/"+b1, tok, map[string]any{}).expect(t, http.StatusOK, "")
	served(t, download(a2))
	download(a1).expect(t, http.StatusNotFound, "M_NOT_FOUND")

	// A new upload of the quarantined content is taken and quarantined.
	again := uploadNote(t, bob, "the same")
	download(again).expect(t, http.StatusNotFound, "M_NOT_FOUND")
	if by := quarantinedBy(bob, again); by != "system" {
		t.Errorf("the new upload is quarantined by %v, want system", by)
	}
	served(t, download(uploadNote(t, bob, "fresh content")))
	// So is content uploaded to an ID created first (POST /media/v1/create).
	created, err := bob.CreateMXC(ctx)
	must(t, err, "create media ID")
	_, err = bob.UploadMedia(ctx, mautrix.ReqUploadMedia{ContentBytes: []byte("the same"), ContentType: "text/plain",
		MXC: created.ContentURI})
	must(t, err, "upload to the created ID")
	download(created.ContentURI.FileID).expect(t, http.StatusNotFound, "M_NOT_FOUND")
}

// TestAdminQuarantineMediaOldPath: POST /_synapse/admin/v1/quarantine_media/{roomId},
// the older path Synapse still serves, quarantines a room's media as
// /v1/room/{roomId}/media/quarantine does, for admins only.
func TestAdminQuarantineMediaOldPath(t *testing.T) {
	srv, _, root := auditedAdminServer(t)
	alice := srv.Register("alice", "alice-password")
	mediaID := uploadNote(t, alice, "in a room")
	room, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{})
	must(t, err, "create room")
	_, err = alice.SendMessageEvent(ctx, room.RoomID, event.EventMessage,
		map[string]any{"msgtype": "m.file", "body": "note", "url": "mxc://tessera.test/" + mediaID})
	must(t, err, "send")
	path := adminV1 + "/quarantine_media/" + url.PathEscape(string(room.RoomID))
	post(t, srv, path, alice.AccessToken, map[string]any{}).expect(t, http.StatusForbidden, "M_FORBIDDEN")
	r := post(t, srv, path, root.AccessToken, map[string]any{}).expect(t, http.StatusOK, "")
	if r.Body["num_quarantined"] != float64(1) {
		t.Fatalf("quarantine_media: %s", r.Raw)
	}
	get(t, srv, "/_matrix/client/v1/media/download/tessera.test/"+mediaID, alice.AccessToken).expect(t, http.StatusNotFound, "M_NOT_FOUND")
	post(t, srv, adminV1+"/quarantine_media/"+url.PathEscape("!nope:tessera.test"), root.AccessToken, map[string]any{}).
		expect(t, http.StatusNotFound, "M_NOT_FOUND")
}
