package config

import (
	"bytes"
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"text/template"

	"github.com/tessera-hs/tessera/internal/signingkey"
)

// GenerateOptions are the choices `tessera generate-config` takes.
type GenerateOptions struct {
	ServerName   string
	DataDir      string
	Listen       string
	SharedSecret string // empty: a fresh random secret
	OpenRegister bool
}

// Generate writes a complete, commented config file to outPath and a fresh
// signing key under the data directory, and returns the config as loaded
// back from the file (so what was written is known to be valid).
func Generate(opts GenerateOptions, outPath string) (*Config, error) {
	if opts.SharedSecret == "" {
		opts.SharedSecret = RandomSecret()
	}
	raw, err := Render(opts)
	if err != nil {
		return nil, err
	}
	// Validate before writing anything.
	if _, err := Parse(raw); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(filepath.Dir(outPath), 0o755); err != nil {
		return nil, fmt.Errorf("create config directory: %w", err)
	}
	// The file holds the registration secret: owner-only.
	if err := os.WriteFile(outPath, raw, 0o600); err != nil {
		return nil, fmt.Errorf("write config: %w", err)
	}
	cfg, err := Load(outPath)
	if err != nil {
		return nil, err
	}
	if _, err := os.Stat(cfg.SigningKeyPath); os.IsNotExist(err) {
		key, err := signingkey.Generate()
		if err != nil {
			return nil, err
		}
		if err := key.Write(cfg.SigningKeyPath); err != nil {
			return nil, err
		}
	}
	return cfg, nil
}

// RandomSecret returns 32 random bytes in URL-safe base64.
func RandomSecret() string {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		panic("crypto/rand failed: " + err.Error())
	}
	return base64.RawURLEncoding.EncodeToString(b)
}

// Render fills the config template. The same template, with placeholder
// values, is config.sample.yaml; a test keeps the two in step.
func Render(opts GenerateOptions) ([]byte, error) {
	var buf bytes.Buffer
	err := configTemplate.Execute(&buf, map[string]string{
		"ServerName":   strconv.Quote(opts.ServerName),
		"DataDir":      strconv.Quote(opts.DataDir),
		"Listen":       strconv.Quote(opts.Listen),
		"SharedSecret": strconv.Quote(opts.SharedSecret),
		"Open":         strconv.FormatBool(opts.OpenRegister),
	})
	return buf.Bytes(), err
}

var configTemplate = template.Must(template.New("config").Parse(`# Tessera configuration. Every setting is listed here with its default.
# Relative paths are relative to this file's directory.

# The name of this homeserver: the part after the colon in @user:server_name.
# It cannot be changed once users exist.
server_name: {{.ServerName}}

# The URL clients reach this server at, served in /.well-known/matrix/client.
# Empty means http://<listen>/.
public_baseurl: ""

# Address and port to serve HTTP on.
listen: {{.Listen}}

# Holds the database, the signing key and the media store. A backup
# is a copy of this directory taken while the server is stopped.
data_dir: {{.DataDir}}

# The server's ed25519 signing key. Empty means <data_dir>/signing.key.
signing_key_path: ""

database:
  # SQLite database file. Empty means <data_dir>/tessera.db.
  path: ""

logging:
  # debug, info, warn or error.
  level: info
  # text or json.
  format: text

http:
  # Largest request body accepted, in bytes (413 M_TOO_LARGE beyond it).
  max_request_body_bytes: 4194304
  # Take the client address from X-Forwarded-For. Only behind a reverse
  # proxy that sets it, or clients can pick their own address.
  trust_forwarded_for: false
  # How long in-flight requests may take to finish on shutdown.
  shutdown_timeout: 10s

registration:
  # Let anyone create an account through /register.
  open: {{.Open}}
  # Registration tokens. When any are listed, /register requires one
  # (m.login.registration_token), whether or not registration is open.
  # Each: token (1-64 of [A-Za-z0-9._~-]), uses_allowed (0 = unlimited),
  # expires (RFC 3339, empty = never). Example:
  #   tokens:
  #     - token: "invite-2026"
  #       uses_allowed: 10
  #       expires: "2026-12-31T23:59:59Z"
  tokens: []
  # Secret for Synapse-compatible shared-secret registration
  # (/_synapse/admin/v1/register). Empty disables it.
  shared_secret: {{.SharedSecret}}
  # Allow guest accounts (/register?kind=guest).
  allow_guests: false

passwords:
  # Rules a new password must meet (M_WEAK_PASSWORD otherwise).
  min_length: 8
  require_digit: false
  require_lowercase: false
  require_uppercase: false
  require_symbol: false
  # Argon2id cost for password hashes.
  hash_memory_kib: 65536
  hash_iterations: 2

auth:
  # Lifetime of access tokens for clients that ask for a refresh token.
  # Clients that do not get tokens that never expire.
  access_token_lifetime: 5m
  # Lifetime of refresh tokens; 0 means they do not expire.
  refresh_token_lifetime: "0"

rate_limits:
  # Answer 429 M_LIMIT_EXCEEDED when a client goes over these rates.
  enabled: true
  # Each is a token bucket: burst requests at once, refilled at per_second.
  login_per_address:
    per_second: 0.003
    burst: 5
  login_per_account:
    per_second: 0.003
    burst: 5
  # Failed logins per account: repeated wrong passwords back off.
  login_failures:
    per_second: 0.17
    burst: 3
  register_per_address:
    per_second: 0.17
    burst: 3
  # Media uploads and reserved upload IDs, per user.
  media_uploads_per_user:
    per_second: 10
    burst: 50

rooms:
  # The version of new rooms that do not ask for one (1-12). 12 is the
  # spec's recommendation.
  default_room_version: "12"
  # The longest delay a client may schedule an event with (MSC4140 delayed
  # events). Element Call schedules a "left the call" event this way and
  # keeps postponing it, so that a client that vanishes leaves the call.
  # Longer requests get 400 with org.matrix.msc4140.max_delay. "0" turns
  # delayed events off.
  max_delayed_event_delay: 24h

presence:
  # Track whether users are online and tell those who share a room with
  # them. Off, setting presence is accepted and ignored and everyone reads
  # as offline (as in Synapse with presence disabled).
  enabled: true

sync_stream:
  # The WebSocket sync stream (docs/websocket.md). The server pings each
  # stream this often and closes it (1008) when a pong takes longer than
  # ping_timeout.
  ping_interval: 30s
  ping_timeout: 20s
  # Writing one message may take write_timeout plus 1 s for every
  # min_write_bytes_per_second bytes of it; a client that reads slower is
  # disconnected (1008) rather than buffered for without limit, as is one
  # whose queue of queue_length messages stays full for write_timeout.
  write_timeout: 15s
  min_write_bytes_per_second: 65536
  queue_length: 16

media:
  # The content repository; files live under <data_dir>/media.
  # Largest upload accepted, in bytes (413 M_TOO_LARGE beyond it). Media
  # uploads have this limit instead of http.max_request_body_bytes.
  max_upload_bytes: 52428800
  # How long an ID reserved with POST /_matrix/media/v1/create waits for
  # its content before it expires.
  unused_media_id_lifetime: 24h
  # How many reserved, not yet uploaded IDs a user may hold at once
  # (429 M_LIMIT_EXCEEDED beyond it).
  max_pending_uploads_per_user: 10
  # Total size of each user's uploads, in bytes (403 M_FORBIDDEN beyond
  # it); 0 is no quota.
  quota_bytes_per_user: 0
  # The unauthenticated download and thumbnail endpoints under
  # /_matrix/media/v3 serve only media created before this time (RFC 3339,
  # e.g. "2026-09-01T00:00:00Z"); newer media is 404 there and needs the
  # authenticated /_matrix/client/v1/media endpoints, as in Synapse's media
  # freeze. Empty means the moment the media store was first set up
  # (recorded in the database on first start), so all media is frozen.
  legacy_unauthenticated_cutoff: ""

url_previews:
  # GET /_matrix/client/v1/media/preview_url: the server fetches web pages
  # (and their og:image) for clients. Off, the endpoint answers 404
  # M_UNRECOGNIZED, as in Synapse with url_preview_enabled false.
  enabled: false
  # Largest page or image fetched, in bytes (a preview fails beyond it).
  max_response_bytes: 10485760
  # How long one fetch may take, redirects included.
  timeout: 10s
  # How long a preview is answered from the cache before it is fetched
  # again.
  cache_lifetime: 1h
  # Previews never connect to loopback, private (RFC 1918), link-local,
  # CGNAT, unique-local, multicast or other internal addresses. These
  # CIDRs are refused as well, e.g. ["203.0.113.0/24"].
  ip_range_blacklist: []
  # CIDRs allowed even though they are in a refused range, e.g. an
  # internal wiki's ["10.1.2.0/24"].
  ip_range_whitelist: []

federation:
  # Talk to other Matrix servers (the server-server API): join rooms on
  # other servers, and let their users join rooms here. Off, this server
  # is an island: only its own users can talk to each other.
  enabled: false
  # Address and port of the federation listener (always HTTPS). Other
  # servers connect to port 8448 of server_name unless
  # /.well-known/matrix/server or a DNS SRV record says otherwise.
  listen: "0.0.0.0:8448"
  # The TLS certificate (with its chain) and private key, as PEM files,
  # e.g. the fullchain.pem and privkey.pem of Let's Encrypt. The
  # certificate must be valid for server_name (or its delegated name).
  # Both empty: a self-signed certificate is generated into data_dir,
  # which other servers refuse; fine for a test network, not for real use.
  tls_cert: ""
  tls_key: ""
  # Accept any certificate from other servers, even self-signed or
  # expired ones. For test networks only: anyone between the servers can
  # then read and change the traffic. The server warns at start-up.
  insecure_skip_tls_verify: false
  # Servers to federate with. Empty allows every server not denied.
  # Entries are server names ("example.org" also matches
  # "example.org:8448"); "*.example.org" matches every subdomain.
  # Requests from other servers are refused with 403 M_FORBIDDEN.
  allow_servers: []
  # Servers never to federate with, checked before allow_servers.
  deny_servers: []
  # How long other servers may cache this server's signing key before
  # they fetch it again (at least 1h; other servers use at most 7 days).
  key_validity: 24h
  # Notary servers asked for another server's keys when that server does
  # not answer itself, with the keys their answers must be signed with.
  # Empty: keys are fetched only from the servers themselves. Example:
  #   trusted_key_servers:
  #     - server_name: "matrix.org"
  #       verify_keys:
  #         "ed25519:auto": "Noi6WqcDj0QmPxCNQqgezwTlBKrfqehY1u2FyWP9uYw"
  trusted_key_servers: []
  # Delegation: when other servers should not reach this one at port 8448
  # of server_name, the host[:port] they should use instead, served as
  # /.well-known/matrix/server on the client listener (which must then be
  # reachable as https://server_name/). Empty: not served.
  well_known_server: ""
`))
