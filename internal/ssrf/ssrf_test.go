package ssrf

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"testing"
)

func TestPolicy(t *testing.T) {
	pol := &Policy{Deny: prefixes("203.0.114.0/24"), Allow: prefixes("10.9.0.0/16")}
	for addr, want := range map[string]bool{
		"93.184.216.34": true, "2606:4700::1111": true,
		"127.0.0.1": false, "127.1.2.3": false, "10.0.0.1": false, "172.16.5.5": false, "192.168.1.1": false,
		"169.254.169.254": false, "100.64.0.1": false, "0.0.0.0": false, "0.1.2.3": false,
		"192.0.0.8": false, "198.18.0.1": false, "224.0.0.1": false, "255.255.255.255": false,
		"::": false, "::1": false, "fe80::1": false, "fd00::1": false, "ff02::1": false,
		"::ffff:127.0.0.1": false, "::ffff:10.0.0.1": false, "::ffff:93.184.216.34": true,
		"64:ff9b::7f00:1": false, "64:ff9b::5db8:d822": true, "2002:7f00:1::": false,
		"fe80::1%eth0":    false,
		"203.0.114.9":     false, // configured deny
		"10.9.1.1":        true,  // configured allow overrides the built-in deny
		"::ffff:10.9.1.1": true,
	} {
		if got := pol.Allowed(netip.MustParseAddr(addr)); got != want {
			t.Errorf("Allowed(%s) = %v, want %v", addr, got, want)
		}
	}
}

func TestNewPolicyRejectsBadCIDR(t *testing.T) {
	if _, err := NewPolicy([]string{"10.0.0.0/33"}, nil); err == nil {
		t.Error("bad deny CIDR accepted")
	}
	if _, err := NewPolicy(nil, []string{"nope"}); err == nil {
		t.Error("bad allow CIDR accepted")
	}
	pol, err := NewPolicy(nil, []string{"127.0.0.1/8"})
	if err != nil || !pol.Allowed(netip.MustParseAddr("127.5.0.1")) {
		t.Errorf("allow 127.0.0.1/8 (masked): %v, %v", pol, err)
	}
}

// A name is refused when any of its addresses is denied, before any
// connection; the connection goes to the checked address, not to a second
// lookup; and the connect-time check refuses a denied address whatever
// resolved it.
func TestDialer(t *testing.T) {
	target := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Write([]byte("ok"))
	}))
	defer target.Close()
	_, port, _ := net.SplitHostPort(target.Listener.Addr().String())

	answers := map[string][]netip.Addr{
		"private.test": {netip.MustParseAddr("10.0.0.7")},
		"mixed.test":   {netip.MustParseAddr("93.184.216.34"), netip.MustParseAddr("192.168.0.2")},
		"mapped.test":  {netip.MustParseAddr("::ffff:127.0.0.1")},
		"loop.test":    {netip.MustParseAddr("127.0.0.1")},
	}
	lookup := func(ctx context.Context, host string) ([]netip.Addr, error) { return answers[host], nil }

	deny := NewDialer(&Policy{}, lookup)
	for _, host := range []string{"private.test", "mixed.test", "mapped.test", "loop.test", "127.0.0.1", "[::1]"} {
		_, err := deny.DialContext(context.Background(), "tcp", host+":"+port)
		if !errors.Is(err, ErrBlocked) {
			t.Errorf("dial %s: %v, want blocked", host, err)
		}
	}
	if err := deny.control("tcp4", "127.0.0.1:"+port, nil); !errors.Is(err, ErrBlocked) {
		t.Errorf("control(127.0.0.1) = %v, want blocked", err)
	}
	if err := deny.control("tcp4", "93.184.216.34:443", nil); err != nil {
		t.Errorf("control(public) = %v", err)
	}

	allow := NewDialer(&Policy{Allow: prefixes("127.0.0.1/32")}, lookup)
	c := &http.Client{Transport: &http.Transport{Proxy: nil, DialContext: allow.DialContext}}
	resp, err := c.Get("http://loop.test:" + port + "/") // only the fake lookup knows loop.test
	if err != nil {
		t.Fatalf("allowed fetch: %v", err)
	}
	resp.Body.Close()
}
