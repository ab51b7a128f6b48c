package roomserver

import (
	"testing"

	"github.com/matrix-org/gomatrixserverlib/spec"
)

func TestServerACL(t *testing.T) {
	tests := []struct {
		name    string
		content string
		server  spec.ServerName
		want    bool
	}{
		{"allow all", `{"allow":["*"]}`, "example.org", true},
		{"no allow rule denies everyone", `{"deny":["evil.com"]}`, "example.org", false},
		{"deny wins over allow", `{"allow":["*"],"deny":["evil.com"]}`, "evil.com", false},
		{"port is ignored", `{"allow":["*"],"deny":["evil.com"]}`, "evil.com:8448", false},
		{"glob subdomains", `{"allow":["*"],"deny":["*.evil.com"]}`, "a.evil.com", false},
		{"glob does not match the bare domain", `{"allow":["*"],"deny":["*.evil.com"]}`, "evil.com", true},
		{"question mark is one character", `{"allow":["ex?mple.org"]}`, "example.org", true},
		{"question mark is exactly one", `{"allow":["ex?mple.org"]}`, "exmple.org", false},
		{"case-insensitive", `{"allow":["Example.ORG"]}`, "example.org", true},
		{"IP literal allowed by default", `{"allow":["*"]}`, "127.0.0.2:8448", true},
		{"IP literal denied", `{"allow":["*"],"allow_ip_literals":false}`, "127.0.0.2:8448", false},
		{"IPv6 literal denied", `{"allow":["*"],"allow_ip_literals":false}`, "[::1]:8448", false},
		{"non-boolean allow_ip_literals is true", `{"allow":["*"],"allow_ip_literals":"no"}`, "10.0.0.1", true},
		{"regexp characters are literal", `{"allow":["a.b"]}`, "axb", false},
		{"unreadable content denies", `[1]`, "example.org", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := compileACL([]byte(tt.content)).allows(tt.server); got != tt.want {
				t.Fatalf("%s with %s: got %v, want %v", tt.server, tt.content, got, tt.want)
			}
		})
	}
}
