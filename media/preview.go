package media

// URL previews: GET /_matrix/client/v1/media/preview_url fetches a page
// (preview_fetch.go; internal/ssrf has the SSRF defences), reads its OpenGraph data,
// stores its og:image as a local upload of the requesting user and caches
// the answer in media_url_cache.
// https://spec.matrix.org/v1.19/client-server-api/#get_matrixclientv1mediapreview_url

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"image"
	"mime"
	"net/http"
	"net/url"
	"path"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"golang.org/x/net/html"
	"golang.org/x/net/html/atom"
	"golang.org/x/net/html/charset"

	"github.com/tessera-hs/tessera/internal/database"
	"github.com/tessera-hs/tessera/internal/mxerr"
	"github.com/tessera-hs/tessera/internal/ssrf"
)

// PreviewConfig is what URL previews need from url_previews.
type PreviewConfig struct {
	MaxResponseBytes int64
	Timeout          time.Duration
	CacheLifetime    time.Duration
	// IPRangeBlacklist adds CIDRs to the built-in deny list;
	// IPRangeWhitelist CIDRs are allowed even when denied.
	IPRangeBlacklist []string
	IPRangeWhitelist []string

	// lookup replaces DNS resolution in tests.
	lookup ssrf.Lookup
}

// Previewer answers preview_url.
type Previewer struct {
	svc    *Service
	cfg    PreviewConfig
	client *http.Client

	mu       sync.Mutex
	inflight map[string]*previewCall
}

// previewCall is a preview being made, which concurrent requests for the
// same URL wait for instead of fetching it again.
type previewCall struct {
	done chan struct{}
	og   json.RawMessage
	err  error
}

var previewMigrations = []database.Migration{
	{Version: 1, SQL: `
-- Answers of preview_url: one row per fetch of a URL, served while
-- unexpired (as Synapse's local_media_repository_url_cache).
CREATE TABLE media_url_cache (
	url        TEXT NOT NULL,
	fetched_ts INTEGER NOT NULL,
	expires_ts INTEGER NOT NULL,
	og         TEXT NOT NULL,
	PRIMARY KEY (url, fetched_ts)
);
CREATE INDEX media_url_cache_expires ON media_url_cache(expires_ts);
`},
}

// NewPreviewer runs the cache's migrations and returns the previewer.
func NewPreviewer(ctx context.Context, svc *Service, cfg PreviewConfig) (*Previewer, error) {
	if cfg.MaxResponseBytes <= 0 || cfg.Timeout <= 0 {
		return nil, errors.New("url previews: max_response_bytes and timeout must be above 0")
	}
	policy, err := ssrf.NewPolicy(cfg.IPRangeBlacklist, cfg.IPRangeWhitelist)
	if err != nil {
		return nil, fmt.Errorf("url previews: %w", err)
	}
	if err := svc.db.Migrate(ctx, "media_preview", previewMigrations); err != nil {
		return nil, err
	}
	d := ssrf.NewDialer(policy, cfg.lookup)
	return &Previewer{svc: svc, cfg: cfg, client: newPreviewClient(d), inflight: map[string]*previewCall{}}, nil
}

// Preview returns the OpenGraph data of rawURL as JSON, from the cache
// when it holds an answer for ts (milliseconds; 0 is now) that had not
// expired by then, as Synapse does; otherwise it fetches the URL, storing
// any image as an upload by userID.
func (p *Previewer) Preview(ctx context.Context, userID, rawURL string, ts int64) (json.RawMessage, error) {
	u, err := url.Parse(rawURL)
	if err != nil {
		return nil, mxerr.InvalidParam("url is not a valid URL")
	}
	if u.Scheme != "http" && u.Scheme != "https" || u.Host == "" {
		return nil, mxerr.InvalidParam("Only http and https URLs can be previewed")
	}
	now := p.svc.now().UnixMilli()
	if ts <= 0 || ts > now {
		ts = now
	}
	if og, err := p.cached(ctx, rawURL, ts); err != nil || og != nil {
		return og, err
	}

	p.mu.Lock()
	if c, ok := p.inflight[rawURL]; ok {
		p.mu.Unlock()
		select {
		case <-c.done:
			return c.og, c.err
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	c := &previewCall{done: make(chan struct{})}
	p.inflight[rawURL] = c
	p.mu.Unlock()
	defer func() {
		p.mu.Lock()
		delete(p.inflight, rawURL)
		p.mu.Unlock()
		close(c.done)
	}()
	// Those waiting share the result, so a client leaving does not fail
	// them; the fetch timeout still bounds it.
	c.og, c.err = p.generate(context.WithoutCancel(ctx), userID, rawURL, u)
	return c.og, c.err
}

// cached is the cache's answer for url at ts, nil if none: the newest
// fetch at or before ts, or else the oldest after it, if unexpired at ts.
func (p *Previewer) cached(ctx context.Context, rawURL string, ts int64) (json.RawMessage, error) {
	var og string
	var expires int64
	err := p.svc.db.QueryRowContext(ctx, `
SELECT og, expires_ts FROM media_url_cache WHERE url = $1 AND fetched_ts <= $2 ORDER BY fetched_ts DESC LIMIT 1`,
		rawURL, ts).Scan(&og, &expires)
	if errors.Is(err, sql.ErrNoRows) {
		err = p.svc.db.QueryRowContext(ctx, `
SELECT og, expires_ts FROM media_url_cache WHERE url = $1 AND fetched_ts > $2 ORDER BY fetched_ts ASC LIMIT 1`,
			rawURL, ts).Scan(&og, &expires)
	}
	if errors.Is(err, sql.ErrNoRows) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read url cache: %w", err)
	}
	if expires <= ts {
		return nil, nil
	}
	return json.RawMessage(og), nil
}

// generate fetches and stores a preview.
func (p *Previewer) generate(ctx context.Context, userID, rawURL string, u *url.URL) (json.RawMessage, error) {
	page, err := p.fetch(ctx, u)
	if err != nil {
		return nil, err
	}
	og := map[string]any{}
	switch t := previewBaseType(page.ContentType); {
	case strings.HasPrefix(t, "image/"):
		img, err := p.storeImage(ctx, userID, page)
		if err != nil {
			return nil, err
		}
		for k, v := range img {
			og[k] = v
		}
	case t == "text/html" || t == "application/xhtml+xml":
		for k, v := range previewParseHTML(page.Body, page.ContentType) {
			og[k] = v
		}
		p.imageForPage(ctx, userID, page.URL, og)
	default:
		// Neither a page nor an image: nothing to show, as in Synapse.
	}
	raw, err := json.Marshal(og)
	if err != nil {
		return nil, err
	}
	now := p.svc.now().UnixMilli()
	_, err = p.svc.db.ExecContext(ctx, `
INSERT INTO media_url_cache (url, fetched_ts, expires_ts, og) VALUES ($1, $2, $3, $4)
ON CONFLICT (url, fetched_ts) DO UPDATE SET expires_ts = excluded.expires_ts, og = excluded.og`,
		rawURL, now, now+p.cfg.CacheLifetime.Milliseconds(), string(raw))
	if err != nil {
		return nil, fmt.Errorf("write url cache: %w", err)
	}
	if _, err := p.svc.db.ExecContext(ctx, `DELETE FROM media_url_cache WHERE expires_ts < $1`, now); err != nil {
		return nil, fmt.Errorf("expire url cache: %w", err)
	}
	return raw, nil
}

// imageForPage replaces a page's og:image URL by the mxc URI of the image
// fetched and stored; when that fails the image is left out, so no remote
// URL reaches the client.
func (p *Previewer) imageForPage(ctx context.Context, userID string, base *url.URL, og map[string]any) {
	src, _ := og["og:image"].(string)
	for k := range og {
		if strings.HasPrefix(k, "og:image") && k != "og:image:alt" {
			delete(og, k)
		}
	}
	if src == "" {
		return
	}
	ref, err := url.Parse(src)
	if err != nil {
		return
	}
	iu := base.ResolveReference(ref)
	if iu.Scheme != "http" && iu.Scheme != "https" {
		return
	}
	img, err := p.fetch(ctx, iu)
	if err != nil {
		return
	}
	fields, err := p.storeImage(ctx, userID, img)
	if err != nil {
		return
	}
	for k, v := range fields {
		og[k] = v
	}
}

// storeImage uploads a fetched image and returns its og:image fields.
func (p *Previewer) storeImage(ctx context.Context, userID string, img *previewFetched) (map[string]any, error) {
	ctype := previewBaseType(img.ContentType)
	if !strings.HasPrefix(ctype, "image/") {
		return nil, previewUpstream("og:image is not an image")
	}
	name := path.Base(img.URL.Path)
	if name == "/" || name == "." {
		name = ""
	}
	m, err := p.svc.Upload(ctx, userID, ctype, name, bytes.NewReader(img.Body))
	if err != nil {
		return nil, err
	}
	out := map[string]any{"og:image": m.MXC(), "og:image:type": ctype, "matrix:image:size": m.Size}
	if c, _, err := image.DecodeConfig(bytes.NewReader(img.Body)); err == nil {
		out["og:image:width"], out["og:image:height"] = c.Width, c.Height
	}
	return out, nil
}

func previewBaseType(contentType string) string {
	t, _, err := mime.ParseMediaType(contentType)
	if err != nil {
		t, _, _ = strings.Cut(contentType, ";")
	}
	return strings.ToLower(strings.TrimSpace(t))
}

// Limits on what a page contributes.
const (
	previewMaxKeys        = 50
	previewMaxValueRunes  = 2000
	previewMaxDescription = 500 // Synapse's summary length
)

// previewParseHTML reads a page's og:* meta tags (property or name), with
// <title> and meta description standing in for a missing og:title and
// og:description.
func previewParseHTML(body []byte, contentType string) map[string]string {
	og := map[string]string{}
	r, err := charset.NewReader(bytes.NewReader(body), contentType)
	if err != nil {
		return og
	}
	doc, err := html.Parse(r)
	if err != nil {
		return og
	}
	var title, description string
	var walk func(n *html.Node)
	walk = func(n *html.Node) {
		if n.Type == html.ElementNode {
			switch n.DataAtom {
			case atom.Script, atom.Style, atom.Noscript, atom.Template:
				return
			case atom.Title:
				if title == "" {
					title = previewText(n)
				}
			case atom.Meta:
				var key, name, content string
				for _, a := range n.Attr {
					switch strings.ToLower(a.Key) {
					case "property":
						key = a.Val
					case "name":
						name = a.Val
					case "content":
						content = a.Val
					}
				}
				if key == "" {
					key = name
				}
				key = strings.ToLower(strings.TrimSpace(key))
				if strings.HasPrefix(key, "og:") && len(key) <= 100 && len(og) < previewMaxKeys {
					if _, dup := og[key]; !dup {
						og[key] = previewClip(strings.TrimSpace(content), previewMaxValueRunes)
					}
				}
				if strings.EqualFold(name, "description") && description == "" {
					description = previewCollapse(content)
				}
			}
		}
		for c := n.FirstChild; c != nil; c = c.NextSibling {
			walk(c)
		}
	}
	walk(doc)
	if og["og:title"] == "" && title != "" {
		og["og:title"] = previewClip(title, previewMaxValueRunes)
	}
	if og["og:description"] == "" && description != "" {
		og["og:description"] = previewClip(description, previewMaxDescription)
	}
	for k, v := range og {
		if v == "" {
			delete(og, k)
		}
	}
	return og
}

// previewText is the text inside n, whitespace collapsed.
func previewText(n *html.Node) string {
	var b strings.Builder
	var walk func(*html.Node)
	walk = func(n *html.Node) {
		if n.Type == html.TextNode {
			b.WriteString(n.Data)
			b.WriteByte(' ')
		}
		for c := n.FirstChild; c != nil; c = c.NextSibling {
			walk(c)
		}
	}
	walk(n)
	return previewCollapse(b.String())
}

func previewCollapse(s string) string { return strings.Join(strings.Fields(s), " ") }

// previewClip shortens s to at most n runes, marking the cut with "…".
func previewClip(s string, n int) string {
	if utf8.RuneCountInString(s) <= n {
		return s
	}
	r := []rune(s)
	return strings.TrimSpace(string(r[:n-1])) + "…"
}

// ParsePreviewTS parses the ts parameter (milliseconds; "" is now).
func ParsePreviewTS(v string) (int64, error) {
	if v == "" {
		return 0, nil
	}
	ts, err := strconv.ParseInt(v, 10, 64)
	if err != nil || ts < 0 {
		return 0, mxerr.InvalidParam("ts must be a non-negative integer")
	}
	return ts, nil
}
