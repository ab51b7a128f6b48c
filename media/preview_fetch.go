package media

// Fetching for URL previews, safe against server-side request forgery:
// only http(s), every resolved address of a host checked against the deny
// list before connecting, the connection made to the checked address only
// (and the address checked again by Dialer.Control at connect time, so a
// redirect or a DNS answer that changes cannot reach an internal address),
// at most previewMaxRedirects redirects, no proxy, a size cap and a timeout.

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strconv"
	"syscall"
	"time"

	"github.com/tessera-hs/tessera/internal/mxerr"
)

// previewMaxRedirects is how many redirects one fetch follows.
const previewMaxRedirects = 5

// previewDenied is the built-in deny list; it always applies (Synapse's
// default ip_range_blacklist plus 0.0.0.0/8, 240.0.0.0/4 and ::/128).
var previewDenied = previewPrefixes(
	"0.0.0.0/8", "10.0.0.0/8", "100.64.0.0/10", "127.0.0.0/8", "169.254.0.0/16",
	"172.16.0.0/12", "192.0.0.0/24", "192.0.2.0/24", "192.88.99.0/24", "192.168.0.0/16",
	"198.18.0.0/15", "198.51.100.0/24", "203.0.113.0/24", "224.0.0.0/4", "240.0.0.0/4",
	"255.255.255.255/32",
	"::/128", "::1/128", "fe80::/10", "fc00::/7", "fec0::/10", "ff00::/8", "2001:db8::/32",
)

// previewEmbeds4 are IPv6 ranges that carry an IPv4 address a gateway may
// connect to (NAT64, 6to4); the embedded address is checked as well.
var (
	previewNAT64 = netip.MustParsePrefix("64:ff9b::/96")
	preview6to4  = netip.MustParsePrefix("2002::/16")
)

func previewPrefixes(cidrs ...string) []netip.Prefix {
	out := make([]netip.Prefix, len(cidrs))
	for i, c := range cidrs {
		out[i] = netip.MustParsePrefix(c)
	}
	return out
}

// previewParsePrefixes parses configured CIDRs, masking host bits.
func previewParsePrefixes(cidrs []string) ([]netip.Prefix, error) {
	out := make([]netip.Prefix, 0, len(cidrs))
	for _, c := range cidrs {
		p, err := netip.ParsePrefix(c)
		if err != nil {
			return nil, fmt.Errorf("bad CIDR %q: %w", c, err)
		}
		out = append(out, p.Masked())
	}
	return out, nil
}

// errPreviewBlocked is a fetch refused for its destination address.
var errPreviewBlocked = errors.New("IP address blocked")

// previewIPPolicy decides which addresses previews may connect to.
type previewIPPolicy struct {
	deny, allow []netip.Prefix // deny is configured on top of previewDenied
}

func previewContains(list []netip.Prefix, a netip.Addr) bool {
	for _, p := range list {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// allowed reports whether a may be connected to. IPv4-mapped IPv6
// addresses are judged as the IPv4 address they are; NAT64 and 6to4
// addresses also by the IPv4 address they embed.
func (pol *previewIPPolicy) allowed(a netip.Addr) bool {
	a = a.Unmap().WithZone("")
	if !a.IsValid() {
		return false
	}
	if previewContains(pol.allow, a) {
		return true
	}
	if previewContains(previewDenied, a) || previewContains(pol.deny, a) {
		return false
	}
	if a.Is6() {
		b := a.As16()
		var v4 netip.Addr
		switch {
		case previewNAT64.Contains(a):
			v4 = netip.AddrFrom4([4]byte{b[12], b[13], b[14], b[15]})
		case preview6to4.Contains(a):
			v4 = netip.AddrFrom4([4]byte{b[2], b[3], b[4], b[5]})
		}
		if v4.IsValid() && !previewContains(pol.allow, v4) &&
			(previewContains(previewDenied, v4) || previewContains(pol.deny, v4)) {
			return false
		}
	}
	return true
}

// previewLookup resolves a host name to its addresses.
type previewLookup func(ctx context.Context, host string) ([]netip.Addr, error)

// previewDialer connects only to addresses the policy allows.
type previewDialer struct {
	policy *previewIPPolicy
	lookup previewLookup
	dialer net.Dialer
}

func newPreviewDialer(policy *previewIPPolicy, lookup previewLookup) *previewDialer {
	if lookup == nil {
		lookup = func(ctx context.Context, host string) ([]netip.Addr, error) {
			return net.DefaultResolver.LookupNetIP(ctx, "ip", host)
		}
	}
	d := &previewDialer{policy: policy, lookup: lookup}
	d.dialer = net.Dialer{Timeout: 10 * time.Second, Control: d.control}
	return d
}

// control runs for every connection, with the address actually connected
// to: the last line of defence whatever resolved the name.
func (d *previewDialer) control(network, address string, _ syscall.RawConn) error {
	ap, err := netip.ParseAddrPort(address)
	if err != nil {
		return fmt.Errorf("%w: cannot parse %q", errPreviewBlocked, address)
	}
	if !d.policy.allowed(ap.Addr()) {
		return fmt.Errorf("%w: %s", errPreviewBlocked, ap.Addr())
	}
	return nil
}

// DialContext resolves host, refuses if any of its addresses is denied,
// and connects to the checked addresses themselves (no second lookup).
func (d *previewDialer) DialContext(ctx context.Context, network, address string) (net.Conn, error) {
	host, port, err := net.SplitHostPort(address)
	if err != nil {
		return nil, err
	}
	var addrs []netip.Addr
	if a, err := netip.ParseAddr(host); err == nil {
		addrs = []netip.Addr{a}
	} else if addrs, err = d.lookup(ctx, host); err != nil {
		return nil, err
	}
	if len(addrs) == 0 {
		return nil, fmt.Errorf("no addresses for %s", host)
	}
	for _, a := range addrs {
		if !d.policy.allowed(a) {
			return nil, fmt.Errorf("%w: %s resolves to %s", errPreviewBlocked, host, a.Unmap())
		}
	}
	var firstErr error
	for _, a := range addrs {
		conn, err := d.dialer.DialContext(ctx, network, net.JoinHostPort(a.Unmap().String(), port))
		if err == nil {
			return conn, nil
		}
		if firstErr == nil {
			firstErr = err
		}
		if ctx.Err() != nil {
			break
		}
	}
	return nil, firstErr
}

// newPreviewClient is the HTTP client of previews: no proxy, the checking
// dialer, redirects limited and re-checked for scheme (the dialer checks
// their addresses).
func newPreviewClient(d *previewDialer) *http.Client {
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
				return fmt.Errorf("%w: redirect to a %s URL", errPreviewBlocked, req.URL.Scheme)
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
	case errors.Is(err, errPreviewBlocked):
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
