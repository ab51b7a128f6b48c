package media

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"testing"
)

func TestPreviewIPPolicy(t *testing.T) {
	pol := &previewIPPolicy{
		deny:  previewPrefixes("203.0.114.0/24"),
		allow: previewPrefixes("10.9.0.0/16"),
	}
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
		if got := pol.allowed(netip.MustParseAddr(addr)); got != want {
			t.Errorf("allowed(%s) = %v, want %v", addr, got, want)
		}
	}
}

// A name is refused when any of its addresses is denied, before any
// connection; the connection goes to the checked address, not to a second
// lookup; and the connect-time check refuses a denied address whatever
// resolved it.
func TestPreviewDialer(t *testing.T) {
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

	deny := newPreviewDialer(&previewIPPolicy{}, lookup)
	for _, host := range []string{"private.test", "mixed.test", "mapped.test", "loop.test", "127.0.0.1", "[::1]"} {
		_, err := deny.DialContext(context.Background(), "tcp", host+":"+port)
		if !errors.Is(err, errPreviewBlocked) {
			t.Errorf("dial %s: %v, want blocked", host, err)
		}
	}
	if err := deny.control("tcp4", "127.0.0.1:"+port, nil); !errors.Is(err, errPreviewBlocked) {
		t.Errorf("control(127.0.0.1) = %v, want blocked", err)
	}
	if err := deny.control("tcp4", "93.184.216.34:443", nil); err != nil {
		t.Errorf("control(public) = %v", err)
	}

	allow := newPreviewDialer(&previewIPPolicy{allow: previewPrefixes("127.0.0.1/32")}, lookup)
	c := newPreviewClient(allow)
	resp, err := c.Get("http://loop.test:" + port + "/") // only the fake lookup knows loop.test
	if err != nil {
		t.Fatalf("whitelisted fetch: %v", err)
	}
	resp.Body.Close()
}

func TestPreviewParseHTML(t *testing.T) {
	page := []byte("<html><head><meta charset=\"iso-8859-1\"><title>Caf\xe9</title>" +
		`<script>var x = "<meta property='og:title' content='script'>";</script>` +
		`<meta property="og:site_name" content="Site"><meta property="og:site_name" content="Second">` +
		`<meta name="description" content="  spaced   out  "><meta property="og:empty" content=""></head></html>`)
	og := previewParseHTML(page, "text/html")
	want := map[string]string{"og:title": "Café", "og:site_name": "Site", "og:description": "spaced out"}
	if len(og) != len(want) {
		t.Fatalf("og = %v, want %v", og, want)
	}
	for k, v := range want {
		if og[k] != v {
			t.Errorf("%s = %q, want %q", k, og[k], v)
		}
	}
}
