package clientapi_test

import (
	"bytes"
	"crypto/rand"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tessera-hs/tessera/internal/config"
	"github.com/tessera-hs/tessera/internal/testserver"
)

const (
	mediaV1     = "/_matrix/client/v1/media"
	mediaLegacy = "/_matrix/media/v3"
)

// upload posts data with a content type and file name, returning the
// response.
func upload(t testing.TB, srv *testserver.Server, token, contentType, fileName string, data any) resp {
	t.Helper()
	path := mediaLegacy + "/upload"
	if fileName != "" {
		path += "?filename=" + url.QueryEscape(fileName)
	}
	return do(t, srv, req{Method: http.MethodPost, Path: path, Token: token, Body: data,
		Headers: map[string]string{"Content-Type": contentType}})
}

// mxcPath turns mxc://server/id into "server/id".
func mxcPath(t testing.TB, mxc string) string {
	t.Helper()
	rest, ok := strings.CutPrefix(mxc, "mxc://")
	if !ok || !strings.Contains(rest, "/") {
		t.Fatalf("bad content URI %q", mxc)
	}
	return rest
}

func uploadOK(t testing.TB, srv *testserver.Server, token, contentType, fileName string, data []byte) string {
	t.Helper()
	r := upload(t, srv, token, contentType, fileName, data).expect(t, http.StatusOK, "")
	return mxcPath(t, r.str("content_uri"))
}

// storedFiles counts the content files in the media store.
func storedFiles(t testing.TB, srv *testserver.Server) int {
	t.Helper()
	return srv.MediaFiles()
}

func randomBytes(t testing.TB, n int) []byte {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return b
}

func TestMediaRoundTrip(t *testing.T) {
	srv := testserver.Start(t)
	alice := srv.Register("alice", "password1").AccessToken

	cfg := get(t, srv, mediaV1+"/config", alice).expect(t, http.StatusOK, "")
	if cfg.Body["m.upload.size"] != float64(50<<20) {
		t.Fatalf("config = %s", cfg.Raw)
	}
	get(t, srv, mediaLegacy+"/config", alice).expect(t, http.StatusOK, "")

	text := []byte("hello, media\n")
	// Binary, and larger than http.max_request_body_bytes (4 MiB): media
	// uploads have their own limit.
	bin := randomBytes(t, 5<<20)
	for _, tc := range []struct {
		ctype, name string
		data        []byte
		wantType    string
		wantDisp    string
	}{
		{"text/plain", "notes.txt", text, "text/plain; charset=UTF-8", "inline; filename=notes.txt"},
		{"application/octet-stream", "blob.bin", bin, "application/octet-stream", "attachment; filename=blob.bin"},
		{"", "", text, "application/octet-stream", "attachment"},
	} {
		id := uploadOK(t, srv, alice, tc.ctype, tc.name, tc.data)
		r := get(t, srv, mediaV1+"/download/"+id, alice)
		if r.Status != http.StatusOK || !bytes.Equal(r.Raw, tc.data) {
			t.Fatalf("download %s: status %d, %d bytes, want %d", id, r.Status, len(r.Raw), len(tc.data))
		}
		h := r.Header
		for k, want := range map[string]string{
			"Content-Type":                 tc.wantType,
			"Content-Disposition":          tc.wantDisp,
			"Content-Security-Policy":      "sandbox; default-src 'none'; script-src 'none'; plugin-types application/pdf; style-src 'unsafe-inline'; media-src 'self'; object-src 'self';",
			"Cross-Origin-Resource-Policy": "cross-origin",
			"X-Content-Type-Options":       "nosniff",
			"Access-Control-Allow-Origin":  "*",
		} {
			if got := h.Get(k); got != want {
				t.Errorf("%s: %s = %q, want %q", tc.name, k, got, want)
			}
		}
		if !strings.Contains(h.Get("Cache-Control"), "immutable") || len(h.Get("ETag")) != 66 {
			t.Errorf("Cache-Control %q, ETag %q", h.Get("Cache-Control"), h.Get("ETag"))
		}
		// The file name in the path overrides the stored one.
		r = get(t, srv, mediaV1+"/download/"+id+"/other.txt", alice)
		if r.Status != http.StatusOK || !strings.HasSuffix(r.Header.Get("Content-Disposition"), "; filename=other.txt") {
			t.Fatalf("download with name: %d %q", r.Status, r.Header.Get("Content-Disposition"))
		}
	}
}

func TestMediaIdenticalUploadsShareAFile(t *testing.T) {
	srv := testserver.Start(t)
	alice := srv.Register("alice", "password1").AccessToken
	bob := srv.Register("bob", "password1").AccessToken
	data := randomBytes(t, 100_000)
	a := uploadOK(t, srv, alice, "application/octet-stream", "a", data)
	b := uploadOK(t, srv, bob, "image/png", "b.png", data)
	if a == b {
		t.Fatalf("two uploads got the same media ID %s", a)
	}
	if n := storedFiles(t, srv); n != 1 {
		t.Fatalf("%d files stored, want 1", n)
	}
	// Each ID keeps its own metadata.
	if ct := get(t, srv, mediaV1+"/download/"+b, alice).Header.Get("Content-Type"); ct != "image/png" {
		t.Fatalf("Content-Type = %q", ct)
	}
}

func TestMediaAsyncUpload(t *testing.T) {
	srv := testserver.Start(t, func(c *config.Config) { c.Media.MaxPendingUploadsPerUser = 3 })
	alice := srv.Register("alice", "password1").AccessToken
	bob := srv.Register("bob", "password1").AccessToken

	before := time.Now()
	cr := post(t, srv, "/_matrix/media/v1/create", alice, map[string]any{}).expect(t, http.StatusOK, "")
	exp, _ := cr.Body["unused_expires_at"].(float64)
	if d := time.UnixMilli(int64(exp)).Sub(before); d < 23*time.Hour || d > 25*time.Hour {
		t.Fatalf("unused_expires_at is %v away: %s", d, cr.Raw)
	}
	id := mxcPath(t, cr.str("content_uri"))

	get(t, srv, mediaV1+"/download/"+id+"?timeout_ms=100", alice).expect(t, http.StatusGatewayTimeout, "M_NOT_YET_UPLOADED")

	data := []byte("late content")
	putMedia := func(token, id string) resp {
		return do(t, srv, req{Method: http.MethodPut, Path: mediaLegacy + "/upload/" + id + "?filename=late.txt",
			Token: token, Body: data, Headers: map[string]string{"Content-Type": "text/plain"}})
	}
	putMedia(bob, id).expect(t, http.StatusForbidden, "M_FORBIDDEN")

	// A download waiting for the content gets it once it arrives.
	var wg sync.WaitGroup
	var waited resp
	var waitErr error
	wg.Add(1)
	go func() {
		defer wg.Done()
		waited, waitErr = tryDo(srv, req{Method: http.MethodGet, Path: mediaV1 + "/download/" + id + "?timeout_ms=10000", Token: alice})
	}()
	time.Sleep(200 * time.Millisecond)
	putMedia(alice, id).expect(t, http.StatusOK, "")
	wg.Wait()
	if waitErr != nil || waited.Status != http.StatusOK || !bytes.Equal(waited.Raw, data) {
		t.Fatalf("waiting download: %v, %d %q", waitErr, waited.Status, waited.Raw)
	}

	putMedia(alice, id).expect(t, http.StatusConflict, "M_CANNOT_OVERWRITE_MEDIA")
	putMedia(bob, id).expect(t, http.StatusForbidden, "M_FORBIDDEN")
	r := get(t, srv, mediaV1+"/download/"+id, alice)
	if r.Status != http.StatusOK || !bytes.Equal(r.Raw, data) || r.Header.Get("Content-Disposition") != "inline; filename=late.txt" {
		t.Fatalf("download: %d %q %q", r.Status, r.Raw, r.Header.Get("Content-Disposition"))
	}

	putMedia(alice, "tessera.test/nosuchmediaid").expect(t, http.StatusNotFound, "M_NOT_FOUND")
	// Media uploaded in one go cannot be PUT to.
	direct := uploadOK(t, srv, alice, "text/plain", "", data)
	putMedia(alice, direct).expect(t, http.StatusNotFound, "M_NOT_FOUND")

	// At most max_pending_uploads_per_user IDs wait for content.
	for i := 0; i < 3; i++ {
		post(t, srv, "/_matrix/media/v1/create", alice, nil).expect(t, http.StatusOK, "")
	}
	r = post(t, srv, "/_matrix/media/v1/create", alice, nil).expect(t, http.StatusTooManyRequests, "M_LIMIT_EXCEEDED")
	if ms, _ := r.Body["retry_after_ms"].(float64); ms <= 0 {
		t.Fatalf("no retry_after_ms: %s", r.Raw)
	}
	post(t, srv, "/_matrix/media/v1/create", bob, nil).expect(t, http.StatusOK, "")
}

func TestMediaAsyncExpiry(t *testing.T) {
	srv := testserver.Start(t, func(c *config.Config) { c.Media.UnusedMediaIDLifetime = config.Duration(300 * time.Millisecond) })
	alice := srv.Register("alice", "password1").AccessToken
	id := mxcPath(t, post(t, srv, "/_matrix/media/v1/create", alice, nil).expect(t, http.StatusOK, "").str("content_uri"))
	// Waiting past the expiry ends in 404, not 504.
	get(t, srv, mediaV1+"/download/"+id+"?timeout_ms=2000", alice).expect(t, http.StatusNotFound, "M_NOT_FOUND")
	do(t, srv, req{Method: http.MethodPut, Path: mediaLegacy + "/upload/" + id, Token: alice, Body: "x"}).
		expect(t, http.StatusNotFound, "M_NOT_FOUND")
}

func TestMediaTooLarge(t *testing.T) {
	srv := testserver.Start(t, func(c *config.Config) { c.Media.MaxUploadBytes = 1000 })
	alice := srv.Register("alice", "password1").AccessToken
	r := get(t, srv, mediaV1+"/config", alice).expect(t, http.StatusOK, "")
	if r.Body["m.upload.size"] != float64(1000) {
		t.Fatalf("config: %s", r.Raw)
	}
	// With a Content-Length, and streamed without one.
	upload(t, srv, alice, "text/plain", "big", randomBytes(t, 1001)).expect(t, http.StatusRequestEntityTooLarge, "M_TOO_LARGE")
	upload(t, srv, alice, "text/plain", "big", io.MultiReader(bytes.NewReader(randomBytes(t, 5000)))).
		expect(t, http.StatusRequestEntityTooLarge, "M_TOO_LARGE")
	id := mxcPath(t, post(t, srv, "/_matrix/media/v1/create", alice, nil).expect(t, http.StatusOK, "").str("content_uri"))
	do(t, srv, req{Method: http.MethodPut, Path: mediaLegacy + "/upload/" + id, Token: alice,
		Body: io.MultiReader(bytes.NewReader(randomBytes(t, 1500)))}).expect(t, http.StatusRequestEntityTooLarge, "M_TOO_LARGE")
	if n := storedFiles(t, srv); n != 0 {
		t.Fatalf("%d files stored after refused uploads", n)
	}
	// Exactly at the limit is fine, and the ID refused above still takes it.
	uploadOK(t, srv, alice, "text/plain", "", randomBytes(t, 1000))
	do(t, srv, req{Method: http.MethodPut, Path: mediaLegacy + "/upload/" + id, Token: alice, Body: "small"}).
		expect(t, http.StatusOK, "")
}

func TestMediaBadRequests(t *testing.T) {
	srv := testserver.Start(t)
	alice := srv.Register("alice", "password1").AccessToken

	for _, path := range []string{
		"/download/tessera.test/nosuchmediaid",
		"/download/tessera.test/bad%21id",
		"/download/tessera.test/" + strings.Repeat("a", 300),
		"/download/other.example/somemediaid", // no federation yet
		"/download/other.example/somemediaid?allow_remote=false&allow_redirect=true",
	} {
		get(t, srv, mediaV1+path, alice).expect(t, http.StatusNotFound, "M_NOT_FOUND")
	}
	get(t, srv, mediaV1+"/download/tessera.test/x?timeout_ms=soon", alice).expect(t, http.StatusBadRequest, "M_INVALID_PARAM")

	id := uploadOK(t, srv, alice, "text/plain", "", []byte("secret"))
	get(t, srv, mediaV1+"/download/"+id, "").expect(t, http.StatusUnauthorized, "M_MISSING_TOKEN")
	get(t, srv, mediaV1+"/download/"+id, "nope").expect(t, http.StatusUnauthorized, "M_UNKNOWN_TOKEN")
	upload(t, srv, "", "text/plain", "", "x").expect(t, http.StatusUnauthorized, "M_MISSING_TOKEN")
	post(t, srv, "/_matrix/media/v1/create", "", nil).expect(t, http.StatusUnauthorized, "M_MISSING_TOKEN")

	get(t, srv, mediaV1+"/preview_url?url=https%3A%2F%2Fexample.org", alice).expect(t, http.StatusNotFound, "M_UNRECOGNIZED")
	get(t, srv, mediaLegacy+"/preview_url?url=https%3A%2F%2Fexample.org", alice).expect(t, http.StatusNotFound, "M_UNRECOGNIZED")
}

func TestMediaRangeAndETag(t *testing.T) {
	srv := testserver.Start(t)
	alice := srv.Register("alice", "password1").AccessToken
	data := randomBytes(t, 10_000)
	id := uploadOK(t, srv, alice, "video/mp4", "clip.mp4", data)

	r := do(t, srv, req{Method: http.MethodGet, Path: mediaV1 + "/download/" + id, Token: alice,
		Headers: map[string]string{"Range": "bytes=100-199"}})
	if r.Status != http.StatusPartialContent || !bytes.Equal(r.Raw, data[100:200]) ||
		r.Header.Get("Content-Range") != "bytes 100-199/10000" {
		t.Fatalf("range: %d, %d bytes, Content-Range %q", r.Status, len(r.Raw), r.Header.Get("Content-Range"))
	}
	etag := r.Header.Get("ETag")
	r = do(t, srv, req{Method: http.MethodGet, Path: mediaV1 + "/download/" + id, Token: alice,
		Headers: map[string]string{"If-None-Match": etag}})
	if r.Status != http.StatusNotModified || len(r.Raw) != 0 {
		t.Fatalf("If-None-Match: %d, %d bytes", r.Status, len(r.Raw))
	}
	r = do(t, srv, req{Method: http.MethodGet, Path: mediaV1 + "/download/" + id, Token: alice,
		Headers: map[string]string{"If-None-Match": `"other"`}})
	if r.Status != http.StatusOK || !bytes.Equal(r.Raw, data) {
		t.Fatalf("other ETag: %d", r.Status)
	}
}

func TestMediaContentDisposition(t *testing.T) {
	srv := testserver.Start(t)
	alice := srv.Register("alice", "password1").AccessToken
	for _, tc := range []struct{ ctype, name, want string }{
		{"text/html", `evil "page";.html`, `attachment; filename*=utf-8''evil%20%22page%22%3B.html`},
		{"image/svg+xml", "x.svg", "attachment; filename=x.svg"},
		{"image/png", "ünï cødé\r\n.png", `inline; filename*=utf-8''%C3%BCn%C3%AF%20c%C3%B8d%C3%A9%0D%0A.png`},
		{"IMAGE/PNG; foo=bar", "a.png", "inline; filename=a.png"},
		{"text/plain; charset=latin1", "", "inline"},
	} {
		id := uploadOK(t, srv, alice, tc.ctype, tc.name, []byte("<script>alert(1)</script>"))
		r := get(t, srv, mediaV1+"/download/"+id, alice)
		if got := r.Header.Get("Content-Disposition"); r.Status != http.StatusOK || got != tc.want {
			t.Errorf("%s %q: %d Content-Disposition %q, want %q", tc.ctype, tc.name, r.Status, got, tc.want)
		}
		if got := r.Header.Get("Content-Type"); !strings.HasPrefix(got, tc.ctype) {
			t.Errorf("Content-Type %q, want %q", got, tc.ctype)
		}
	}
}

func TestMediaLegacyDownloadFrozen(t *testing.T) {
	srv := testserver.Start(t)
	alice := srv.Register("alice", "password1").AccessToken
	id := uploadOK(t, srv, alice, "text/plain", "", []byte("new media"))
	get(t, srv, mediaLegacy+"/download/"+id, "").expect(t, http.StatusNotFound, "M_NOT_FOUND")
	get(t, srv, "/_matrix/media/r0/download/"+id+"/name.txt", alice).expect(t, http.StatusNotFound, "M_NOT_FOUND")
	// The freeze point is recorded once: a restart does not move it.
	srv.Restart()
	get(t, srv, mediaLegacy+"/download/"+id, "").expect(t, http.StatusNotFound, "M_NOT_FOUND")
	if r := get(t, srv, mediaV1+"/download/"+id, alice); r.Status != http.StatusOK {
		t.Fatalf("authenticated download after restart: %d", r.Status)
	}
}

func TestMediaLegacyDownloadBeforeCutoff(t *testing.T) {
	cutoff := time.Now().Add(time.Hour).UTC().Format(time.RFC3339)
	srv := testserver.Start(t, func(c *config.Config) { c.Media.LegacyUnauthenticatedCutoff = cutoff })
	alice := srv.Register("alice", "password1").AccessToken
	data := []byte("old enough")
	id := uploadOK(t, srv, alice, "text/plain", "old.txt", data)
	for _, path := range []string{mediaLegacy + "/download/" + id, "/_matrix/media/r0/download/" + id + "/x.txt"} {
		r := get(t, srv, path, "")
		if r.Status != http.StatusOK || !bytes.Equal(r.Raw, data) || r.Header.Get("X-Content-Type-Options") != "nosniff" {
			t.Fatalf("legacy download %s: %d %q", path, r.Status, r.Raw)
		}
	}
	// The authenticated endpoint still needs a token.
	get(t, srv, mediaV1+"/download/"+id, "").expect(t, http.StatusUnauthorized, "M_MISSING_TOKEN")
}
