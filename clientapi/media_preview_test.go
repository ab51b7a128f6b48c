package clientapi_test

import (
	"bytes"
	"fmt"
	"image"
	"image/color"
	"image/png"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tessera-hs/tessera/internal/config"
	"github.com/tessera-hs/tessera/internal/testserver"
)

// previews turns URL previews on, allowing the CIDRs given (the tests'
// targets listen on loopback, which is otherwise refused).
func previews(allow ...string) testserver.Option {
	return func(c *config.Config) {
		c.URLPreviews.Enabled = true
		c.URLPreviews.IPRangeWhitelist = allow
		c.URLPreviews.Timeout = config.Duration(time.Second)
		c.URLPreviews.MaxResponseBytes = 64 << 10
	}
}

func previewPath(prefix, target string) string {
	return prefix + "/preview_url?url=" + url.QueryEscape(target)
}

// previewTarget is a web server for previews to fetch, counting requests
// by path.
type previewTarget struct {
	*httptest.Server
	hits map[string]*atomic.Int32
	png  []byte
}

func (p *previewTarget) count(path string) int32 { return p.hits[path].Load() }

func previewPNG(t testing.TB) []byte {
	img := image.NewRGBA(image.Rect(0, 0, 3, 2))
	img.Set(1, 1, color.RGBA{R: 255, A: 255})
	var buf bytes.Buffer
	if err := png.Encode(&buf, img); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// startPreviewTarget listens on addr ("127.0.0.1:0" etc.).
func startPreviewTarget(t testing.TB, addr string) *previewTarget {
	t.Helper()
	l, err := net.Listen("tcp", addr)
	if err != nil {
		t.Skipf("cannot listen on %s: %v", addr, err)
	}
	p := &previewTarget{hits: map[string]*atomic.Int32{}, png: previewPNG(t)}
	mux := http.NewServeMux()
	handle := func(path string, h http.HandlerFunc) {
		p.hits[path] = new(atomic.Int32)
		mux.HandleFunc(path, func(w http.ResponseWriter, r *http.Request) {
			p.hits[path].Add(1)
			h(w, r)
		})
	}
	handle("/page", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		fmt.Fprint(w, `<!doctype html><html><head><title>Ignored title</title>
<meta property="og:title" content="The OG title">
<meta name="og:description" content="An OG description">
<meta property="og:image" content="/img.png">
<meta property="og:image:width" content="9999">
</head><body><p>hi</p></body></html>`)
	})
	handle("/img.png", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "image/png")
		w.Write(p.png)
	})
	handle("/titled", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html")
		fmt.Fprint(w, "<html><head><title>\n  A  plain\ttitle </title><meta name=\"description\" content=\"Plain description\"></head><body></body></html>")
	})
	handle("/big", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html")
		w.Write(bytes.Repeat([]byte("<p>padding</p>"), 20<<10))
	})
	handle("/slow", func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-r.Context().Done():
		case <-time.After(5 * time.Second):
		}
	})
	handle("/text", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/octet-stream")
		w.Write([]byte("just bytes"))
	})
	p.Server = httptest.NewUnstartedServer(mux)
	p.Listener.Close()
	p.Listener = l
	p.Start()
	t.Cleanup(p.Close)
	return p
}

func TestPreviewURLDisabled(t *testing.T) {
	srv := testserver.Start(t)
	alice := srv.Register("alice", "password1").AccessToken
	for _, prefix := range []string{mediaV1, mediaLegacy, "/_matrix/media/r0"} {
		get(t, srv, previewPath(prefix, "https://example.org/"), alice).expect(t, http.StatusNotFound, "M_UNRECOGNIZED")
	}
}

// Without a whitelist, internal addresses are refused however they are
// named, and nothing is fetched.
func TestPreviewURLRefusesInternalAddresses(t *testing.T) {
	target := startPreviewTarget(t, "127.0.0.1:0")
	_, port, _ := net.SplitHostPort(target.Listener.Addr().String())
	srv := testserver.Start(t, previews())
	alice := srv.Register("alice", "password1").AccessToken
	for _, u := range []string{
		"http://127.0.0.1:" + port + "/page",
		"http://localhost:" + port + "/page", // a name resolving to loopback
		"http://[::1]:" + port + "/page",
		"http://[::ffff:127.0.0.1]:" + port + "/page",
		"http://10.1.2.3/page",
		"http://192.168.0.1/page",
		"http://169.254.169.254/latest/meta-data/",
		"http://0.0.0.0:" + port + "/page",
	} {
		get(t, srv, previewPath(mediaV1, u), alice).expect(t, http.StatusForbidden, "M_FORBIDDEN")
	}
	if n := target.count("/page"); n != 0 {
		t.Fatalf("refused target was fetched %d times", n)
	}
}

// The redirect re-check: server A, on 127.0.0.2 (whitelisted), redirects
// to the target on 127.0.0.1 (not whitelisted). A is reachable (its own
// page previews), the redirect is refused and the target never hit.
func TestPreviewURLRefusesRedirectToInternalAddress(t *testing.T) {
	target := startPreviewTarget(t, "127.0.0.1:0")
	a := startPreviewTarget(t, "127.0.0.2:0")
	redirector := httptest.NewUnstartedServer(http.RedirectHandler(target.URL+"/page", http.StatusFound))
	redirector.Listener.Close()
	l, err := net.Listen("tcp", "127.0.0.2:0")
	if err != nil {
		t.Skipf("cannot listen on 127.0.0.2: %v", err)
	}
	redirector.Listener = l
	redirector.Start()
	defer redirector.Close()

	srv := testserver.Start(t, previews("127.0.0.2/32"))
	alice := srv.Register("alice", "password1").AccessToken
	ok := get(t, srv, previewPath(mediaV1, a.URL+"/titled"), alice).expect(t, http.StatusOK, "")
	if ok.str("og:title") != "A plain title" {
		t.Fatalf("whitelisted server: %s", ok.Raw)
	}
	get(t, srv, previewPath(mediaV1, redirector.URL+"/"), alice).expect(t, http.StatusForbidden, "M_FORBIDDEN")
	if n := target.count("/page"); n != 0 {
		t.Fatalf("redirect target was fetched %d times", n)
	}
}

func TestPreviewURL(t *testing.T) {
	target := startPreviewTarget(t, "127.0.0.1:0")
	srv := testserver.Start(t, previews("127.0.0.1/32"))
	alice := srv.Register("alice", "password1").AccessToken

	page := target.URL + "/page"
	r := get(t, srv, previewPath(mediaV1, page), alice).expect(t, http.StatusOK, "")
	if r.str("og:title") != "The OG title" || r.str("og:description") != "An OG description" {
		t.Fatalf("preview: %s", r.Raw)
	}
	if r.Body["matrix:image:size"] != float64(len(target.png)) || r.str("og:image:type") != "image/png" ||
		r.Body["og:image:width"] != float64(3) || r.Body["og:image:height"] != float64(2) {
		t.Fatalf("image fields: %s", r.Raw)
	}
	mxc := r.str("og:image")
	dl := get(t, srv, mediaV1+"/download/"+mxcPath(t, mxc), alice)
	if dl.Status != http.StatusOK || !bytes.Equal(dl.Raw, target.png) {
		t.Fatalf("download of og:image %s: %d", mxc, dl.Status)
	}

	// Cached: neither the page nor the image is fetched again, at either
	// prefix; ts in the past within the lifetime is served too.
	again := get(t, srv, previewPath(mediaLegacy, page), alice).expect(t, http.StatusOK, "")
	if again.str("og:image") != mxc {
		t.Fatalf("cached preview differs: %s", again.Raw)
	}
	past := fmt.Sprintf("&ts=%d", time.Now().Add(-time.Minute).UnixMilli())
	get(t, srv, previewPath(mediaV1, page)+past, alice).expect(t, http.StatusOK, "")
	if target.count("/page") != 1 || target.count("/img.png") != 1 {
		t.Fatalf("fetches: page %d, image %d; want 1 each", target.count("/page"), target.count("/img.png"))
	}

	// <title> and meta description stand in for missing og tags.
	r = get(t, srv, previewPath(mediaV1, target.URL+"/titled"), alice).expect(t, http.StatusOK, "")
	if r.str("og:title") != "A plain title" || r.str("og:description") != "Plain description" || r.Body["og:image"] != nil {
		t.Fatalf("fallbacks: %s", r.Raw)
	}
	// An image URL is its own og:image.
	r = get(t, srv, previewPath(mediaV1, target.URL+"/img.png"), alice).expect(t, http.StatusOK, "")
	if !strings.HasPrefix(r.str("og:image"), "mxc://") || r.Body["matrix:image:size"] != float64(len(target.png)) {
		t.Fatalf("image preview: %s", r.Raw)
	}
	// Other content: an empty preview.
	r = get(t, srv, previewPath(mediaV1, target.URL+"/text"), alice).expect(t, http.StatusOK, "")
	if len(r.Body) != 0 {
		t.Fatalf("non-HTML preview: %s", r.Raw)
	}

	// Failures.
	if r := get(t, srv, previewPath(mediaV1, target.URL+"/big"), alice); r.Status != http.StatusBadGateway {
		t.Fatalf("too large: %d %s", r.Status, r.Raw)
	}
	start := time.Now()
	if r := get(t, srv, previewPath(mediaV1, target.URL+"/slow"), alice); r.Status != http.StatusGatewayTimeout {
		t.Fatalf("timeout: %d %s", r.Status, r.Raw)
	}
	if d := time.Since(start); d > 4*time.Second {
		t.Fatalf("timeout took %v", d)
	}
	get(t, srv, previewPath(mediaV1, "ftp://127.0.0.1/x"), alice).expect(t, http.StatusBadRequest, "M_INVALID_PARAM")
	get(t, srv, previewPath(mediaV1, "file:///etc/passwd"), alice).expect(t, http.StatusBadRequest, "M_INVALID_PARAM")
	get(t, srv, mediaV1+"/preview_url", alice).expect(t, http.StatusBadRequest, "M_MISSING_PARAM")
	get(t, srv, previewPath(mediaV1, page)+"&ts=soon", alice).expect(t, http.StatusBadRequest, "M_INVALID_PARAM")
	get(t, srv, previewPath(mediaV1, page), "").expect(t, http.StatusUnauthorized, "M_MISSING_TOKEN")
	get(t, srv, previewPath(mediaLegacy, page), "").expect(t, http.StatusUnauthorized, "M_MISSING_TOKEN")
}
