package media

// Fetching for URL previews, safe against server-side request forgery:
// only http(s), connections through internal/ssrf's checking dialer, at
// most previewMaxRedirects redirects, no proxy, a size cap and a timeout.

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"github.com/tessera-hs/tessera/internal/mxerr"
	"github.com/tessera-hs/tessera/internal/ssrf"
)

// previewMaxRedirects is how many redirects one fetch follows.
const previewMaxRedirects = 5

// newPreviewClient is the HTTP client of previews: no proxy, the checking
// dialer, redirects limited and re-checked for scheme (the dialer checks
// their addresses).
func newPreviewClient(d *ssrf.Dialer) *http.Client {
	tr := &http.Transport{
		Proxy:                  nil,
		DialContext:            d.DialContext,
		TLSHandshakeTimeout:    10 * time.Second,
		ResponseHeaderTimeout:  30 * time.Second,
		DisableKeepAlives:      true,
		MaxResponseHeaderBytes: 64 << 10,
	}
	return &http.Client{
		Transport: tr,
		CheckRedirect: func(req *http.Request, via []*http.Request) error {
			if len(via) > previewMaxRedirects {
				return fmt.Errorf("more than %d redirects", previewMaxRedirects)
			}
			if req.URL.Scheme != "http" && req.URL.Scheme != "https" {
				return fmt.Errorf("%w: redirect to a %s URL", ssrf.ErrBlocked, req.URL.Scheme)
			}
			return nil
		},
	}
}

// previewFetched is a response read in full.
type previewFetched struct {
	URL         *url.URL // after redirects
	ContentType string
	Body        []byte
}

// errPreviewTooLarge is a response over max_response_bytes.
var errPreviewTooLarge = errors.New("response too large")

// fetch GETs u within the timeout and size cap. Errors are the answers of
// the endpoint: 403 M_FORBIDDEN for a refused address, 502 otherwise.
func (p *Previewer) fetch(ctx context.Context, u *url.URL) (*previewFetched, error) {
	if u.Scheme != "http" && u.Scheme != "https" || u.Host == "" {
		return nil, mxerr.InvalidParam("Only http and https URLs can be previewed")
	}
	ctx, cancel := context.WithTimeout(ctx, p.cfg.Timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return nil, mxerr.InvalidParam("Bad URL")
	}
	req.Header.Set("User-Agent", "Tessera (URL preview; like Synapse)")
	req.Header.Set("Accept-Language", "en")
	resp, err := p.client.Do(req)
	if err != nil {
		return nil, previewFetchError(ctx, u, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		return nil, previewUpstream("Got status %d fetching the URL", resp.StatusCode)
	}
	max := p.cfg.MaxResponseBytes
	if resp.ContentLength > max {
		return nil, previewFetchError(ctx, u, errPreviewTooLarge)
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, max+1))
	if err != nil {
		return nil, previewFetchError(ctx, u, err)
	}
	if int64(len(body)) > max {
		return nil, previewFetchError(ctx, u, errPreviewTooLarge)
	}
	return &previewFetched{URL: resp.Request.URL, ContentType: resp.Header.Get("Content-Type"), Body: body}, nil
}

func previewUpstream(format string, a ...any) *mxerr.Error {
	return &mxerr.Error{Status: http.StatusBadGateway, Code: "M_UNKNOWN", Message: fmt.Sprintf(format, a...)}
}

// previewFetchError turns a fetch error into the endpoint's answer.
func previewFetchError(ctx context.Context, u *url.URL, err error) error {
	switch {
	case errors.Is(err, ssrf.ErrBlocked):
		return mxerr.Forbidden("IP address blocked")
	case errors.Is(err, errPreviewTooLarge):
		return previewUpstream("The response is larger than the limit")
	case errors.Is(err, context.DeadlineExceeded), errors.Is(ctx.Err(), context.DeadlineExceeded):
		return &mxerr.Error{Status: http.StatusGatewayTimeout, Code: "M_UNKNOWN", Message: "Timed out fetching the URL"}
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return &mxerr.Error{Status: http.StatusGatewayTimeout, Code: "M_UNKNOWN", Message: "Timed out fetching the URL"}
	}
	var dnsErr *net.DNSError
	if errors.As(err, &dnsErr) {
		return previewUpstream("DNS resolution failure during URL preview generation")
	}
	return previewUpstream("Failed to fetch %s", strconv.Quote(u.Redacted()))
}
