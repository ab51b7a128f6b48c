package media

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"mime/multipart"
	"net/http"
	"net/http/httptest"
	"net/textproto"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/matrix-org/gomatrixserverlib/spec"
)

const remoteOrigin spec.ServerName = "remote.test"

// fakeFed stands in for the federation client: download answers the
// signed v1 endpoint, legacy the matrix:// fallback.
type fakeFed struct {
	downloads, legacies atomic.Int32
	download            func(mediaID string) (*http.Response, error)
	legacy              func(req *http.Request) (*http.Response, error)
}

func (f *fakeFed) DownloadMedia(_ context.Context, origin, dest spec.ServerName, mediaID string) (*http.Response, error) {
	f.downloads.Add(1)
	if origin != "example.org" || dest != remoteOrigin {
		return nil, fmt.Errorf("download from %s as %s", dest, origin)
	}
	return f.download(mediaID)
}

func (f *fakeFed) DoHTTPRequest(_ context.Context, req *http.Request) (*http.Response, error) {
	f.legacies.Add(1)
	if f.legacy == nil {
		return nil, errors.New("no legacy endpoint")
	}
	return f.legacy(req)
}

// multipartBody is the spec's answer: a JSON part, then the content part
// with the given headers; truncated leaves out the closing boundary.
func multipartBody(t testing.TB, content []byte, header textproto.MIMEHeader, truncated bool) *http.Response {
	t.Helper()
	var buf bytes.Buffer
	mw := multipart.NewWriter(&buf)
	meta, _ := mw.CreatePart(textproto.MIMEHeader{"Content-Type": {"application/json"}})
	io.WriteString(meta, "{}")
	part, _ := mw.CreatePart(header)
	part.Write(content)
	if !truncated {
		mw.Close()
	}
	return &http.Response{StatusCode: http.StatusOK, ContentLength: -1,
		Header: http.Header{"Content-Type": {"multipart/mixed; boundary=" + mw.Boundary()}},
		Body:   io.NopCloser(&buf)}
}

func jsonResp(status int, body string) *http.Response {
	return &http.Response{StatusCode: status, ContentLength: int64(len(body)),
		Header: http.Header{"Content-Type": {"application/json"}},
		Body:   io.NopCloser(bytes.NewBufferString(body))}
}

func remoteSvc(t *testing.T, cfg Config, fed *fakeFed) *Service {
	t.Helper()
	s := svcStart(t, t.TempDir(), cfg)
	s.SetFederation(fed, func(n spec.ServerName) bool { return n != "denied.test" }, nil)
	return s
}

func readMedia(t *testing.T, s *Service, m *Media) []byte {
	t.Helper()
	f, err := s.Open(m)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b, err := io.ReadAll(f)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestGetRemoteAnswers(t *testing.T) {
	content := []byte("remote bytes")
	redirect := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		w.Header().Set("Content-Disposition", `attachment; filename="cdn.txt"`)
		w.Write(content)
	}))
	defer redirect.Close()
	part := func(ctype, disp string) textproto.MIMEHeader {
		return textproto.MIMEHeader{"Content-Type": {ctype}, "Content-Disposition": {disp}}
	}
	tests := []struct {
		name     string
		download func(t *testing.T) (*http.Response, error)
		legacy   func(req *http.Request) (*http.Response, error)
		// what is served, or the error
		ctype, filename  string
		status           int
		code             string
		legacyCalls      int32
		cachedAfterwards bool
	}{
		{name: "multipart", ctype: "image/png", filename: "cat picture.png", cachedAfterwards: true,
			download: func(t *testing.T) (*http.Response, error) {
				return multipartBody(t, content, part("image/png", `inline; filename*=utf-8''cat%20picture.png`), false), nil
			}},
		{name: "no content type", ctype: "application/octet-stream", cachedAfterwards: true,
			download: func(t *testing.T) (*http.Response, error) {
				return multipartBody(t, content, textproto.MIMEHeader{}, false), nil
			}},
		{name: "redirect", ctype: "text/plain", filename: "cdn.txt", cachedAfterwards: true,
			download: func(t *testing.T) (*http.Response, error) {
				return multipartBody(t, nil, textproto.MIMEHeader{"Location": {redirect.URL + "/x"}}, false), nil
			}},
		{name: "legacy fallback", ctype: "text/plain", filename: "old.txt", legacyCalls: 1, cachedAfterwards: true,
			download: func(t *testing.T) (*http.Response, error) {
				return jsonResp(http.StatusNotFound, `{"errcode":"M_UNRECOGNIZED","error":"Unrecognized request"}`), nil
			},
			legacy: func(req *http.Request) (*http.Response, error) {
				want := "matrix://remote.test/_matrix/media/v3/download/remote.test/abc?allow_remote=false"
				if req.URL.String() != want || req.Header.Get("Authorization") != "" {
					return nil, fmt.Errorf("legacy request %s", req.URL)
				}
				r := jsonResp(http.StatusOK, string(content))
				r.Header.Set("Content-Type", "text/plain")
				r.Header.Set("Content-Disposition", "attachment; filename=old.txt")
				return r, nil
			}},
		{name: "legacy fallback not found", status: 404, code: "M_NOT_FOUND", legacyCalls: 1,
			download: func(t *testing.T) (*http.Response, error) {
				return jsonResp(http.StatusBadRequest, `{"errcode":"M_UNRECOGNIZED","error":"Unrecognized request"}`), nil
			},
			legacy: func(req *http.Request) (*http.Response, error) {
				return jsonResp(http.StatusNotFound, `{"errcode":"M_NOT_FOUND","error":"Not found"}`), nil
			}},
		{name: "not found", status: 404, code: "M_NOT_FOUND",
			download: func(t *testing.T) (*http.Response, error) {
				return jsonResp(http.StatusNotFound, `{"errcode":"M_NOT_FOUND","error":"Not found"}`), nil
			}},
		{name: "not yet uploaded", status: 504, code: "M_NOT_YET_UPLOADED",
			download: func(t *testing.T) (*http.Response, error) {
				return jsonResp(http.StatusGatewayTimeout, `{"errcode":"M_NOT_YET_UPLOADED","error":"later"}`), nil
			}},
		{name: "too large while streaming", status: 502, code: "M_TOO_LARGE",
			download: func(t *testing.T) (*http.Response, error) {
				return multipartBody(t, bytes.Repeat([]byte("x"), 101), part("text/plain", "inline"), false), nil
			}},
		{name: "too large by length", status: 502, code: "M_TOO_LARGE", legacyCalls: 1,
			download: func(t *testing.T) (*http.Response, error) {
				return jsonResp(http.StatusNotFound, `{"errcode":"M_UNRECOGNIZED"}`), nil
			},
			legacy: func(req *http.Request) (*http.Response, error) {
				return jsonResp(http.StatusOK, string(bytes.Repeat([]byte("x"), 101))), nil
			}},
		{name: "truncated", status: 502, code: "M_UNKNOWN",
			download: func(t *testing.T) (*http.Response, error) {
				return multipartBody(t, content, part("text/plain", "inline"), true), nil
			}},
		{name: "not multipart", status: 502, code: "M_UNKNOWN",
			download: func(t *testing.T) (*http.Response, error) {
				return jsonResp(http.StatusOK, `{}`), nil
			}},
		{name: "redirect elsewhere than http", status: 502, code: "M_UNKNOWN",
			download: func(t *testing.T) (*http.Response, error) {
				return multipartBody(t, nil, textproto.MIMEHeader{"Location": {"file:///etc/passwd"}}, false), nil
			}},
		{name: "unreachable", status: 502, code: "M_UNKNOWN",
			download: func(t *testing.T) (*http.Response, error) { return nil, errors.New("connection refused") }},
		{name: "server error", status: 502, code: "M_UNKNOWN",
			download: func(t *testing.T) (*http.Response, error) {
				return jsonResp(http.StatusInternalServerError, `{"errcode":"M_UNKNOWN"}`), nil
			}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ctx := context.Background()
			fed := &fakeFed{download: func(string) (*http.Response, error) { return tc.download(t) }, legacy: tc.legacy}
			s := remoteSvc(t, Config{MaxUploadBytes: 100}, fed)
			m, err := s.GetRemote(ctx, remoteOrigin, "abc", RemoteOptions{})
			if tc.status != 0 {
				svcWantErr(t, err, tc.status, tc.code)
			} else {
				if err != nil {
					t.Fatal(err)
				}
				if m.ContentType != tc.ctype || m.UploadName != tc.filename || m.ServerName != remoteOrigin || m.MediaID != "abc" {
					t.Fatalf("got %+v, want type %q name %q", m, tc.ctype, tc.filename)
				}
				if got := readMedia(t, s, m); !bytes.Equal(got, content) || m.Size != int64(len(content)) {
					t.Fatalf("content %q (size %d), want %q", got, m.Size, content)
				}
			}
			if n := fed.legacies.Load(); n != tc.legacyCalls {
				t.Fatalf("%d legacy requests, want %d", n, tc.legacyCalls)
			}
			// Nothing is fetched again once cached; nothing is cached
			// after a failure.
			fed.download = func(string) (*http.Response, error) { return nil, errors.New("gone") }
			_, err = s.GetRemote(ctx, remoteOrigin, "abc", RemoteOptions{CacheOnly: true})
			if tc.cachedAfterwards != (err == nil) {
				t.Fatalf("cached: %v, want %v", err, tc.cachedAfterwards)
			}
			if ents, _ := os.ReadDir(s.files.root + "/tmp"); len(ents) != 0 {
				t.Fatalf("%d temp files left", len(ents))
			}
		})
	}
}

func TestGetRemoteWhenNotToFetch(t *testing.T) {
	tests := []struct {
		name    string
		origin  spec.ServerName
		mediaID string
		opts    RemoteOptions
	}{
		{"cache only", remoteOrigin, "abc", RemoteOptions{CacheOnly: true}},
		{"legacy", remoteOrigin, "abc", RemoteOptions{Legacy: true}},
		{"denied server", "denied.test", "abc", RemoteOptions{}},
		{"bad media ID", remoteOrigin, "a/b", RemoteOptions{}},
		{"bad server name", "bad server", "abc", RemoteOptions{}},
		{"our own name", "example.org", "abc", RemoteOptions{}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			fed := &fakeFed{download: func(string) (*http.Response, error) { return nil, errors.New("must not fetch") }}
			s := remoteSvc(t, Config{}, fed)
			_, err := s.GetRemote(context.Background(), tc.origin, tc.mediaID, tc.opts)
			svcWantErr(t, err, 404, "M_NOT_FOUND")
			if fed.downloads.Load() != 0 {
				t.Fatal("fetched")
			}
		})
	}
	t.Run("no federation", func(t *testing.T) {
		s := svcStart(t, t.TempDir(), Config{})
		_, err := s.GetRemote(context.Background(), remoteOrigin, "abc", RemoteOptions{})
		svcWantErr(t, err, 404, "M_NOT_FOUND")
	})
}

// TestGetRemoteLegacyCutoff: the legacy endpoints serve remote media only
// if it was cached before the freeze.
func TestGetRemoteLegacyCutoff(t *testing.T) {
	ctx := context.Background()
	for _, tc := range []struct {
		name   string
		cutoff time.Time
		served bool
	}{
		{"cached after the freeze", time.Now().Add(-time.Hour), false},
		{"cached before the freeze", time.Now().Add(time.Hour), true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fed := &fakeFed{download: func(string) (*http.Response, error) {
				return multipartBody(t, []byte("x"), textproto.MIMEHeader{"Content-Type": {"text/plain"}}, false), nil
			}}
			s := remoteSvc(t, Config{LegacyCutoff: tc.cutoff}, fed)
			if _, err := s.GetRemote(ctx, remoteOrigin, "abc", RemoteOptions{}); err != nil {
				t.Fatal(err)
			}
			_, err := s.GetRemote(ctx, remoteOrigin, "abc", RemoteOptions{Legacy: true})
			if tc.served != (err == nil) {
				t.Fatalf("legacy: %v, want served %v", err, tc.served)
			}
		})
	}
}

// TestGetRemoteConcurrentFetchesOnce: requests for the same media while
// it is being fetched wait for that fetch.
func TestGetRemoteConcurrentFetchesOnce(t *testing.T) {
	ctx := context.Background()
	release := make(chan struct{})
	fed := &fakeFed{download: func(string) (*http.Response, error) {
		<-release
		return multipartBody(t, []byte("shared"), textproto.MIMEHeader{"Content-Type": {"text/plain"}}, false), nil
	}}
	s := remoteSvc(t, Config{}, fed)

	const n = 8
	var wg sync.WaitGroup
	results := make([]*Media, n)
	errs := make([]error, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			results[i], errs[i] = s.GetRemote(ctx, remoteOrigin, "abc", RemoteOptions{})
		}()
	}
	// A waiter that gives up does not stop the fetch for the others.
	cctx, cancel := context.WithCancel(ctx)
	go func() { time.Sleep(20 * time.Millisecond); cancel() }()
	if _, err := s.GetRemote(cctx, remoteOrigin, "abc", RemoteOptions{}); !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled waiter: %v", err)
	}
	close(release)
	wg.Wait()
	for i := range n {
		if errs[i] != nil || results[i].SHA256 != results[0].SHA256 {
			t.Fatalf("request %d: %v, %+v", i, errs[i], results[i])
		}
	}
	if got := fed.downloads.Load(); got != 1 {
		t.Fatalf("%d downloads, want 1", got)
	}
}

// TestRemoteThumbnail: thumbnails of remote media are made here from the
// cached original and kept.
func TestRemoteThumbnail(t *testing.T) {
	ctx := context.Background()
	png := thumbPNG(t, thumbTestImage(200, 100, 255))
	fed := &fakeFed{download: func(string) (*http.Response, error) {
		return multipartBody(t, png, textproto.MIMEHeader{"Content-Type": {"image/png"}}, false), nil
	}}
	s := remoteSvc(t, Config{}, fed)
	m, err := s.GetRemote(ctx, remoteOrigin, "abc", RemoteOptions{})
	if err != nil {
		t.Fatal(err)
	}
	th, err := s.Thumbnail(ctx, m, 32, 32, "crop", false)
	if err != nil {
		t.Fatal(err)
	}
	f, err := s.OpenThumb(th)
	if err != nil {
		t.Fatal(err)
	}
	data, _ := io.ReadAll(f)
	f.Close()
	if cfg := thumbDecodeConfig(t, data, th.ContentType); cfg.Width != 32 || cfg.Height != 32 {
		t.Fatalf("thumbnail %dx%d, want 32x32", cfg.Width, cfg.Height)
	}
	again, err := s.Thumbnail(ctx, m, 32, 32, "crop", false)
	if err != nil || again.SHA256 != th.SHA256 || !again.Created.Equal(th.Created.Truncate(time.Millisecond)) {
		t.Fatalf("second thumbnail %+v, %v; first %+v", again, err, th)
	}
	var rows int
	if err := s.db.QueryRowContext(ctx, `SELECT COUNT(*) FROM media_remote_thumbnails WHERE origin = $1`, string(remoteOrigin)).Scan(&rows); err != nil || rows != 1 {
		t.Fatalf("%d remote thumbnail rows, %v", rows, err)
	}
}
