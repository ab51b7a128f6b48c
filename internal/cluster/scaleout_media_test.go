package cluster_test

import (
	"bytes"
	"context"
	"errors"
	"image"
	"image/color"
	"image/png"
	"net/http"
	"testing"

	"maunium.net/go/mautrix"

	"github.com/tessera-hs/tessera/internal/config"
)

// TestScaleOutMedia: with data_dir on a directory every process shares (as
// docs/scaling.md asks), a file uploaded through one process is served by
// the others, whole and with its type, a thumbnail of it is served by a
// third, and an unknown media ID is M_NOT_FOUND everywhere.
func TestScaleOutMedia(t *testing.T) {
	shared := t.TempDir()
	c := startScaleOut(t, func(cfg *config.Config) { cfg.DataDir = shared })
	ctx := context.Background()

	img := image.NewRGBA(image.Rect(0, 0, 64, 48))
	for x := range 64 {
		for y := range 48 {
			img.Set(x, y, color.RGBA{uint8(x * 4), uint8(y * 5), 200, 255})
		}
	}
	var file bytes.Buffer
	if err := png.Encode(&file, img); err != nil {
		t.Fatal(err)
	}
	up, err := as(c.srv["a"], c.alice).UploadBytes(ctx, file.Bytes(), "image/png")
	if err != nil {
		t.Fatalf("upload through a: %v", err)
	}
	for _, inst := range []string{"b", "c"} {
		cli := as(c.srv[inst], c.bob)
		url := cli.BuildURL(mautrix.ClientURLPath{"v1", "media", "download", up.ContentURI.Homeserver, up.ContentURI.FileID})
		_, resp, err := cli.MakeFullRequestWithResp(ctx, mautrix.FullRequest{Method: http.MethodGet, URL: url, DontReadResponse: true})
		if err != nil {
			t.Fatalf("download through %s: %v", inst, err)
		}
		var got bytes.Buffer
		_, err = got.ReadFrom(resp.Body)
		resp.Body.Close()
		if err != nil || !bytes.Equal(got.Bytes(), file.Bytes()) || resp.Header.Get("Content-Type") != "image/png" {
			t.Fatalf("download through %s: %d bytes (%v), type %q; want the %d bytes uploaded, image/png",
				inst, got.Len(), err, resp.Header.Get("Content-Type"), file.Len())
		}
	}
	cli := as(c.srv["c"], c.bob)
	url := cli.BuildURLWithQuery(mautrix.ClientURLPath{"v1", "media", "thumbnail", up.ContentURI.Homeserver, up.ContentURI.FileID},
		map[string]string{"width": "32", "height": "32", "method": "scale"})
	_, resp, err := cli.MakeFullRequestWithResp(ctx, mautrix.FullRequest{Method: http.MethodGet, URL: url, DontReadResponse: true})
	if err != nil {
		t.Fatalf("thumbnail through c: %v", err)
	}
	thumb, _, err := image.Decode(resp.Body)
	resp.Body.Close()
	// The smallest of the configured sizes at least as large as asked
	// for, never larger than the original (as Synapse picks them).
	if err != nil || resp.StatusCode != http.StatusOK || thumb.Bounds().Dx() > 64 || thumb.Bounds().Dy() > 48 {
		t.Fatalf("thumbnail through c: status %d, %v; want an image no larger than the original", resp.StatusCode, err)
	}
	for _, inst := range c.names {
		cli := as(c.srv[inst], c.bob)
		url := cli.BuildURL(mautrix.ClientURLPath{"v1", "media", "download", up.ContentURI.Homeserver, "nosuchmedia0123456789"})
		_, err := cli.MakeFullRequest(ctx, mautrix.FullRequest{Method: http.MethodGet, URL: url})
		if !errors.Is(err, mautrix.MNotFound) {
			t.Fatalf("unknown media through %s: %v, want M_NOT_FOUND", inst, err)
		}
	}
}
