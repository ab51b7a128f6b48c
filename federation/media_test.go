package federation_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"image"
	"image/color"
	"image/png"
	"io"
	"mime"
	"mime/multipart"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/matrix-org/gomatrixserverlib/fclient"
	"maunium.net/go/mautrix"

	"github.com/tessera-hs/tessera/internal/signingkey"
	"github.com/tessera-hs/tessera/internal/testserver"
)

// testPNG is a w×h gradient.
func testPNG(t *testing.T, w, h int) []byte {
	t.Helper()
	m := image.NewNRGBA(image.Rect(0, 0, w, h))
	for y := range h {
		for x := range w {
			m.SetNRGBA(x, y, color.NRGBA{uint8(x * 255 / w), uint8(y * 255 / h), 0x80, 0xff})
		}
	}
	var b bytes.Buffer
	if err := png.Encode(&b, m); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// mediaGet is an authenticated (token != "") or legacy client request.
func mediaGet(t *testing.T, c *mautrix.Client, base, path, token string) (*http.Response, []byte) {
	t.Helper()
	resp, body, err := mediaFetch(c, base, path, token)
	if err != nil {
		t.Fatal(err)
	}
	return resp, body
}

// mediaFetch is mediaGet for goroutines, which must not call t.Fatal.
func mediaFetch(c *mautrix.Client, base, path, token string) (*http.Response, []byte, error) {
	req, err := http.NewRequest(http.MethodGet, base+path, nil)
	if err != nil {
		return nil, nil, err
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := c.Client.Do(req)
	if err != nil {
		return nil, nil, fmt.Errorf("GET %s: %w", path, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, nil, fmt.Errorf("GET %s: read: %w", path, err)
	}
	return resp, body, nil
}

func wantErrcode(t *testing.T, what string, resp *http.Response, body []byte, status int, code string) {
	t.Helper()
	var e struct {
		ErrCode string `json:"errcode"`
	}
	_ = json.Unmarshal(body, &e)
	if resp.StatusCode != status || e.ErrCode != code {
		t.Fatalf("%s: %d %s, want %d %s", what, resp.StatusCode, body, status, code)
	}
}

// readMultipart checks the spec's two-part answer: a JSON object, then the
// content, whose part headers and bytes it returns.
func readMultipart(t *testing.T, resp *http.Response) (map[string][]string, []byte) {
	t.Helper()
	mt, params, err := mime.ParseMediaType(resp.Header.Get("Content-Type"))
	if err != nil || mt != "multipart/mixed" || params["boundary"] == "" {
		t.Fatalf("Content-Type %q, want multipart/mixed with a boundary", resp.Header.Get("Content-Type"))
	}
	mr := multipart.NewReader(resp.Body, params["boundary"])
	meta, err := mr.NextPart()
	if err != nil {
		t.Fatalf("metadata part: %v", err)
	}
	raw, _ := io.ReadAll(meta)
	if meta.Header.Get("Content-Type") != "application/json" || strings.TrimSpace(string(raw)) != "{}" {
		t.Fatalf("metadata part %v %q, want application/json {}", meta.Header, raw)
	}
	part, err := mr.NextPart()
	if err != nil {
		t.Fatalf("content part: %v", err)
	}
	data, err := io.ReadAll(part)
	if err != nil {
		t.Fatalf("content part: %v", err)
	}
	if _, err := mr.NextPart(); err != io.EOF {
		t.Fatalf("more than two parts: %v", err)
	}
	return part.Header, data
}

// TestMediaAcrossServers: a user of B downloads, through B, what a user of
// A uploaded; B fetches it over federation once and serves it from its
// cache afterwards, even with A gone.
func TestMediaAcrossServers(t *testing.T) {
	ctx := context.Background()
	a := testserver.Start(t, testserver.Federation("127.0.0.1"))
	b := testserver.Start(t, testserver.Federation("127.0.0.2"))
	alice := a.Register("alice", "password-alice")
	bob := b.Register("bob", "password-bob")

	img := testPNG(t, 200, 100)
	up, err := alice.UploadBytesWithName(ctx, img, "image/png", "cat.png")
	if err != nil {
		t.Fatal(err)
	}
	if up.ContentURI.Homeserver != a.Config.ServerName {
		t.Fatalf("uploaded to %s", up.ContentURI)
	}
	mediaID := up.ContentURI.FileID
	v1 := "/_matrix/client/v1/media"
	remote := "/" + a.Config.ServerName + "/" + mediaID

	// Several at once: B fetches once for all (media tests count it).
	t.Run("download through B", func(t *testing.T) {
		var wg sync.WaitGroup
		for range 4 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				resp, body, err := mediaFetch(bob, b.URL, v1+"/download"+remote, bob.AccessToken)
				if err != nil {
					t.Error(err)
					return
				}
				if resp.StatusCode != http.StatusOK || !bytes.Equal(body, img) {
					t.Errorf("download: %d, %d bytes (want %d)", resp.StatusCode, len(body), len(img))
					return
				}
				if ct := resp.Header.Get("Content-Type"); ct != "image/png" {
					t.Errorf("Content-Type %q", ct)
				}
				if cd := resp.Header.Get("Content-Disposition"); cd != "inline; filename=cat.png" {
					t.Errorf("Content-Disposition %q", cd)
				}
			}()
		}
		wg.Wait()
	})

	t.Run("thumbnail through B", func(t *testing.T) {
		resp, body := mediaGet(t, bob, b.URL, v1+"/thumbnail"+remote+"?width=32&height=32&method=crop", bob.AccessToken)
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("thumbnail: %d %s", resp.StatusCode, body)
		}
		cfg, _, err := image.DecodeConfig(bytes.NewReader(body))
		if err != nil || cfg.Width != 32 || cfg.Height != 32 {
			t.Fatalf("thumbnail %dx%d, %v; want 32x32", cfg.Width, cfg.Height, err)
		}
	})

	t.Run("unknown remote media", func(t *testing.T) {
		resp, body := mediaGet(t, bob, b.URL, v1+"/download/"+a.Config.ServerName+"/nosuchmedia", bob.AccessToken)
		wantErrcode(t, "unknown media", resp, body, http.StatusNotFound, "M_NOT_FOUND")
		resp, body = mediaGet(t, bob, b.URL, v1+"/thumbnail/"+a.Config.ServerName+"/nosuchmedia?width=32&height=32", bob.AccessToken)
		wantErrcode(t, "unknown media thumbnail", resp, body, http.StatusNotFound, "M_NOT_FOUND")
	})

	t.Run("client authentication", func(t *testing.T) {
		resp, body := mediaGet(t, bob, b.URL, v1+"/download"+remote, "")
		wantErrcode(t, "no token", resp, body, http.StatusUnauthorized, "M_MISSING_TOKEN")
	})

	// The unauthenticated legacy endpoints never fetch: since the media
	// freeze they serve only what was cached before it.
	t.Run("legacy endpoint does not fetch", func(t *testing.T) {
		other, err := alice.UploadBytesWithName(ctx, []byte("text"), "text/plain", "t.txt")
		if err != nil {
			t.Fatal(err)
		}
		resp, body := mediaGet(t, bob, b.URL, "/_matrix/media/v3/download/"+a.Config.ServerName+"/"+other.ContentURI.FileID, "")
		wantErrcode(t, "legacy download", resp, body, http.StatusNotFound, "M_NOT_FOUND")
	})

	t.Run("allow_remote=false does not fetch", func(t *testing.T) {
		other, err := alice.UploadBytesWithName(ctx, []byte("more text"), "text/plain", "u.txt")
		if err != nil {
			t.Fatal(err)
		}
		path := v1 + "/download/" + a.Config.ServerName + "/" + other.ContentURI.FileID
		resp, body := mediaGet(t, bob, b.URL, path+"?allow_remote=false", bob.AccessToken)
		wantErrcode(t, "allow_remote=false", resp, body, http.StatusNotFound, "M_NOT_FOUND")
	})

	t.Run("served from B's cache with A gone", func(t *testing.T) {
		a.Stop()
		resp, body := mediaGet(t, bob, b.URL, v1+"/download"+remote+"/renamed.png", bob.AccessToken)
		if resp.StatusCode != http.StatusOK || !bytes.Equal(body, img) {
			t.Fatalf("cached download: %d %q", resp.StatusCode, body[:min(len(body), 200)])
		}
		if cd := resp.Header.Get("Content-Disposition"); cd != "inline; filename=renamed.png" {
			t.Fatalf("Content-Disposition %q", cd)
		}
		// A new size is made from the cached original.
		resp, body = mediaGet(t, bob, b.URL, v1+"/thumbnail"+remote+"?width=320&height=240", bob.AccessToken)
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("cached thumbnail: %d %s", resp.StatusCode, body)
		}
		// What was never fetched cannot be now.
		resp, body = mediaGet(t, bob, b.URL, v1+"/download/"+a.Config.ServerName+"/nosuchmedia", bob.AccessToken)
		wantErrcode(t, "origin gone", resp, body, http.StatusBadGateway, "M_UNKNOWN")
	})
}

// TestFederationMediaEndpoints drives A's federation media endpoints
// directly, with requests B signs.
func TestFederationMediaEndpoints(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	a := testserver.Start(t, testserver.Federation("127.0.0.1"))
	b := testserver.Start(t, testserver.Federation("127.0.0.2"))
	alice := a.Register("alice", "password-alice")
	img := testPNG(t, 200, 100)
	up, err := alice.UploadBytesWithName(ctx, img, "image/png", "cat.png")
	if err != nil {
		t.Fatal(err)
	}
	mediaID := up.ContentURI.FileID
	fc := b.Server().FederationClient
	key, err := signingkey.Load(b.Config.SigningKeyPath)
	if err != nil {
		t.Fatal(err)
	}
	// signedGet is a GET to A that B signs, query string included.
	signedGet := func(t *testing.T, path string) *http.Response {
		t.Helper()
		req := fclient.NewFederationRequest(http.MethodGet, b.ServerName(), a.ServerName(), path)
		if err := req.Sign(b.ServerName(), key.ID, key.PrivateKey); err != nil {
			t.Fatal(err)
		}
		hr, err := req.HTTPRequest()
		if err != nil {
			t.Fatal(err)
		}
		resp, err := fc.(interface {
			DoHTTPRequest(context.Context, *http.Request) (*http.Response, error)
		}).DoHTTPRequest(ctx, hr)
		if err != nil {
			t.Fatalf("GET %s: %v", path, err)
		}
		t.Cleanup(func() { resp.Body.Close() })
		return resp
	}

	t.Run("download", func(t *testing.T) {
		resp, err := fc.DownloadMedia(ctx, b.ServerName(), a.ServerName(), mediaID)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("status %d", resp.StatusCode)
		}
		h, data := readMultipart(t, resp)
		if !bytes.Equal(data, img) {
			t.Fatalf("content: %d bytes, want %d", len(data), len(img))
		}
		if h["Content-Type"][0] != "image/png" || h["Content-Disposition"][0] != "inline; filename=cat.png" {
			t.Fatalf("content part headers %v", h)
		}
	})

	t.Run("thumbnail", func(t *testing.T) {
		resp := signedGet(t, "/_matrix/federation/v1/media/thumbnail/"+mediaID+"?width=96&height=96&method=crop&animated=false")
		if resp.StatusCode != http.StatusOK {
			body, _ := io.ReadAll(resp.Body)
			t.Fatalf("status %d %s", resp.StatusCode, body)
		}
		h, data := readMultipart(t, resp)
		cfg, format, err := image.DecodeConfig(bytes.NewReader(data))
		if err != nil || cfg.Width != 96 || cfg.Height != 96 || h["Content-Type"][0] != "image/"+format {
			t.Fatalf("thumbnail %dx%d %s (%v), headers %v", cfg.Width, cfg.Height, format, err, h)
		}
	})

	errTests := []struct {
		name, path string
		status     int
		code       string
	}{
		{"unknown media", "/_matrix/federation/v1/media/download/nosuchmedia", 404, "M_NOT_FOUND"},
		{"unknown media thumbnail", "/_matrix/federation/v1/media/thumbnail/nosuchmedia?width=32&height=32", 404, "M_NOT_FOUND"},
		{"thumbnail without size", "/_matrix/federation/v1/media/thumbnail/" + mediaID, 400, "M_MISSING_PARAM"},
		{"thumbnail bad method", "/_matrix/federation/v1/media/thumbnail/" + mediaID + "?width=32&height=32&method=zoom", 400, "M_INVALID_PARAM"},
	}
	for _, tc := range errTests {
		t.Run(tc.name, func(t *testing.T) {
			resp := signedGet(t, tc.path)
			body, _ := io.ReadAll(resp.Body)
			wantErrcode(t, tc.name, resp, body, tc.status, tc.code)
		})
	}

	t.Run("unsigned", func(t *testing.T) {
		insecure := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
			TLSClientConfig: &tls.Config{InsecureSkipVerify: true}, // the test servers' certificates are self-signed
		}}
		for _, p := range []string{"/download/" + mediaID, "/thumbnail/" + mediaID + "?width=32&height=32"} {
			resp, err := insecure.Get(a.FederationURL + "/_matrix/federation/v1/media" + p)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			wantErrcode(t, "unsigned "+p, resp, body, http.StatusUnauthorized, "M_UNAUTHORIZED")
		}
	})
}
