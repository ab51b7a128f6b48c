package media

import (
	"bytes"
	"encoding/binary"
	"errors"
	"hash/crc32"
	"image"
	"image/color"
	"image/gif"
	"image/jpeg"
	"image/png"
	"os"
	"path/filepath"
	"runtime"
	"testing"

	"golang.org/x/image/draw"
	"golang.org/x/image/webp"
)

// thumbTestImage is a w×h gradient; alpha < 255 makes it translucent.
func thumbTestImage(w, h int, alpha uint8) *image.NRGBA {
	m := image.NewNRGBA(image.Rect(0, 0, w, h))
	for y := range h {
		for x := range w {
			m.SetNRGBA(x, y, color.NRGBA{uint8(x * 255 / w), uint8(y * 255 / h), 0x80, alpha})
		}
	}
	return m
}

func thumbPNG(t testing.TB, m image.Image) []byte {
	t.Helper()
	var b bytes.Buffer
	if err := png.Encode(&b, m); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

func thumbJPEG(t testing.TB, m image.Image) []byte {
	t.Helper()
	var b bytes.Buffer
	if err := jpeg.Encode(&b, m, &jpeg.Options{Quality: 90}); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

var thumbTestPalette = color.Palette{
	color.RGBA{0, 0, 0, 0}, // transparent
	color.RGBA{0xff, 0, 0, 0xff},
	color.RGBA{0, 0xff, 0, 0xff},
	color.RGBA{0, 0, 0xff, 0xff},
	color.RGBA{0xff, 0xff, 0xff, 0xff},
}

// thumbGIF encodes a GIF of w×h whose frame i is filled with palette colour
// colours[i]; frame i > 0 covers only frameRect if it is not empty.
func thumbGIF(t testing.TB, w, h int, colours []uint8, frameRect image.Rectangle) []byte {
	t.Helper()
	g := &gif.GIF{Config: image.Config{Width: w, Height: h, ColorModel: thumbTestPalette}}
	for i, c := range colours {
		r := image.Rect(0, 0, w, h)
		if i > 0 && !frameRect.Empty() {
			r = frameRect
		}
		fr := image.NewPaletted(r, thumbTestPalette)
		for j := range fr.Pix {
			fr.Pix[j] = c
		}
		g.Image = append(g.Image, fr)
		g.Delay = append(g.Delay, 10)
		g.Disposal = append(g.Disposal, gif.DisposalNone)
	}
	var b bytes.Buffer
	if err := gif.EncodeAll(&b, g); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

func thumbTestdata(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", "thumbnail", name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// thumbPNGHeader is a PNG whose IHDR (with a correct CRC) claims w×h RGBA,
// followed by IEND and no pixel data.
func thumbPNGHeader(w, h uint32) []byte {
	chunk := func(typ string, data []byte) []byte {
		c := binary.BigEndian.AppendUint32(nil, uint32(len(data)))
		c = append(c, typ...)
		c = append(c, data...)
		return binary.BigEndian.AppendUint32(c, crc32.ChecksumIEEE(c[4:]))
	}
	ihdr := binary.BigEndian.AppendUint32(nil, w)
	ihdr = binary.BigEndian.AppendUint32(ihdr, h)
	ihdr = append(ihdr, 8, 6, 0, 0, 0) // 8-bit RGBA, deflate, no filter, no interlace
	b := []byte("\x89PNG\r\n\x1a\n")
	b = append(b, chunk("IHDR", ihdr)...)
	return append(b, chunk("IEND", nil)...)
}

// thumbAnimatedWebPHeader is the start of an extended WebP with the animation
// flag set (no frames: enough for DecodeConfig, not for Decode).
func thumbAnimatedWebPHeader(w, h int) []byte {
	vp8x := []byte{0x02, 0, 0, 0,
		byte(w - 1), byte((w - 1) >> 8), byte((w - 1) >> 16),
		byte(h - 1), byte((h - 1) >> 8), byte((h - 1) >> 16)}
	body := append([]byte("WEBPVP8X"), binary.LittleEndian.AppendUint32(nil, uint32(len(vp8x)))...)
	body = append(body, vp8x...)
	b := append([]byte("RIFF"), binary.LittleEndian.AppendUint32(nil, uint32(len(body)))...)
	return append(b, body...)
}

func thumbDecodeConfig(t *testing.T, data []byte, contentType string) image.Config {
	t.Helper()
	cfg, format, err := image.DecodeConfig(bytes.NewReader(data))
	if err != nil {
		t.Fatalf("thumbnail does not decode: %v", err)
	}
	if "image/"+format != contentType {
		t.Fatalf("content type %q but data is %s", contentType, format)
	}
	return cfg
}

func TestThumbnailSizes(t *testing.T) {
	opaque := thumbTestImage(800, 600, 0xff)
	webpLossy := thumbTestdata(t, "blue-purple-pink.lossy.webp")         // 150×100
	webpAlpha := thumbTestdata(t, "gopher-doc.with-alpha.lossless.webp") // 75×100
	gifStill := thumbGIF(t, 400, 300, []uint8{1}, image.Rectangle{})     // single frame
	smallPNG := thumbPNG(t, thumbTestImage(100, 80, 0xff))               // fits in 320×240
	smallJPEG := thumbJPEG(t, thumbTestImage(50, 40, 0xff))              // fits in 96×96
	translucent := thumbPNG(t, thumbTestImage(800, 600, 0x80))           // has alpha
	tall := thumbJPEG(t, thumbTestImage(600, 800, 0xff))                 //
	midJPEG := thumbJPEG(t, thumbTestImage(100, 80, 0xff))               // smaller than 96 in one side
	thin := thumbPNG(t, thumbTestImage(50, 200, 0xff))                   //
	tests := []struct {
		name          string
		src           []byte
		w, h          int
		method        string
		wantW, wantH  int
		wantType      string
		wantOriginal  bool
		wantTranslucn bool
	}{
		{"jpeg scale exact aspect", thumbJPEG(t, opaque), 320, 240, "scale", 320, 240, "image/jpeg", false, false},
		{"jpeg scale tall", tall, 320, 240, "scale", 180, 240, "image/jpeg", false, false},
		{"jpeg scale 800x600 into 640x640", thumbJPEG(t, opaque), 640, 640, "scale", 640, 480, "image/jpeg", false, false},
		{"jpeg crop 96", thumbJPEG(t, opaque), 96, 96, "crop", 96, 96, "image/jpeg", false, false},
		{"jpeg crop tall 32", tall, 32, 32, "crop", 32, 32, "image/jpeg", false, false},
		{"png crop 320x240", thumbPNG(t, opaque), 320, 240, "crop", 320, 240, "image/png", false, false},
		{"png crop wide from 4:3", thumbPNG(t, opaque), 400, 100, "crop", 400, 100, "image/png", false, false},
		{"png with alpha keeps alpha", translucent, 320, 240, "scale", 320, 240, "image/png", false, true},
		{"gif still → png", gifStill, 320, 240, "scale", 320, 240, "image/png", false, false},
		{"webp lossy → jpeg", webpLossy, 96, 96, "scale", 96, 64, "image/jpeg", false, false},
		{"webp alpha → png", webpAlpha, 32, 32, "scale", 24, 32, "image/png", false, true},
		{"webp crop", webpLossy, 64, 64, "crop", 64, 64, "image/jpeg", false, false},
		// Never upscale; content smaller than requested is returned as is.
		{"scale no upscale returns original", smallPNG, 320, 240, "scale", 100, 80, "image/png", true, false},
		{"crop no upscale returns original", smallJPEG, 96, 96, "crop", 50, 40, "image/jpeg", true, false},
		{"webp smaller returns original", webpLossy, 800, 600, "scale", 150, 100, "image/webp", true, false},
		{"scale one side too big", smallPNG, 320, 40, "scale", 50, 40, "image/png", false, false},
		{"crop one side too small keeps aspect", midJPEG, 96, 96, "crop", 80, 80, "image/jpeg", false, false},
		{"crop thin keeps aspect", thin, 96, 96, "crop", 50, 50, "image/png", false, false},
		{"crop thin 2:1", thin, 96, 48, "crop", 50, 25, "image/png", false, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			for _, animated := range []bool{false, true} {
				data, ct, err := Thumbnail(tc.src, tc.w, tc.h, tc.method, animated)
				if err != nil {
					t.Fatalf("animated=%v: %v", animated, err)
				}
				if ct != tc.wantType {
					t.Errorf("animated=%v: content type %q, want %q", animated, ct, tc.wantType)
				}
				if got := bytes.Equal(data, tc.src); got != tc.wantOriginal {
					t.Errorf("animated=%v: returned original = %v, want %v", animated, got, tc.wantOriginal)
				}
				if ct == "image/webp" {
					cfg, err := webp.DecodeConfig(bytes.NewReader(data))
					if err != nil || cfg.Width != tc.wantW || cfg.Height != tc.wantH {
						t.Errorf("webp %d×%d %v, want %d×%d", cfg.Width, cfg.Height, err, tc.wantW, tc.wantH)
					}
					continue
				}
				cfg := thumbDecodeConfig(t, data, ct)
				if cfg.Width != tc.wantW || cfg.Height != tc.wantH {
					t.Errorf("animated=%v: %d×%d, want %d×%d", animated, cfg.Width, cfg.Height, tc.wantW, tc.wantH)
				}
				if tc.wantOriginal {
					continue
				}
				m, _, err := image.Decode(bytes.NewReader(data))
				if err != nil {
					t.Fatal(err)
				}
				translucent := !m.(interface{ Opaque() bool }).Opaque()
				if translucent != tc.wantTranslucn {
					t.Errorf("translucent = %v, want %v", translucent, tc.wantTranslucn)
				}
			}
		})
	}
}

// The centre is what crop keeps: a wide image with red left and right thirds
// and a green middle third gives an all-green square.
func TestThumbnailCropCentre(t *testing.T) {
	m := image.NewRGBA(image.Rect(0, 0, 900, 300))
	draw.Draw(m, m.Bounds(), image.NewUniform(color.RGBA{0xff, 0, 0, 0xff}), image.Point{}, draw.Src)
	draw.Draw(m, image.Rect(300, 0, 600, 300), image.NewUniform(color.RGBA{0, 0xff, 0, 0xff}), image.Point{}, draw.Src)
	data, ct, err := Thumbnail(thumbPNG(t, m), 96, 96, "crop", false)
	if err != nil || ct != "image/png" {
		t.Fatal(ct, err)
	}
	out, err := png.Decode(bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range []image.Point{{0, 0}, {95, 95}, {0, 95}, {48, 48}} {
		if r, g, _, _ := out.At(p.X, p.Y).RGBA(); r > 0x1000 || g < 0xf000 {
			t.Errorf("pixel %v = %v, want green", p, out.At(p.X, p.Y))
		}
	}
}

func TestThumbnailAnimatedGIF(t *testing.T) {
	// Frame 0: red everywhere; frames 1 and 2: green, then blue, on the left
	// half only (the right half must stay red after compositing).
	src := thumbGIF(t, 200, 150, []uint8{1, 2, 3}, image.Rect(0, 0, 100, 150))
	small := thumbGIF(t, 50, 50, []uint8{1, 2}, image.Rectangle{})

	t.Run("animated", func(t *testing.T) {
		data, ct, err := Thumbnail(src, 100, 100, "scale", true)
		if err != nil || ct != "image/gif" {
			t.Fatal(ct, err)
		}
		g, err := gif.DecodeAll(bytes.NewReader(data))
		if err != nil {
			t.Fatal(err)
		}
		if len(g.Image) != 3 || g.Config.Width != 100 || g.Config.Height != 75 {
			t.Fatalf("%d frames of %d×%d, want 3 of 100×75", len(g.Image), g.Config.Width, g.Config.Height)
		}
		want := [][2]color.RGBA{ // left, right
			{{0xff, 0, 0, 0xff}, {0xff, 0, 0, 0xff}},
			{{0, 0xff, 0, 0xff}, {0xff, 0, 0, 0xff}},
			{{0, 0, 0xff, 0xff}, {0xff, 0, 0, 0xff}},
		}
		for i, fr := range g.Image {
			if fr.Bounds() != image.Rect(0, 0, 100, 75) {
				t.Errorf("frame %d bounds %v", i, fr.Bounds())
			}
			if g.Delay[i] != 10 {
				t.Errorf("frame %d delay %d", i, g.Delay[i])
			}
			for j, x := range []int{10, 90} {
				if got := color.RGBAModel.Convert(fr.At(x, 37)); got != want[i][j] {
					t.Errorf("frame %d x=%d: %v, want %v", i, x, got, want[i][j])
				}
			}
		}
	})
	t.Run("first frame when not animated", func(t *testing.T) {
		data, ct, err := Thumbnail(src, 100, 100, "crop", false)
		if err != nil || ct != "image/png" {
			t.Fatal(ct, err)
		}
		m, err := png.Decode(bytes.NewReader(data))
		if err != nil {
			t.Fatal(err)
		}
		if m.Bounds() != image.Rect(0, 0, 100, 100) {
			t.Fatalf("bounds %v", m.Bounds())
		}
		if got := color.RGBAModel.Convert(m.At(50, 50)); got != (color.RGBA{0xff, 0, 0, 0xff}) {
			t.Errorf("centre %v, want red", got)
		}
	})
	t.Run("small animated returned as is", func(t *testing.T) {
		data, ct, err := Thumbnail(small, 96, 96, "crop", true)
		if err != nil || ct != "image/gif" || !bytes.Equal(data, small) {
			t.Fatalf("%q %v, original=%v", ct, err, bytes.Equal(data, small))
		}
	})
	t.Run("small animated, animated=false: still frame", func(t *testing.T) {
		data, ct, err := Thumbnail(small, 96, 96, "crop", false)
		if err != nil || ct != "image/png" {
			t.Fatal(ct, err)
		}
		if cfg := thumbDecodeConfig(t, data, ct); cfg.Width != 50 || cfg.Height != 50 {
			t.Errorf("%d×%d", cfg.Width, cfg.Height)
		}
	})
	t.Run("transparent background", func(t *testing.T) {
		tr := thumbGIF(t, 200, 200, []uint8{0, 1}, image.Rect(0, 0, 100, 200))
		data, ct, err := Thumbnail(tr, 50, 50, "scale", true)
		if err != nil || ct != "image/gif" {
			t.Fatal(ct, err)
		}
		g, err := gif.DecodeAll(bytes.NewReader(data))
		if err != nil {
			t.Fatal(err)
		}
		if _, _, _, a := g.Image[1].At(40, 25).RGBA(); a != 0 {
			t.Errorf("right half of frame 1 should be transparent")
		}
		if c := color.RGBAModel.Convert(g.Image[1].At(10, 25)); c != (color.RGBA{0xff, 0, 0, 0xff}) {
			t.Errorf("left half of frame 1 = %v, want red", c)
		}
	})
}

func TestThumbnailAnimatedWebP(t *testing.T) {
	src := thumbAnimatedWebPHeader(40, 30)
	if !thumbWebPAnimated(src) {
		t.Fatal("not detected as animated")
	}
	// Small and animated=true: the original is an acceptable animated thumbnail.
	data, ct, err := Thumbnail(src, 96, 96, "crop", true)
	if err != nil || ct != "image/webp" || !bytes.Equal(data, src) {
		t.Errorf("animated=true: %q %v", ct, err)
	}
	// animated=false MUST NOT return it, and x/image/webp cannot decode frames.
	if _, _, err := Thumbnail(src, 96, 96, "crop", false); !errors.Is(err, ErrNotImage) {
		t.Errorf("animated=false: %v, want ErrNotImage", err)
	}
	if _, _, err := Thumbnail(thumbAnimatedWebPHeader(400, 300), 96, 96, "crop", true); !errors.Is(err, ErrNotImage) {
		t.Errorf("large: %v, want ErrNotImage", err)
	}
}

func TestThumbnailErrors(t *testing.T) {
	good := thumbPNG(t, thumbTestImage(400, 300, 0xff))
	// Animated GIF: 4000×4000 canvas (16 MP, fine for one frame), 3 tiny
	// frames: 48 MP of canvas to composite.
	gifBomb := thumbGIF(t, 4000, 4000, []uint8{1, 2, 3}, image.Rect(0, 0, 1, 1))
	tests := []struct {
		name     string
		src      []byte
		w, h     int
		method   string
		animated bool
		want     error
	}{
		{"not an image", []byte("hello, this is plain text, not a picture"), 96, 96, "crop", false, ErrNotImage},
		{"empty", nil, 96, 96, "crop", false, ErrNotImage},
		{"truncated png", good[:len(good)/2], 96, 96, "crop", false, ErrNotImage},
		{"png header only", thumbPNGHeader(400, 300), 96, 96, "crop", false, ErrNotImage},
		{"corrupt png", append(append([]byte{}, good[:60]...), bytes.Repeat([]byte{0xAA}, 500)...), 96, 96, "crop", false, ErrNotImage},
		{"bmp-ish", []byte("BM\x00\x00\x00\x00"), 96, 96, "crop", false, ErrNotImage},
		{"png bomb", thumbPNGHeader(100000, 100000), 96, 96, "crop", false, ErrImageTooBig},
		{"png just over limit", thumbPNGHeader(8000, 4001), 96, 96, "scale", false, ErrImageTooBig},
		{"gif frames bomb", gifBomb, 96, 96, "scale", true, ErrImageTooBig},
		{"bad method", good, 96, 96, "fit", false, ErrBadThumbnailParams},
		{"empty method", good, 96, 96, "", false, ErrBadThumbnailParams},
		{"zero width", good, 0, 96, "scale", false, ErrBadThumbnailParams},
		{"negative height", good, 96, -1, "scale", false, ErrBadThumbnailParams},
		{"too wide", good, ThumbnailMaxDimension + 1, 96, "scale", false, ErrBadThumbnailParams},
		{"too tall", good, 96, ThumbnailMaxDimension + 1, "crop", false, ErrBadThumbnailParams},
		{"bad params checked before decoding", []byte("junk"), 0, 0, "scale", false, ErrBadThumbnailParams},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			data, ct, err := Thumbnail(tc.src, tc.w, tc.h, tc.method, tc.animated)
			if !errors.Is(err, tc.want) {
				t.Fatalf("err = %v, want %v", err, tc.want)
			}
			if data != nil || ct != "" {
				t.Errorf("got data (%d bytes, %q) with an error", len(data), ct)
			}
		})
	}
	t.Run("max dimension accepted", func(t *testing.T) {
		if _, _, err := Thumbnail(good, ThumbnailMaxDimension, ThumbnailMaxDimension, "crop", false); err != nil {
			t.Fatal(err)
		}
	})
}

// The bomb is refused from its header, without allocating its pixels
// (100000×100000 RGBA would be 40 GB).
func TestThumbnailBombDoesNotAllocate(t *testing.T) {
	src := thumbPNGHeader(100000, 100000)
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	for range 10 {
		if _, _, err := Thumbnail(src, 96, 96, "crop", false); !errors.Is(err, ErrImageTooBig) {
			t.Fatal(err)
		}
	}
	runtime.ReadMemStats(&after)
	if d := after.TotalAlloc - before.TotalAlloc; d > 1<<20 {
		t.Errorf("allocated %d bytes refusing 10 bombs", d)
	}
}

func TestThumbGIFFrameCount(t *testing.T) {
	for _, n := range []int{1, 2, 7} {
		colours := make([]uint8, n)
		src := thumbGIF(t, 30, 20, colours, image.Rect(5, 5, 10, 10))
		if got := thumbGIFFrameCount(src); got != n {
			t.Errorf("frames = %d, want %d", got, n)
		}
		if got := thumbGIFFrameCount(src[:len(src)/2]); got > n {
			t.Errorf("truncated: frames = %d > %d", got, n)
		}
	}
	if got := thumbGIFFrameCount([]byte("GIF89a")); got != 0 {
		t.Errorf("header only: %d", got)
	}
}

func BenchmarkThumbnail(b *testing.B) {
	m := image.NewRGBA(image.Rect(0, 0, 2000, 1500))
	for y := range 1500 {
		for x := range 2000 {
			m.SetRGBA(x, y, color.RGBA{uint8(x ^ y), uint8(x * y >> 8), uint8(x + y), 0xff})
		}
	}
	src := thumbJPEG(b, m)
	for _, s := range []struct {
		name   string
		scaler draw.Interpolator
	}{{"CatmullRom", draw.CatmullRom}, {"BiLinear", draw.BiLinear}, {"ApproxBiLinear", draw.ApproxBiLinear}} {
		b.Run(s.name, func(b *testing.B) {
			saved := thumbStillScaler
			thumbStillScaler = s.scaler
			defer func() { thumbStillScaler = saved }()
			b.ReportAllocs()
			for b.Loop() {
				if _, _, err := Thumbnail(src, 320, 240, "scale", false); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
	b.Run("decode only", func(b *testing.B) {
		for b.Loop() {
			if _, err := jpeg.Decode(bytes.NewReader(src)); err != nil {
				b.Fatal(err)
			}
		}
	})
}
