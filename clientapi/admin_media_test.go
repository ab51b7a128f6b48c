package clientapi_test

import (
	"fmt"
	"net/http"
	"testing"
	"time"

	"maunium.net/go/mautrix"
)

// uploadNote uploads body as a text/plain note.txt and returns its media ID.
func uploadNote(t *testing.T, c *mautrix.Client, body string) string {
	t.Helper()
	resp, err := c.UploadBytesWithName(ctx, []byte(body), "text/plain", "note.txt")
	must(t, err, "upload")
	return resp.ContentURI.FileID
}

// TestAdminMedia covers a user's media list, the media statistics, and
// deleting media by ID, by user and by date and size: deleted media cannot
// be downloaded.
func TestAdminMedia(t *testing.T) {
	srv, root, alice, bob := adminWithUsers(t)
	tok := root.AccessToken
	upload := func(c *mautrix.Client, body string) string { return uploadNote(t, c, body) }
	small := upload(alice, "a")
	big := upload(alice, "a much longer piece of content")
	bobs := upload(bob, "bob's file")
	download := func(mediaID string) int {
		return get(t, srv, "/_matrix/client/v1/media/download/tessera.test/"+mediaID, alice.AccessToken).Status
	}
	if got := download(small); got != http.StatusOK {
		t.Fatalf("download before delete: %d", got)
	}
	userMedia := adminV1 + "/users/" + string(alice.UserID) + "/media"

	t.Run("list", func(t *testing.T) {
		r := get(t, srv, userMedia+"?order_by=media_length&dir=b&limit=1", tok).expect(t, http.StatusOK, "")
		list := r.Body["media"].([]any)
		first := list[0].(map[string]any)
		if r.Body["total"] != float64(2) || r.Body["next_token"] != float64(1) || len(list) != 1 ||
			first["media_id"] != big || first["media_length"] != float64(30) || first["media_type"] != "text/plain" ||
			first["upload_name"] != "note.txt" {
			t.Fatalf("user media: %s", r.Raw)
		}
		get(t, srv, userMedia+"?order_by=colour", tok).expect(t, http.StatusBadRequest, "M_INVALID_PARAM")
		get(t, srv, adminV1+"/users/@nobody:tessera.test/media", tok).expect(t, http.StatusNotFound, "M_NOT_FOUND")
	})

	t.Run("statistics", func(t *testing.T) {
		r := get(t, srv, adminV1+"/statistics/users/media?dir=b", tok).expect(t, http.StatusOK, "")
		users := r.Body["users"].([]any)
		top := users[0].(map[string]any)
		if r.Body["total"] != float64(2) || top["user_id"] != string(alice.UserID) || top["media_count"] != float64(2) ||
			top["media_length"] != float64(31) || top["displayname"] != "alice" {
			t.Fatalf("statistics: %s", r.Raw)
		}
	})

	t.Run("delete by ID", func(t *testing.T) {
		r := del(t, srv, adminV1+"/media/tessera.test/"+small, tok, nil).expect(t, http.StatusOK, "")
		if r.Body["total"] != float64(1) || r.Body["deleted_media"].([]any)[0] != small {
			t.Fatalf("delete: %s", r.Raw)
		}
		if got := download(small); got != http.StatusNotFound {
			t.Fatalf("download after delete: %d", got)
		}
		del(t, srv, adminV1+"/media/tessera.test/"+small, tok, nil).expect(t, http.StatusNotFound, "M_NOT_FOUND")
		del(t, srv, adminV1+"/media/elsewhere.test/abc", tok, nil).expect(t, http.StatusBadRequest, "M_UNKNOWN")
	})

	t.Run("delete before a date", func(t *testing.T) {
		now := time.Now().Add(time.Minute).UnixMilli()
		post(t, srv, adminV1+"/media/delete", tok, map[string]any{}).expect(t, http.StatusBadRequest, "M_MISSING_PARAM")
		post(t, srv, adminV1+"/media/delete?before_ts=1000", tok, map[string]any{}).expect(t, http.StatusBadRequest, "M_INVALID_PARAM")
		post(t, srv, fmt.Sprintf("%s/media/delete?before_ts=%d", adminV1, now), tok, map[string]any{}).
			expect(t, http.StatusBadRequest, "M_INVALID_PARAM") // keep_profiles defaults to true
		r := post(t, srv, fmt.Sprintf("%s/media/delete?before_ts=%d&size_gt=20&keep_profiles=false", adminV1, now), tok, map[string]any{}).
			expect(t, http.StatusOK, "")
		if r.Body["total"] != float64(1) || r.Body["deleted_media"].([]any)[0] != big {
			t.Fatalf("delete before: %s", r.Raw)
		}
		if got := download(big); got != http.StatusNotFound {
			t.Fatalf("download after delete: %d", got)
		}
		if got := download(bobs); got != http.StatusOK {
			t.Fatalf("bob's small file: %d", got)
		}
	})

	t.Run("delete a user's media", func(t *testing.T) {
		r := del(t, srv, adminV1+"/users/"+string(bob.UserID)+"/media", tok, nil).expect(t, http.StatusOK, "")
		if r.Body["total"] != float64(1) {
			t.Fatalf("delete user media: %s", r.Raw)
		}
		if got := download(bobs); got != http.StatusNotFound {
			t.Fatalf("bob's file after delete: %d", got)
		}
	})
}
