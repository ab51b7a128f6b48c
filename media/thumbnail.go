package media

// Thumbnail generation for the content repository, as pure functions on the
// bytes of a source image.
//
// https://spec.matrix.org/v1.19/client-server-api/#thumbnails
//
// Semantics (spec text and Synapse's behaviour):
//   - "scale" fits the image inside width×height keeping its aspect ratio.
//   - "crop" cuts the largest centred rectangle with the requested aspect
//     ratio out of the source and scales it to exactly width×height.
//   - Never upscale: when the source is no larger than the requested box in
//     both dimensions the original bytes are returned unchanged ("servers
//     should return the original content rather than thumbnail it"), except
//     for an animated source when animated=false, which is re-encoded as its
//     first frame at its own size. A "crop" of a source that is smaller than
//     the request in only one dimension returns the centred crop with the
//     requested aspect ratio at source resolution (e.g. 50×200 crop 96×96 →
//     50×50).
//   - Output: PNG for PNG/GIF sources and for WebP with transparency, JPEG
//     otherwise (Synapse's choice); an animated GIF for an animated GIF
//     source when animated=true.
//
// Animated WebP is detected (VP8X animation flag) but x/image/webp cannot
// decode it: a small one is returned as-is when animated=true, otherwise the
// result is ErrNotImage.
//
// Decompression bombs are refused from the header (image.DecodeConfig and a
// byte-level scan of GIF blocks) before any pixel buffer is allocated.

import (
	"bytes"
	"errors"
	"fmt"
	"image"
	"image/color"
	"image/gif"
	"image/jpeg"
	"image/png"

	"golang.org/x/image/draw"
	_ "golang.org/x/image/webp" // registers the WebP decoder with package image
)

// Thumbnail limits.
const (
	// ThumbnailMaxSourcePixels is the largest source image, in pixels, that is
	// decoded (Synapse's max_image_pixels default). For an animated GIF
	// thumbnailed with animated=true it bounds frames × canvas pixels.
	ThumbnailMaxSourcePixels = 32_000_000
	// ThumbnailMaxDimension is the largest width or height a client may ask for.
	ThumbnailMaxDimension = 1600
	// ThumbnailMaxGIFFrames is the most frames an animated thumbnail is made of.
	ThumbnailMaxGIFFrames = 1000
)

var (
	// ErrNotImage: the source is not a PNG, JPEG, GIF or WebP image that can
	// be decoded (also wraps decode errors of truncated or malformed files).
	ErrNotImage = errors.New("media: not a supported image")
	// ErrImageTooBig: the source's dimensions, pixel count or frame count are
	// over the limits.
	ErrImageTooBig = errors.New("media: image too large to thumbnail")
	// ErrBadThumbnailParams: method, width or height are invalid (400
	// M_INVALID_PARAM).
	ErrBadThumbnailParams = errors.New("media: invalid thumbnail parameters")
)

const thumbJPEGQuality = 80 // as Synapse

// thumbStillScaler resamples still images. CatmullRom is a proper kernel
// filter: when downscaling it widens its support to cover every source pixel,
// so large reductions (a 12 MP photo to 320×240) do not alias, which the
// 2×2-tap ApproxBiLinear does badly (moiré, jagged edges). It costs more:
// 2000×1500 JPEG → 320×240 takes ~85 ms against ~30 ms with ApproxBiLinear,
// of which ~27 ms is the JPEG decode (BenchmarkThumbnail, 2 cores); thumbnails
// are generated once and stored, so quality wins. Animated GIF frames use
// thumbFrameScaler (ApproxBiLinear): there may be hundreds of frames, they are
// quantised back to 256 colours afterwards, and GIF art is usually small.
var (
	thumbStillScaler draw.Interpolator = draw.CatmullRom
	thumbFrameScaler draw.Interpolator = draw.ApproxBiLinear
)

// Thumbnail makes a thumbnail of an image file no larger than width×height.
// method is "scale" (fit inside, keep aspect ratio, never upscale) or "crop"
// (fill exactly width×height, cropping the centre; when the source is smaller
// than requested nothing is upscaled, see the package comment above).
// animated: for GIF, when true the result may be animated; when false it is
// the first frame.
// It returns the encoded thumbnail and its content type.
func Thumbnail(src []byte, width, height int, method string, animated bool) (data []byte, contentType string, err error) {
	if method != "scale" && method != "crop" {
		return nil, "", fmt.Errorf("%w: method %q is not \"crop\" or \"scale\"", ErrBadThumbnailParams, method)
	}
	if width < 1 || height < 1 || width > ThumbnailMaxDimension || height > ThumbnailMaxDimension {
		return nil, "", fmt.Errorf("%w: %d×%d is outside 1×1 to %d×%d", ErrBadThumbnailParams,
			width, height, ThumbnailMaxDimension, ThumbnailMaxDimension)
	}

	cfg, format, err := image.DecodeConfig(bytes.NewReader(src))
	if err != nil {
		return nil, "", fmt.Errorf("%w: %v", ErrNotImage, err)
	}
	switch format {
	case "png", "jpeg", "gif", "webp":
	default: // some other decoder registered elsewhere in the binary
		return nil, "", fmt.Errorf("%w: format %q", ErrNotImage, format)
	}
	sw, sh := cfg.Width, cfg.Height
	if sw < 1 || sh < 1 {
		return nil, "", fmt.Errorf("%w: %d×%d image", ErrNotImage, sw, sh)
	}
	if int64(sw)*int64(sh) > ThumbnailMaxSourcePixels {
		return nil, "", fmt.Errorf("%w: %d×%d is over %d pixels", ErrImageTooBig, sw, sh, ThumbnailMaxSourcePixels)
	}
	srcType := "image/" + format

	isAnimated := false
	frames := 1
	switch format {
	case "gif":
		frames = thumbGIFFrameCount(src)
		isAnimated = frames > 1
	case "webp":
		isAnimated = thumbWebPAnimated(src)
	}

	// Spec: "When the content is smaller than the requested dimensions,
	// servers should return the original content rather than thumbnail it."
	// But animated=false MUST NOT yield an animated image.
	if sw <= width && sh <= height && (!isAnimated || animated) {
		return src, srcType, nil
	}
	if isAnimated && format == "webp" {
		return nil, "", fmt.Errorf("%w: animated WebP cannot be decoded", ErrNotImage)
	}

	crop, ow, oh := thumbGeometry(sw, sh, width, height, method)

	if isAnimated && animated { // GIF
		if frames > ThumbnailMaxGIFFrames {
			return nil, "", fmt.Errorf("%w: %d frames is over %d", ErrImageTooBig, frames, ThumbnailMaxGIFFrames)
		}
		if int64(frames)*int64(sw)*int64(sh) > ThumbnailMaxSourcePixels {
			return nil, "", fmt.Errorf("%w: %d frames of %d×%d is over %d pixels",
				ErrImageTooBig, frames, sw, sh, ThumbnailMaxSourcePixels)
		}
		data, err := thumbAnimatedGIF(src, sw, sh, crop, ow, oh)
		if err != nil {
			return nil, "", err
		}
		return data, "image/gif", nil
	}

	img, err := thumbDecode(src)
	if err != nil {
		return nil, "", err
	}
	if format == "gif" {
		// The first frame may cover only part of the logical screen.
		canvas := image.NewRGBA(image.Rect(0, 0, sw, sh))
		draw.Draw(canvas, img.Bounds(), img, img.Bounds().Min, draw.Over)
		img = canvas
	}
	if b := img.Bounds(); b.Dx() != sw || b.Dy() != sh {
		return nil, "", fmt.Errorf("%w: decoded %v, header said %d×%d", ErrNotImage, b, sw, sh)
	}
	dst := thumbResize(img, crop, ow, oh, thumbStillScaler)

	var buf bytes.Buffer
	if format == "jpeg" || (format == "webp" && dst.Opaque()) {
		if err := jpeg.Encode(&buf, dst, &jpeg.Options{Quality: thumbJPEGQuality}); err != nil {
			return nil, "", fmt.Errorf("media: encoding thumbnail: %w", err)
		}
		return buf.Bytes(), "image/jpeg", nil
	}
	if err := png.Encode(&buf, dst); err != nil {
		return nil, "", fmt.Errorf("media: encoding thumbnail: %w", err)
	}
	return buf.Bytes(), "image/png", nil
}

// thumbDecode decodes the whole image; a decoder panic on hostile input is
// reported as ErrNotImage rather than taking the server down.
func thumbDecode(src []byte) (img image.Image, err error) {
	defer func() {
		if r := recover(); r != nil {
			img, err = nil, fmt.Errorf("%w: decoder panic: %v", ErrNotImage, r)
		}
	}()
	img, _, err = image.Decode(bytes.NewReader(src))
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrNotImage, err)
	}
	return img, nil
}

// thumbGeometry returns the source rectangle to use and the output size.
// The caller has handled a source that fits inside width×height entirely.
func thumbGeometry(sw, sh, w, h int, method string) (crop image.Rectangle, ow, oh int) {
	if method == "scale" {
		crop = image.Rect(0, 0, sw, sh)
		if sw <= w && sh <= h {
			return crop, sw, sh
		}
		if int64(w)*int64(sh) <= int64(h)*int64(sw) { // width is the binding side
			ow, oh = w, thumbMulDiv(w, sh, sw)
		} else {
			ow, oh = thumbMulDiv(h, sw, sh), h
		}
		return crop, max(ow, 1), max(oh, 1)
	}
	// crop: the largest centred rectangle with aspect w:h.
	cw, ch := sw, sh
	if int64(sw)*int64(h) > int64(sh)*int64(w) { // source is wider than w:h
		cw = max(thumbMulDiv(sh, w, h), 1)
	} else {
		ch = max(thumbMulDiv(sw, h, w), 1)
	}
	x0, y0 := (sw-cw)/2, (sh-ch)/2
	crop = image.Rect(x0, y0, x0+cw, y0+ch)
	if cw >= w && ch >= h {
		return crop, w, h
	}
	return crop, cw, ch // never upscale
}

// thumbMulDiv returns a*b/c rounded to nearest, without overflow.
func thumbMulDiv(a, b, c int) int {
	return int((int64(a)*int64(b) + int64(c)/2) / int64(c))
}

// thumbResize resamples the crop rectangle (relative to img's origin) of img
// into a new ow×oh RGBA image.
func thumbResize(img image.Image, crop image.Rectangle, ow, oh int, scaler draw.Interpolator) *image.RGBA {
	dst := image.NewRGBA(image.Rect(0, 0, ow, oh))
	crop = crop.Add(img.Bounds().Min)
	if crop.Dx() == ow && crop.Dy() == oh {
		draw.Draw(dst, dst.Bounds(), img, crop.Min, draw.Src)
	} else {
		scaler.Scale(dst, dst.Bounds(), img, crop, draw.Src, nil)
	}
	return dst
}

// thumbAnimatedGIF composites every frame of an animated GIF onto its logical
// screen (honouring disposal methods), scales each composited frame and
// re-encodes them as full-size frames.
func thumbAnimatedGIF(src []byte, sw, sh int, crop image.Rectangle, ow, oh int) (data []byte, err error) {
	defer func() {
		if r := recover(); r != nil {
			data, err = nil, fmt.Errorf("%w: decoder panic: %v", ErrNotImage, r)
		}
	}()
	g, err := gif.DecodeAll(bytes.NewReader(src))
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrNotImage, err)
	}
	if len(g.Image) == 0 {
		return nil, fmt.Errorf("%w: GIF without frames", ErrNotImage)
	}
	canvas := image.NewRGBA(image.Rect(0, 0, sw, sh))
	var saved []byte // canvas before a DisposalPrevious frame
	out := &gif.GIF{
		LoopCount: g.LoopCount,
		Config:    image.Config{Width: ow, Height: oh},
	}
	for i, fr := range g.Image {
		var disposal byte
		if i < len(g.Disposal) {
			disposal = g.Disposal[i]
		}
		if disposal == gif.DisposalPrevious {
			saved = append(saved[:0], canvas.Pix...)
		}
		draw.Draw(canvas, fr.Bounds(), fr, fr.Bounds().Min, draw.Over)

		scaled := thumbResize(canvas, crop, ow, oh, thumbFrameScaler)
		out.Image = append(out.Image, thumbQuantise(scaled, fr.Palette))
		delay := 0
		if i < len(g.Delay) {
			delay = g.Delay[i]
		}
		out.Delay = append(out.Delay, delay)
		// Every output frame is the whole composited picture, so clear it
		// before the next one is drawn (transparent pixels must not show the
		// previous frame through).
		out.Disposal = append(out.Disposal, gif.DisposalBackground)

		switch disposal {
		case gif.DisposalBackground:
			draw.Draw(canvas, fr.Bounds(), image.Transparent, image.Point{}, draw.Src)
		case gif.DisposalPrevious:
			copy(canvas.Pix, saved)
		}
	}
	var buf bytes.Buffer
	if err := gif.EncodeAll(&buf, out); err != nil {
		return nil, fmt.Errorf("media: encoding thumbnail: %w", err)
	}
	return buf.Bytes(), nil
}

// thumbQuantise maps m onto the frame's own palette (nearest colour, memoised),
// adding a transparent entry if m has transparent pixels and the palette has
// none. No dithering: GIF sources were already quantised to this palette.
func thumbQuantise(m *image.RGBA, base color.Palette) *image.Paletted {
	pal := make(color.Palette, len(base), max(len(base), 1))
	copy(pal, base)
	transparent := -1
	opaque := make([]thumbPalEntry, 0, len(pal))
	for i, c := range pal {
		r, g, b, a := c.RGBA()
		if a == 0 {
			if transparent < 0 {
				transparent = i
			}
			continue
		}
		opaque = append(opaque, thumbPalEntry{int32(r >> 8), int32(g >> 8), int32(b >> 8), uint8(i)})
	}
	if transparent < 0 {
		for i := 3; i < len(m.Pix); i += 4 {
			if m.Pix[i] < 128 {
				if len(pal) < 256 {
					pal = append(pal, color.RGBA{})
					transparent = len(pal) - 1
				} else {
					transparent = 255
					pal[255] = color.RGBA{}
					opaque = thumbDropIndex(opaque, 255)
				}
				break
			}
		}
	}
	if len(opaque) == 0 {
		pal = append(pal, color.RGBA{A: 0xff})
		opaque = append(opaque, thumbPalEntry{0, 0, 0, uint8(len(pal) - 1)})
	}

	out := image.NewPaletted(m.Bounds(), pal)
	cache := make(map[uint32]uint8)
	w, h := m.Rect.Dx(), m.Rect.Dy()
	for y := range h {
		src := m.Pix[y*m.Stride : y*m.Stride+4*w]
		dst := out.Pix[y*out.Stride : y*out.Stride+w]
		for x := range w {
			p := src[4*x : 4*x+4 : 4*x+4]
			a := uint32(p[3])
			if a < 128 && transparent >= 0 {
				dst[x] = uint8(transparent)
				continue
			}
			r, g, b := uint32(p[0]), uint32(p[1]), uint32(p[2])
			if a != 0xff && a != 0 { // un-premultiply
				r, g, b = min(r*0xff/a, 0xff), min(g*0xff/a, 0xff), min(b*0xff/a, 0xff)
			}
			key := r<<16 | g<<8 | b
			idx, ok := cache[key]
			if !ok {
				best := int32(1<<31 - 1)
				for _, e := range opaque {
					dr, dg, db := e.r-int32(r), e.g-int32(g), e.b-int32(b)
					if d := dr*dr + dg*dg + db*db; d < best {
						best, idx = d, e.idx
					}
				}
				cache[key] = idx
			}
			dst[x] = idx
		}
	}
	return out
}

// thumbPalEntry is an opaque palette colour and its index.
type thumbPalEntry struct {
	r, g, b int32
	idx     uint8
}

func thumbDropIndex(s []thumbPalEntry, idx uint8) []thumbPalEntry {
	out := s[:0]
	for _, e := range s {
		if e.idx != idx {
			out = append(out, e)
		}
	}
	return out
}

// thumbGIFFrameCount counts the image descriptors of a GIF by walking its
// block structure, without decoding any pixel data. A truncated or malformed
// stream yields the frames seen so far (the decoder reports the error).
func thumbGIFFrameCount(b []byte) int {
	if len(b) < 13 {
		return 0
	}
	p := 13
	if flags := b[10]; flags&0x80 != 0 { // global colour table
		p += 3 << ((flags & 7) + 1)
	}
	skipSubBlocks := func() {
		for p < len(b) {
			n := int(b[p])
			p++
			if n == 0 {
				return
			}
			p += n
		}
	}
	n := 0
	for p < len(b) {
		switch b[p] {
		case 0x21: // extension: introducer, label, sub-blocks
			p += 2
			skipSubBlocks()
		case 0x2c: // image descriptor
			if p+10 > len(b) {
				return n
			}
			flags := b[p+9]
			p += 10
			if flags&0x80 != 0 { // local colour table
				p += 3 << ((flags & 7) + 1)
			}
			p++ // LZW minimum code size
			skipSubBlocks()
			n++
		default: // 0x3b trailer, or garbage
			return n
		}
	}
	return n
}

// thumbWebPAnimated reports whether a WebP file is an extended-format (VP8X)
// file with the animation flag set.
func thumbWebPAnimated(b []byte) bool {
	return len(b) >= 21 &&
		string(b[0:4]) == "RIFF" && string(b[8:12]) == "WEBP" &&
		string(b[12:16]) == "VP8X" && b[20]&0x02 != 0
}
