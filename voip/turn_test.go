package voip

import (
	"testing"
	"time"

	"github.com/tessera-hs/tessera/internal/config"
)

func TestCredentials(t *testing.T) {
	now := time.Unix(1700000000, 0)
	uris := []string{"turn:turn.example.org:3478?transport=udp"}
	hour := config.Duration(time.Hour)
	tests := []struct {
		name string
		cfg  config.VoIP
		want *TURNServer
	}{
		{"none configured", config.VoIP{TURNUserLifetime: hour}, nil},
		{"uris without credentials", config.VoIP{TURNURIs: uris, TURNUserLifetime: hour}, nil},
		{
			// Checked against coturn's scheme by hand:
			// printf '1700003600:@alice:example.org' | openssl dgst -sha1 -hmac s3cret -binary | base64
			"shared secret",
			config.VoIP{TURNURIs: uris, TURNSharedSecret: "s3cret", TURNUserLifetime: hour},
			&TURNServer{Username: "1700003600:@alice:example.org", Password: "DwTxSrYoQgbdbUzNhDKfrCGmqbE=", URIs: uris, TTL: 3600},
		},
		{
			"fixed credentials",
			config.VoIP{TURNURIs: uris, TURNUsername: "u", TURNPassword: "p", TURNUserLifetime: config.Duration(2 * time.Minute)},
			&TURNServer{Username: "u", Password: "p", URIs: uris, TTL: 120},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := Credentials(tt.cfg, "@alice:example.org", now)
			if (got == nil) != (tt.want == nil) {
				t.Fatalf("got %+v, want %+v", got, tt.want)
			}
			if got == nil {
				return
			}
			if got.Username != tt.want.Username || got.Password != tt.want.Password || got.TTL != tt.want.TTL || len(got.URIs) != len(tt.want.URIs) {
				t.Fatalf("got %+v, want %+v", got, tt.want)
			}
		})
	}
}
