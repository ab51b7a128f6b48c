// Package web is the web client Tessera serves itself: static HTML, CSS
// and ES modules embedded in the binary with go:embed, so that opening the
// server's address in a browser is all the set-up a new user needs. The
// pages speak only the public Matrix API, like any other client; this
// package only serves files, with strict security headers, gzip and
// cache validators.
package web

import (
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"fmt"
	"io/fs"
	"mime"
	"net/http"
	"path"
	"strings"
	"sync"
)

//go:embed static
var static embed.FS

// CSP allows only the server's own scripts and styles (no inline script,
// no eval), images and media from the server or from blob: URLs (media is
// fetched with the access token and shown through object URLs), and no
// framing. connect-src 'self' covers the same-origin WebSocket sync
// stream and the SFU's signalling, which the server proxies under
// /_tessera/livekit.
const csp = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' blob: data:; " +
	"media-src 'self' blob:; font-src 'self'; manifest-src 'self'; connect-src 'self'; base-uri 'none'; " +
	"form-action 'none'; frame-ancestors 'none'"

// file is one embedded file, ready to serve.
type file struct {
	contentType string
	immutable   bool
	// body and its hash are read on first use: a server start (and every
	// test server) only indexes the names.
	root     fs.FS
	name     string
	loadOnce sync.Once
	body     []byte
	etag     string
	// gz is body gzip-compressed, made on the first request that takes
	// gzip: compressing everything up front would cost every server
	// start seconds, for livekit-client alone.
	gzOnce sync.Once
	gz     []byte
}

// load reads the file; embedded files cannot fail to read.
func (f *file) load() {
	f.loadOnce.Do(func() {
		body, err := fs.ReadFile(f.root, f.name)
		if err != nil {
			panic(fmt.Sprintf("web: reading embedded %s: %v", f.name, err))
		}
		sum := sha256.Sum256(body)
		f.body, f.etag = body, `"`+hex.EncodeToString(sum[:12])+`"`
	})
}

// gzipped returns the compressed body, or nil when the file is not worth
// compressing.
func (f *file) gzipped() []byte {
	if !compressible(f.contentType) {
		return nil
	}
	f.load()
	f.gzOnce.Do(func() {
		var buf bytes.Buffer
		zw, _ := gzip.NewWriterLevel(&buf, gzip.DefaultCompression)
		// Writes to a bytes.Buffer do not fail.
		_, _ = zw.Write(f.body)
		_ = zw.Close()
		f.gz = buf.Bytes()
	})
	return f.gz
}

// Client serves the embedded files under a path prefix.
type Client struct {
	prefix string
	files  map[string]*file // by path relative to static/
}

// New indexes the embedded files. prefix is the
// config's web.path ("/" or "/chat/").
func New(prefix string) (*Client, error) {
	c := &Client{prefix: prefix, files: map[string]*file{}}
	root, err := fs.Sub(static, "static")
	if err != nil {
		return nil, fmt.Errorf("web: embedded files: %w", err)
	}
	err = fs.WalkDir(root, ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		f := &file{root: root, name: p, contentType: contentType(p)}
		// Vendored files carry their version in their name (see
		// vendor/refresh.sh), so they never change under one URL.
		f.immutable = strings.HasPrefix(p, "vendor/")
		c.files[p] = f
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("web: loading embedded files: %w", err)
	}
	if c.files["index.html"] == nil {
		return nil, fmt.Errorf("web: index.html missing from the embedded files")
	}
	return c, nil
}

// lookup maps a request path to an embedded file: the prefix itself is
// index.html, anything else must be an embedded file. Paths the client
// does not have are not its business: they fall through to the APIs'
// 404 M_UNRECOGNIZED.
func (c *Client) lookup(p string) *file {
	if !strings.HasPrefix(p, c.prefix) {
		return nil
	}
	rel := strings.TrimPrefix(p, c.prefix)
	if rel == "" || rel == "index.html" {
		return c.files["index.html"]
	}
	if rel != path.Clean(rel) {
		return nil
	}
	return c.files[rel]
}

// bare reports whether p is the prefix without its trailing slash
// ("/chat" for "/chat/"), which people type: it is redirected to the
// prefix, under which the page's relative module paths resolve. (The
// app's own routes are URL fragments, #/room/..., so no other path is
// the app's.)
func (c *Client) bare(p string) bool {
	return c.prefix != "/" && p == strings.TrimSuffix(c.prefix, "/")
}

// Match is a gorilla/mux matcher: GET or HEAD of one of the client's
// files (or of the bare prefix). Registered after the APIs, it can never
// shadow them.
func (c *Client) Match(r *http.Request) bool {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		return false
	}
	return c.bare(r.URL.Path) || c.lookup(r.URL.Path) != nil
}

// ServeHTTP serves a file with the security headers, gzip when the
// browser takes it, and an ETag for revalidation.
func (c *Client) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if c.bare(r.URL.Path) {
		to := c.prefix
		if r.URL.RawQuery != "" {
			to += "?" + r.URL.RawQuery
		}
		http.Redirect(w, r, to, http.StatusMovedPermanently)
		return
	}
	f := c.lookup(r.URL.Path)
	if f == nil {
		http.NotFound(w, r)
		return
	}
	h := w.Header()
	h.Set("Content-Security-Policy", csp)
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("X-Frame-Options", "DENY")
	h.Set("Referrer-Policy", "no-referrer")
	h.Set("Cross-Origin-Opener-Policy", "same-origin")
	h.Set("Permissions-Policy", "camera=(self), microphone=(self), display-capture=(self)")
	h.Set("Content-Type", f.contentType)
	h.Set("Vary", "Accept-Encoding")
	if f.immutable {
		h.Set("Cache-Control", "public, max-age=31536000, immutable")
	} else {
		// The app's own files change with the binary: revalidate.
		h.Set("Cache-Control", "no-cache")
	}
	f.load()
	body, etag := f.body, f.etag
	if gz := f.gzipped(); gz != nil && acceptsGzip(r) {
		// Each encoding is its own representation, with its own tag.
		h.Set("Content-Encoding", "gzip")
		body, etag = gz, strings.TrimSuffix(etag, `"`)+`-gz"`
	}
	h.Set("ETag", etag)
	if match := r.Header.Get("If-None-Match"); match != "" && match == etag {
		h.Del("Content-Encoding")
		w.WriteHeader(http.StatusNotModified)
		return
	}
	h.Set("Content-Length", fmt.Sprint(len(body)))
	if r.Method == http.MethodHead {
		return
	}
	_, _ = w.Write(body)
}

func acceptsGzip(r *http.Request) bool {
	for _, part := range strings.Split(r.Header.Get("Accept-Encoding"), ",") {
		name, q, _ := strings.Cut(strings.TrimSpace(part), ";")
		if strings.EqualFold(strings.TrimSpace(name), "gzip") && strings.ReplaceAll(q, " ", "") != "q=0" {
			return true
		}
	}
	return false
}

func contentType(p string) string {
	switch path.Ext(p) {
	case ".mjs", ".js":
		return "text/javascript; charset=utf-8"
	case ".html":
		return "text/html; charset=utf-8"
	case ".css":
		return "text/css; charset=utf-8"
	case ".svg":
		return "image/svg+xml"
	case ".webmanifest":
		return "application/manifest+json"
	}
	if t := mime.TypeByExtension(path.Ext(p)); t != "" {
		return t
	}
	return "application/octet-stream"
}

func compressible(ct string) bool {
	return strings.HasPrefix(ct, "text/") || strings.Contains(ct, "json") || strings.Contains(ct, "svg")
}
