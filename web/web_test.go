package web_test

import (
	"compress/gzip"
	"encoding/json"
	"io"
	"net/http"
	"path"
	"regexp"
	"strings"
	"testing"

	"github.com/tessera-hs/tessera/internal/config"
	"github.com/tessera-hs/tessera/internal/testserver"
)

func fetch(t *testing.T, method, url string, header map[string]string) (*http.Response, []byte) {
	t.Helper()
	req, err := http.NewRequest(method, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range header {
		req.Header.Set(k, v)
	}
	// The transport would add Accept-Encoding and decode by itself.
	req.Header.Set("Accept-Encoding", header["Accept-Encoding"])
	resp, err := http.DefaultTransport.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp, body
}

func errcode(body []byte) string {
	var e struct{ Errcode string }
	_ = json.Unmarshal(body, &e)
	return e.Errcode
}

// TestServing checks what the server answers for the client's files and
// that the client never shadows the APIs.
func TestServing(t *testing.T) {
	srv := testserver.Start(t)
	chat := testserver.Start(t, func(c *config.Config) { c.Web.Path = "/chat/" })
	off := testserver.Start(t, func(c *config.Config) { c.Web.Enabled = false })

	cases := []struct {
		name, method, url string
		header            map[string]string
		status            int
		errcode           string
		contentType       string
		cache             string
		gzip              bool
	}{
		{name: "index", method: "GET", url: srv.URL + "/", status: 200, contentType: "text/html; charset=utf-8", cache: "no-cache"},
		{name: "index by name", method: "GET", url: srv.URL + "/index.html", status: 200, contentType: "text/html; charset=utf-8"},
		{name: "HEAD", method: "HEAD", url: srv.URL + "/", status: 200, contentType: "text/html; charset=utf-8"},
		{name: "app module gzip", method: "GET", url: srv.URL + "/js/app.mjs", header: map[string]string{"Accept-Encoding": "gzip, br"},
			status: 200, contentType: "text/javascript; charset=utf-8", cache: "no-cache", gzip: true},
		{name: "gzip refused", method: "GET", url: srv.URL + "/app.css", header: map[string]string{"Accept-Encoding": "gzip;q=0"},
			status: 200, contentType: "text/css; charset=utf-8"},
		{name: "vendored file immutable", method: "GET", url: srv.URL + "/vendor/preact-htm-3.1.1.mjs",
			status: 200, contentType: "text/javascript; charset=utf-8", cache: "public, max-age=31536000, immutable"},
		{name: "unknown file", method: "GET", url: srv.URL + "/nothing.js", status: 404, errcode: "M_UNRECOGNIZED"},
		{name: "POST to the page", method: "POST", url: srv.URL + "/", status: 404, errcode: "M_UNRECOGNIZED"},
		{name: "client API unknown", method: "GET", url: srv.URL + "/_matrix/client/v3/nothing", status: 404, errcode: "M_UNRECOGNIZED"},
		{name: "client API", method: "GET", url: srv.URL + "/_matrix/client/versions", status: 200, contentType: "application/json"},
		{name: "well-known unknown", method: "GET", url: srv.URL + "/.well-known/matrix/nothing", status: 404, errcode: "M_UNRECOGNIZED"},
		{name: "synapse admin", method: "GET", url: srv.URL + "/_synapse/admin/v1/register", status: 200, contentType: "application/json"},
		{name: "under /chat/", method: "GET", url: chat.URL + "/chat/", status: 200, contentType: "text/html; charset=utf-8"},
		{name: "module under /chat/", method: "GET", url: chat.URL + "/chat/js/matrix.mjs", status: 200, contentType: "text/javascript; charset=utf-8"},
		{name: "root when under /chat/", method: "GET", url: chat.URL + "/", status: 404, errcode: "M_UNRECOGNIZED"},
		{name: "disabled", method: "GET", url: off.URL + "/", status: 404, errcode: "M_UNRECOGNIZED"},
		{name: "disabled module", method: "GET", url: off.URL + "/js/app.mjs", status: 404, errcode: "M_UNRECOGNIZED"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			resp, body := fetch(t, tc.method, tc.url, tc.header)
			if resp.StatusCode != tc.status {
				t.Fatalf("status %d, want %d: %s", resp.StatusCode, tc.status, body)
			}
			if tc.errcode != "" && errcode(body) != tc.errcode {
				t.Fatalf("errcode %q, want %q: %s", errcode(body), tc.errcode, body)
			}
			if tc.contentType != "" && !strings.HasPrefix(resp.Header.Get("Content-Type"), tc.contentType) {
				t.Errorf("Content-Type %q, want %q", resp.Header.Get("Content-Type"), tc.contentType)
			}
			if tc.cache != "" && resp.Header.Get("Cache-Control") != tc.cache {
				t.Errorf("Cache-Control %q, want %q", resp.Header.Get("Cache-Control"), tc.cache)
			}
			if got := resp.Header.Get("Content-Encoding") == "gzip"; got != tc.gzip {
				t.Errorf("gzip %v, want %v", got, tc.gzip)
			}
			if tc.gzip {
				zr, err := gzip.NewReader(strings.NewReader(string(body)))
				if err != nil {
					t.Fatal(err)
				}
				plain, err := io.ReadAll(zr)
				if err != nil || !strings.Contains(string(plain), "import") {
					t.Fatalf("gunzip: %v %q", err, plain)
				}
			}
			if tc.status == 200 && strings.HasPrefix(tc.contentType, "text/") {
				csp := resp.Header.Get("Content-Security-Policy")
				for _, want := range []string{"script-src 'self'", "frame-ancestors 'none'", "default-src 'none'"} {
					if !strings.Contains(csp, want) {
						t.Errorf("CSP %q lacks %q", csp, want)
					}
				}
				if strings.Contains(csp, "unsafe-inline") || strings.Contains(csp, "unsafe-eval") {
					t.Errorf("CSP allows inline or eval: %q", csp)
				}
				if resp.Header.Get("X-Content-Type-Options") != "nosniff" {
					t.Errorf("no nosniff")
				}
			}
		})
	}
}

// TestRevalidation: an unchanged file answers 304 to its ETag, per
// encoding.
func TestRevalidation(t *testing.T) {
	srv := testserver.Start(t)
	for _, enc := range []string{"", "gzip"} {
		resp, _ := fetch(t, "GET", srv.URL+"/js/app.mjs", map[string]string{"Accept-Encoding": enc})
		tag := resp.Header.Get("ETag")
		if tag == "" {
			t.Fatalf("%q: no ETag", enc)
		}
		resp, body := fetch(t, "GET", srv.URL+"/js/app.mjs", map[string]string{"Accept-Encoding": enc, "If-None-Match": tag})
		if resp.StatusCode != http.StatusNotModified || len(body) != 0 {
			t.Fatalf("%q: revalidation: %d %q", enc, resp.StatusCode, body)
		}
		resp, _ = fetch(t, "GET", srv.URL+"/js/app.mjs", map[string]string{"Accept-Encoding": enc, "If-None-Match": `"stale"`})
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("%q: stale tag: %d", enc, resp.StatusCode)
		}
	}
}

func TestBadPath(t *testing.T) {
	for _, p := range []string{"chat", "/chat", "/_matrix/", "/_tessera/web/", "/.well-known/x/"} {
		cfg := config.Default()
		cfg.ServerName = "tessera.test"
		cfg.Web.Path = p
		err := cfg.Validate()
		if err == nil || !strings.Contains(err.Error(), "web.path") {
			t.Errorf("web.path %q: %v, want a web.path error", p, err)
		}
	}
}

// TestPreloads: every module index.html preloads is served, and every
// module of the first load is preloaded (a stale name would cost a
// wasted request; a missing one, a round trip).
func TestPreloads(t *testing.T) {
	srv := testserver.Start(t)
	_, index := fetch(t, "GET", srv.URL+"/", nil)
	re := regexp.MustCompile(`<link rel="modulepreload" href="([^"]+)">`)
	preloaded := map[string]bool{}
	for _, m := range re.FindAllStringSubmatch(string(index), -1) {
		preloaded[m[1]] = true
		if resp, body := fetch(t, "GET", srv.URL+"/"+m[1], nil); resp.StatusCode != http.StatusOK {
			t.Errorf("preloaded %s: %d %s", m[1], resp.StatusCode, body)
		}
	}
	// The static imports of the app, followed from js/app.mjs.
	imp := regexp.MustCompile(`(?m)^import .* from "([^"]+)";`)
	seen := map[string]bool{}
	var walk func(p string)
	walk = func(p string) {
		if seen[p] {
			return
		}
		seen[p] = true
		_, body := fetch(t, "GET", srv.URL+"/"+p, nil)
		for _, m := range imp.FindAllStringSubmatch(string(body), -1) {
			walk(path.Clean(path.Join(path.Dir(p), m[1])))
		}
	}
	walk("js/app.mjs")
	for p := range seen {
		if p != "js/app.mjs" && !preloaded[p] {
			t.Errorf("%s is imported on first load but not preloaded", p)
		}
	}
	if len(seen) < 5 {
		t.Errorf("followed only %v", seen)
	}
}

// TestBarePath: with the client under /chat/, /chat (as people type it)
// is redirected to /chat/, keeping the query; other methods and paths
// below it that are not files stay the APIs' 404.
func TestBarePath(t *testing.T) {
	chat := testserver.Start(t, func(c *config.Config) { c.Web.Path = "/chat/" })
	noFollow := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	for _, tc := range []struct {
		method, path string
		status       int
		location     string
	}{
		{"GET", "/chat", http.StatusMovedPermanently, "/chat/"},
		{"HEAD", "/chat", http.StatusMovedPermanently, "/chat/"},
		{"GET", "/chat?lang=en", http.StatusMovedPermanently, "/chat/?lang=en"},
		{"POST", "/chat", http.StatusNotFound, ""},
		{"GET", "/chat/room/x", http.StatusNotFound, ""},
		{"GET", "/chatter", http.StatusNotFound, ""},
	} {
		req, err := http.NewRequest(tc.method, chat.URL+tc.path, nil)
		if err != nil {
			t.Fatal(err)
		}
		resp, err := noFollow.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != tc.status || resp.Header.Get("Location") != tc.location {
			t.Errorf("%s %s: %d Location %q, want %d %q", tc.method, tc.path, resp.StatusCode, resp.Header.Get("Location"), tc.status, tc.location)
		}
		if tc.status == http.StatusNotFound && tc.method != "HEAD" && errcode(body) != "M_UNRECOGNIZED" {
			t.Errorf("%s %s: %s, want M_UNRECOGNIZED", tc.method, tc.path, body)
		}
	}
	// Followed, it is the app.
	resp, err := http.Get(chat.URL + "/chat")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || resp.Request.URL.Path != "/chat/" || !strings.Contains(string(body), "<script") {
		t.Fatalf("/chat followed: %d at %s", resp.StatusCode, resp.Request.URL)
	}
}
