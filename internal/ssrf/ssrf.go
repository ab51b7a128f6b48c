// Package ssrf makes outbound HTTP connections to URLs that users chose
// (URL previews, push gateways) safe against server-side request forgery:
// every resolved address of a host is checked against a deny list before
// connecting, the connection is made to the checked address only, and the
// address is checked again by Dialer.Control at connect time, so that a
// redirect or a DNS answer that changes cannot reach an internal address.
package ssrf

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"syscall"
	"time"
)

// denied is the built-in deny list; it always applies (Synapse's default
// ip_range_blacklist plus 0.0.0.0/8, 240.0.0.0/4 and ::/128).
var denied = prefixes(
	"0.0.0.0/8", "10.0.0.0/8", "100.64.0.0/10", "127.0.0.0/8", "169.254.0.0/16",
	"172.16.0.0/12", "192.0.0.0/24", "192.0.2.0/24", "192.88.99.0/24", "192.168.0.0/16",
	"198.18.0.0/15", "198.51.100.0/24", "203.0.113.0/24", "224.0.0.0/4", "240.0.0.0/4",
	"255.255.255.255/32",
	"::/128", "::1/128", "fe80::/10", "fc00::/7", "fec0::/10", "ff00::/8", "2001:db8::/32",
)

// IPv6 ranges that carry an IPv4 address a gateway may connect to (NAT64,
// 6to4); the embedded address is checked as well.
var (
	nat64 = netip.MustParsePrefix("64:ff9b::/96")
	six4  = netip.MustParsePrefix("2002::/16")
)

func prefixes(cidrs ...string) []netip.Prefix {
	out := make([]netip.Prefix, len(cidrs))
	for i, c := range cidrs {
		out[i] = netip.MustParsePrefix(c)
	}
	return out
}

// ParsePrefixes parses configured CIDRs, masking host bits.
func ParsePrefixes(cidrs []string) ([]netip.Prefix, error) {
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

// ErrBlocked is a connection refused for its destination address.
var ErrBlocked = errors.New("IP address blocked")

// Policy decides which addresses may be connected to: anything but the
// built-in deny list and Deny, except that Allow wins over both.
type Policy struct {
	Deny, Allow []netip.Prefix
}

// NewPolicy parses the configured deny (added to the built-in list) and
// allow CIDRs.
func NewPolicy(deny, allow []string) (*Policy, error) {
	d, err := ParsePrefixes(deny)
	if err != nil {
		return nil, fmt.Errorf("ip_range_blacklist: %w", err)
	}
	a, err := ParsePrefixes(allow)
	if err != nil {
		return nil, fmt.Errorf("ip_range_whitelist: %w", err)
	}
	return &Policy{Deny: d, Allow: a}, nil
}

func contains(list []netip.Prefix, a netip.Addr) bool {
	for _, p := range list {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// Allowed reports whether a may be connected to. IPv4-mapped IPv6
// addresses are judged as the IPv4 address they are; NAT64 and 6to4
// addresses also by the IPv4 address they embed.
func (pol *Policy) Allowed(a netip.Addr) bool {
	a = a.Unmap().WithZone("")
	if !a.IsValid() {
		return false
	}
	if contains(pol.Allow, a) {
		return true
	}
	if contains(denied, a) || contains(pol.Deny, a) {
		return false
	}
	if a.Is6() {
		b := a.As16()
		var v4 netip.Addr
		switch {
		case nat64.Contains(a):
			v4 = netip.AddrFrom4([4]byte{b[12], b[13], b[14], b[15]})
		case six4.Contains(a):
			v4 = netip.AddrFrom4([4]byte{b[2], b[3], b[4], b[5]})
		}
		if v4.IsValid() && !contains(pol.Allow, v4) && (contains(denied, v4) || contains(pol.Deny, v4)) {
			return false
		}
	}
	return true
}

// Lookup resolves a host name to its addresses.
type Lookup func(ctx context.Context, host string) ([]netip.Addr, error)

// Dialer connects only to addresses its policy allows. Use its
// DialContext as an http.Transport's, with no proxy.
type Dialer struct {
	policy *Policy
	lookup Lookup
	dialer net.Dialer
}

// NewDialer returns a dialer for the policy; lookup nil is DNS.
func NewDialer(policy *Policy, lookup Lookup) *Dialer {
	if lookup == nil {
		lookup = func(ctx context.Context, host string) ([]netip.Addr, error) {
			return net.DefaultResolver.LookupNetIP(ctx, "ip", host)
		}
	}
	d := &Dialer{policy: policy, lookup: lookup}
	d.dialer = net.Dialer{Timeout: 10 * time.Second, Control: d.control}
	return d
}

// control runs for every connection, with the address actually connected
// to: the last line of defence whatever resolved the name.
func (d *Dialer) control(network, address string, _ syscall.RawConn) error {
	ap, err := netip.ParseAddrPort(address)
	if err != nil {
		return fmt.Errorf("%w: cannot parse %q", ErrBlocked, address)
	}
	if !d.policy.Allowed(ap.Addr()) {
		return fmt.Errorf("%w: %s", ErrBlocked, ap.Addr())
	}
	return nil
}

// DialContext resolves host, refuses if any of its addresses is denied,
// and connects to the checked addresses themselves (no second lookup).
func (d *Dialer) DialContext(ctx context.Context, network, address string) (net.Conn, error) {
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
		if !d.policy.Allowed(a) {
			return nil, fmt.Errorf("%w: %s resolves to %s", ErrBlocked, host, a.Unmap())
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
