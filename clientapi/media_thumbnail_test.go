package clientapi_test

import (
	"bytes"
	"encoding/binary"
	"hash/crc32"
	"image"
	"image/color"
	"image/png"
	"net/http"
	"testing"

	"github.com/tessera-hs/tessera/internal/testserver"
)

func testPNG(t testing.TB, w, h int) []byte {
	t.Helper()
	img := image.NewRGBA(image.Rect(0, 0, w, h))
	for y := 0; y < h; y++ {
		for x := 0; x < w; x++ {
			img.Set(x, y, color.RGBA{uint8(x), uint8(y), 128, 255})
		}
	}
	var buf bytes.Buffer
	if err := png.Encode(&buf, img); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func TestMediaThumbnail(t *testing.T) {
	srv := testserver.Start(t)
	alice := srv.Register("alice", "password1").AccessToken
	id := uploadOK(t, srv, alice, "image/png", "pic.png", testPNG(t, 400, 300))

	thumb := func(query string) resp {
		return get(t, srv, mediaV1+"/thumbnail/"+id+query, alice)
	}
	for _, tc := range []struct {
		query       string
		wantW, wInH int
	}{
		{"?width=32&height=32&method=crop", 32, 32},
		{"?width=64&height=64&method=crop", 96, 96},
		{"?width=100&height=100&method=scale", 320, 240},
		{"?width=100&height=100", 320, 240}, // scale by default
		{"?width=2000&height=2000&method=scale&animated=true", 400, 300},
	} {
		r := thumb(tc.query)
		if r.Status != http.StatusOK || r.Header.Get("Content-Type") != "image/png" ||
			r.Header.Get("Content-Disposition") != "inline; filename=thumbnail.png" ||
			r.Header.Get("X-Content-Type-Options") != "nosniff" {
			t.Fatalf("%s: %d %q %q %s", tc.query, r.Status, r.Header.Get("Content-Type"), r.Header.Get("Content-Disposition"), r.Raw)
		}
		cfg, err := png.DecodeConfig(bytes.NewReader(r.Raw))
		if err != nil || cfg.Width != tc.wantW || cfg.Height != tc.wInH {
			t.Fatalf("%s: %dx%d (%v), want %dx%d", tc.query, cfg.Width, cfg.Height, err, tc.wantW, tc.wInH)
		}
	}
	// Generated once, then served from the store.
	before := storedFiles(t, srv)
	a, b := thumb("?width=32&height=32&method=crop"), thumb("?width=30&height=30&method=crop")
	if a.Header.Get("ETag") != b.Header.Get("ETag") || !bytes.Equal(a.Raw, b.Raw) || storedFiles(t, srv) != before {
		t.Fatalf("thumbnail not cached: %q %q, %d files, had %d", a.Header.Get("ETag"), b.Header.Get("ETag"), storedFiles(t, srv), before)
	}

	for query, code := range map[string]string{
		"":                                  "M_MISSING_PARAM",
		"?height=32":                        "M_MISSING_PARAM",
		"?width=32":                         "M_MISSING_PARAM",
		"?width=abc&height=32":              "M_INVALID_PARAM",
		"?width=-5&height=32":               "M_INVALID_PARAM",
		"?width=32&height=32&method=zoom":   "M_INVALID_PARAM",
		"?width=32&height=32&animated=yes":  "M_INVALID_PARAM",
		"?width=32&height=32&timeout_ms=no": "M_INVALID_PARAM",
	} {
		thumb(query).expect(t, http.StatusBadRequest, code)
	}

	// Not an image, or not one that decodes.
	text := uploadOK(t, srv, alice, "text/plain", "", []byte("hello"))
	get(t, srv, mediaV1+"/thumbnail/"+text+"?width=32&height=32", alice).expect(t, http.StatusBadRequest, "M_UNKNOWN")
	fake := uploadOK(t, srv, alice, "image/png", "", []byte("not a png"))
	get(t, srv, mediaV1+"/thumbnail/"+fake+"?width=32&height=32", alice).expect(t, http.StatusBadRequest, "M_UNKNOWN")

	get(t, srv, mediaV1+"/thumbnail/tessera.test/nosuchmedia?width=32&height=32", alice).expect(t, http.StatusNotFound, "M_NOT_FOUND")
	get(t, srv, mediaV1+"/thumbnail/"+id+"?width=32&height=32", "").expect(t, http.StatusUnauthorized, "M_MISSING_TOKEN")
	// Legacy: frozen for new media.
	get(t, srv, mediaLegacy+"/thumbnail/"+id+"?width=32&height=32", "").expect(t, http.StatusNotFound, "M_NOT_FOUND")
}

// bombPNG is a PNG signature and an IHDR chunk (correct CRC) claiming an
// w×h RGBA image, with no pixel data: decoding it whole would need w×h×4
// bytes.
func bombPNG(w, h uint32) []byte {
	ihdr := binary.BigEndian.AppendUint32(nil, w)
	ihdr = binary.BigEndian.AppendUint32(ihdr, h)
	ihdr = append(ihdr, 8, 6, 0, 0, 0) // 8-bit RGBA, no interlace
	chunk := append([]byte("IHDR"), ihdr...)
	b := []byte("\x89PNG\r\n\x1a\n")
	b = binary.BigEndian.AppendUint32(b, uint32(len(ihdr)))
	b = append(b, chunk...)
	return binary.BigEndian.AppendUint32(b, crc32.ChecksumIEEE(chunk))
}

// TestMediaThumbnailRefusesBombsAndBrokenImages: an image whose header
// claims 100000×100000 pixels is refused from the header (413
// M_TOO_LARGE) without being decoded, and a truncated PNG is a 400; the
// server goes on serving.
func TestMediaThumbnailRefusesBombsAndBrokenImages(t *testing.T) {
	t.Parallel()
	srv := testserver.Start(t)
	alice := srv.Register("alice", "password1").AccessToken
	bomb := uploadOK(t, srv, alice, "image/png", "bomb.png", bombPNG(100000, 100000))
	get(t, srv, mediaV1+"/thumbnail/"+bomb+"?width=32&height=32&method=crop", alice).
		expect(t, http.StatusRequestEntityTooLarge, "M_TOO_LARGE")
	good := testPNG(t, 400, 300)
	broken := uploadOK(t, srv, alice, "image/png", "broken.png", good[:len(good)/2])
	get(t, srv, mediaV1+"/thumbnail/"+broken+"?width=32&height=32&method=crop", alice).
		expect(t, http.StatusBadRequest, "M_UNKNOWN")
	ok := uploadOK(t, srv, alice, "image/png", "ok.png", good)
	if r := get(t, srv, mediaV1+"/thumbnail/"+ok+"?width=32&height=32&method=crop", alice); r.Status != http.StatusOK ||
		r.Header.Get("Content-Type") != "image/png" {
		t.Fatalf("thumbnail after the refusals: %d %s", r.Status, r.Header.Get("Content-Type"))
	}
}
