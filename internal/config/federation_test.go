package config

import (
	"strings"
	"testing"
)

func TestFederationValidation(t *testing.T) {
	const goodKey = "Noi6WqcDj0QmPxCNQqgezwTlBKrfqehY1u2FyWP9uYw"
	tests := []struct {
		name, yaml, want string // want "" means valid
	}{
		{"defaults", "", ""},
		{"enabled with cert", "federation:\n  enabled: true\n  tls_cert: c.pem\n  tls_key: k.pem\n", ""},
		{"bad listen", "federation:\n  listen: '8448'\n", "federation.listen: expected HOST:PORT"},
		{"cert without key", "federation:\n  tls_cert: c.pem\n", "federation.tls_cert / tls_key"},
		{"key without cert", "federation:\n  tls_key: k.pem\n", "federation.tls_cert / tls_key"},
		{"short key validity", "federation:\n  key_validity: 59m\n", "federation.key_validity: expected at least 1h"},
		{"bad deny entry", "federation:\n  deny_servers: ['bad name']\n", "federation.deny_servers[0]"},
		{"wildcard allow entry", "federation:\n  allow_servers: ['*.example.org', 'a.test:8448']\n", ""},
		{"trusted ok", "federation:\n  trusted_key_servers:\n    - server_name: matrix.org\n      verify_keys:\n        'ed25519:auto': " + goodKey + "\n", ""},
		{"trusted bad name", "federation:\n  trusted_key_servers:\n    - server_name: 'x y'\n      verify_keys:\n        'ed25519:auto': " + goodKey + "\n", "federation.trusted_key_servers[0].server_name"},
		{"trusted no keys", "federation:\n  trusted_key_servers:\n    - server_name: matrix.org\n", "federation.trusted_key_servers[0].verify_keys: expected at least one key"},
		{"trusted bad key id", "federation:\n  trusted_key_servers:\n    - server_name: matrix.org\n      verify_keys:\n        'rsa:1': " + goodKey + "\n", "expected a key ID"},
		{"trusted bad key", "federation:\n  trusted_key_servers:\n    - server_name: matrix.org\n      verify_keys:\n        'ed25519:auto': c2hvcnQ\n", "federation.trusted_key_servers[0].verify_keys.ed25519:auto: expected a 32-byte"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse([]byte(tt.yaml))
			switch {
			case tt.want == "" && err != nil:
				t.Fatalf("Parse: %v", err)
			case tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)):
				t.Fatalf("Parse error = %v, want one containing %q", err, tt.want)
			}
		})
	}
}

func TestAllowsServer(t *testing.T) {
	f := Federation{
		AllowServers: []string{"*.example.org", "friend.test", "127.0.0.2:8448"},
		DenyServers:  []string{"bad.example.org"},
	}
	tests := []struct {
		server string
		want   bool
	}{
		{"a.example.org", true},
		{"a.example.org:8448", true},
		{"example.org", false}, // "*." matches subdomains only
		{"bad.example.org", false},
		{"bad.example.org:443", false},
		{"friend.test", true},
		{"FRIEND.test:1234", true},
		{"127.0.0.2:8448", true},
		{"127.0.0.2:9999", false},
		{"stranger.test", false},
	}
	for _, tt := range tests {
		if got := f.AllowsServer(tt.server); got != tt.want {
			t.Errorf("AllowsServer(%q) = %v, want %v", tt.server, got, tt.want)
		}
	}
	if !(Federation{}).AllowsServer("anyone.test") {
		t.Error("empty lists must allow every server")
	}
}
