// Package config loads and validates tessera.yaml. Every setting is
// documented in config.sample.yaml at the repository root; an unknown key or
// a bad value is an error that names the key and what is expected.
package config

import (
	"bytes"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net"
	"net/mail"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/matrix-org/gomatrixserverlib"
	"gopkg.in/yaml.v3"

	"github.com/tessera-hs/tessera/internal/roomversions"
)

// Config is the whole configuration file.
type Config struct {
	ServerName     string       `yaml:"server_name"`
	PublicBaseURL  string       `yaml:"public_baseurl"`
	Listen         string       `yaml:"listen"`
	DataDir        string       `yaml:"data_dir"`
	SigningKeyPath string       `yaml:"signing_key_path"`
	Database       Database     `yaml:"database"`
	Logging        Logging      `yaml:"logging"`
	HTTP           HTTP         `yaml:"http"`
	Registration   Registration `yaml:"registration"`
	Passwords      Passwords    `yaml:"passwords"`
	Auth           Auth         `yaml:"auth"`
	RateLimits     RateLimits   `yaml:"rate_limits"`
	Rooms          Rooms        `yaml:"rooms"`
	Presence       Presence     `yaml:"presence"`
	SyncStream     SyncStream   `yaml:"sync_stream"`
	Media          Media        `yaml:"media"`
	URLPreviews    URLPreviews  `yaml:"url_previews"`
	Push           Push         `yaml:"push"`
	Federation     Federation   `yaml:"federation"`
	Calls          Calls        `yaml:"calls"`
	VoIP           VoIP         `yaml:"voip"`

	// ServerNotices are Synapse-style notices from the admins (notices/).
	ServerNotices ServerNotices `yaml:"server_notices"`

	// Webhooks are the built-in incoming webhooks (webhooks/): GitHub and
	// generic hooks that post notices into rooms through a bot user.
	Webhooks Webhooks `yaml:"webhooks"`

	// Housekeeping keeps the disk in hand: retention, media retention and
	// pruning (housekeeping/).
	Housekeeping Housekeeping `yaml:"housekeeping"`
	// Moderation tunes how the admin API's restrictions behave.
	Moderation Moderation `yaml:"moderation"`
	// Web is the web client served by Tessera itself (web/).
	Web Web `yaml:"web"`

	// AppServices are the registration files of the application services
	// (bridges, bots), relative to the config file's directory.
	AppServices []string `yaml:"app_services"`

	// Instances, when set, are the processes of a deployment that runs
	// several on one PostgreSQL database (docs/scaling.md); Instance is
	// this process's name in it (or `tessera run -instance NAME`), and
	// InstanceSecret authenticates the requests they forward to each
	// other.
	Instances      map[string]Instance `yaml:"instances"`
	Instance       string              `yaml:"instance"`
	InstanceSecret string              `yaml:"instance_secret"`
}

// Housekeeping configures the periodic job of the housekeeping domain.
type Housekeeping struct {
	// Interval between runs; 0 turns the job off.
	Interval Duration `yaml:"interval"`
	// TxnIDLifetime is how long client transaction IDs are kept.
	TxnIDLifetime Duration  `yaml:"txn_id_lifetime"`
	Retention     Retention `yaml:"retention"`
	// Media not downloaded for this long is deleted; 0 keeps it.
	LocalMediaLifetime  Duration `yaml:"local_media_lifetime"`
	RemoteMediaLifetime Duration `yaml:"remote_media_lifetime"`
	// DeleteStaleDevicesAfter deletes devices not used for this long
	// (Synapse's delete_stale_devices_after); 0 keeps them.
	DeleteStaleDevicesAfter Duration `yaml:"delete_stale_devices_after"`
}

func (h Housekeeping) validate() error {
	for key, d := range map[string]Duration{
		"interval": h.Interval, "txn_id_lifetime": h.TxnIDLifetime,
		"local_media_lifetime": h.LocalMediaLifetime, "remote_media_lifetime": h.RemoteMediaLifetime,
		"delete_stale_devices_after":     h.DeleteStaleDevicesAfter,
		"retention.default_min_lifetime": h.Retention.DefaultMinLifetime, "retention.default_max_lifetime": h.Retention.DefaultMaxLifetime,
		"retention.allowed_lifetime_min": h.Retention.AllowedLifetimeMin, "retention.allowed_lifetime_max": h.Retention.AllowedLifetimeMax,
	} {
		if d < 0 {
			return fmt.Errorf("housekeeping.%s: must not be negative", key)
		}
	}
	r := h.Retention
	if r.AllowedLifetimeMax > 0 && r.AllowedLifetimeMin > r.AllowedLifetimeMax {
		return errors.New("housekeeping.retention.allowed_lifetime_min: must not be above allowed_lifetime_max")
	}
	for i, j := range r.PurgeJobs {
		if j.LongestMaxLifetime > 0 && j.ShortestMaxLifetime > j.LongestMaxLifetime {
			return fmt.Errorf("housekeeping.retention.purge_jobs[%d]: shortest_max_lifetime must not be above longest_max_lifetime", i)
		}
	}
	return nil
}

// Moderation tunes the admin API's moderation.
type Moderation struct {
	// A shadow-banned user's dropped request (a message, an invite,
	// typing) answers after a random delay in [ShadowBanDelayMin,
	// ShadowBanDelayMax], as Synapse sleeps 1 to 10 s "to annoy the
	// requester" (and to keep a script from telling the ban by fast
	// answers).
	ShadowBanDelayMin Duration `yaml:"shadow_ban_delay_min"`
	ShadowBanDelayMax Duration `yaml:"shadow_ban_delay_max"`
}

func (m Moderation) validate() error {
	if m.ShadowBanDelayMin > m.ShadowBanDelayMax {
		return errors.New("moderation.shadow_ban_delay_min: must not be above shadow_ban_delay_max")
	}
	return nil
}

// Retention is message retention: m.room.retention and a server default,
// with Synapse's keys.
// https://element-hq.github.io/synapse/latest/message_retention_policies.html
type Retention struct {
	Enabled            bool     `yaml:"enabled"`
	DefaultMinLifetime Duration `yaml:"default_min_lifetime"`
	DefaultMaxLifetime Duration `yaml:"default_max_lifetime"`
	AllowedLifetimeMin Duration `yaml:"allowed_lifetime_min"`
	AllowedLifetimeMax Duration `yaml:"allowed_lifetime_max"`
	// PurgeJobs split the purge by rooms' lifetimes, so that rooms whose
	// messages live briefly are purged often and the others rarely. None:
	// one job for every room, at the housekeeping interval.
	PurgeJobs []PurgeJob `yaml:"purge_jobs"`
}

// PurgeJob is one of Synapse's retention.purge_jobs: every Interval (0:
// the housekeeping interval) it purges the rooms whose lifetime is above
// ShortestMaxLifetime and at most LongestMaxLifetime (0: no bound).
type PurgeJob struct {
	ShortestMaxLifetime Duration `yaml:"shortest_max_lifetime"`
	LongestMaxLifetime  Duration `yaml:"longest_max_lifetime"`
	Interval            Duration `yaml:"interval"`
}

// ServerNotices configures Synapse-style server notices: messages the
// server admins send to a user, through
// POST /_synapse/admin/v1/send_server_notice, in a room the user shares
// with a system user. The keys are Synapse's.
// https://element-hq.github.io/synapse/latest/server_notices.html
type ServerNotices struct {
	// SystemMXIDLocalpart is the system user's localpart; empty turns
	// server notices off.
	SystemMXIDLocalpart   string `yaml:"system_mxid_localpart"`
	SystemMXIDDisplayName string `yaml:"system_mxid_display_name"`
	SystemMXIDAvatarURL   string `yaml:"system_mxid_avatar_url"`
	RoomName              string `yaml:"room_name"`
	RoomAvatarURL         string `yaml:"room_avatar_url"`
	RoomTopic             string `yaml:"room_topic"`
	// AutoJoin joins the user to the notices room instead of inviting.
	AutoJoin bool `yaml:"auto_join"`
}

// Enabled reports whether server notices are configured.
func (n *ServerNotices) Enabled() bool { return n.SystemMXIDLocalpart != "" }

// Web configures the web client embedded in the binary (web/).
type Web struct {
	Enabled bool `yaml:"enabled"`
	// Path is where the client is served: "/" or a path such as "/chat/",
	// starting and ending with "/"; never under the API prefixes.
	Path string `yaml:"path"`
}

// webReserved are the prefixes of the APIs the client must not shadow.
var webReserved = []string{"/_matrix", "/_tessera", "/_synapse", "/.well-known"}

func (w *Web) validate() error {
	if !w.Enabled {
		return nil
	}
	if !strings.HasPrefix(w.Path, "/") || !strings.HasSuffix(w.Path, "/") {
		return fmt.Errorf("web.path: expected a path starting and ending with \"/\", got %q", w.Path)
	}
	for _, p := range webReserved {
		if strings.HasPrefix(w.Path, p+"/") {
			return fmt.Errorf("web.path: %q is under %s, which the server's APIs use", w.Path, p)
		}
	}
	return nil
}

// Webhooks configures the built-in incoming webhooks: a room admin attaches
// a hook to a room and gets a URL and a secret; GitHub (or anything that
// speaks the generic shape) posts there and a bot user posts notices.
type Webhooks struct {
	Enabled bool `yaml:"enabled"`
	// BotLocalpart is the bot's localpart; its user ID is reserved to the
	// server as an internal application service.
	BotLocalpart   string `yaml:"bot_localpart"`
	BotDisplayName string `yaml:"bot_display_name"`
	// MaxBodyBytes caps a delivery's body (413 M_TOO_LARGE above).
	MaxBodyBytes int64 `yaml:"max_body_bytes"`
	// Rate is per hook (429 M_LIMIT_EXCEEDED beyond), whether or not
	// rate_limits are enabled.
	Rate Rate `yaml:"rate"`
	// DeliveryRetention is how long GitHub delivery IDs are kept to drop
	// repeats.
	DeliveryRetention Duration `yaml:"delivery_retention"`
}

// VoIP is the TURN server handed to clients at
// GET /_matrix/client/v3/voip/turnServer. The keys are Synapse's.
type VoIP struct {
	// TURNURIs are the turn: and turns: URIs; empty means no TURN server.
	TURNURIs []string `yaml:"turn_uris"`
	// TURNSharedSecret is coturn's static-auth-secret: each user gets
	// credentials valid for TURNUserLifetime (the TURN REST API scheme).
	TURNSharedSecret string `yaml:"turn_shared_secret"`
	// TURNUsername and TURNPassword are fixed credentials, used when
	// there is no shared secret.
	TURNUsername string `yaml:"turn_username"`
	TURNPassword string `yaml:"turn_password"`
	// TURNUserLifetime is how long shared-secret credentials stay valid.
	TURNUserLifetime Duration `yaml:"turn_user_lifetime"`
	// TURNAllowGuests hands credentials to guest accounts too.
	TURNAllowGuests bool `yaml:"turn_allow_guests"`
}

// Calls is MatrixRTC with the embedded LiveKit SFU (package calls).
type Calls struct {
	// Enabled starts the SFU with the server and serves the token service
	// and SFU discovery.
	Enabled bool `yaml:"enabled"`
	// SignalPort is the loopback port of LiveKit's signalling, which the
	// client listener reverse-proxies under /_tessera/livekit/.
	SignalPort int `yaml:"signal_port"`
	// UDPPort carries all WebRTC media (one multiplexed port); TCPPort is
	// the ICE/TCP fallback. Both must be reachable by clients.
	UDPPort int `yaml:"udp_port"`
	TCPPort int `yaml:"tcp_port"`
	// NodeIP is the address put in ICE candidates. Empty: the first
	// non-loopback interface address (no STUN lookup).
	NodeIP string `yaml:"node_ip"`
	// APIKey and APISecret sign LiveKit JWTs. Empty: generated at first
	// start into <data_dir>/livekit.keys.
	APIKey    string `yaml:"api_key"`
	APISecret string `yaml:"api_secret"`
	// DelegatedLeavePollInterval is how often the server checks that a
	// participant whose delayed leave event was delegated to it (MSC4195)
	// is still on the SFU; DelegatedLeaveConnectTimeout how long it waits
	// for that participant to connect before it gives up.
	DelegatedLeavePollInterval   Duration `yaml:"delegated_leave_poll_interval"`
	DelegatedLeaveConnectTimeout Duration `yaml:"delegated_leave_connect_timeout"`
}

// Federation is the server-server API: its TLS listener, which servers we
// talk to, and whom we trust for other servers' keys.
// https://spec.matrix.org/v1.19/server-server-api/
type Federation struct {
	// Enabled turns on the federation listener and outbound federation.
	Enabled bool `yaml:"enabled"`
	// Listen is the TLS listener's address (the spec's default port is
	// 8448).
	Listen string `yaml:"listen"`
	// TLSCert and TLSKey are PEM files. When both are empty a self-signed
	// certificate is generated into the data directory (with a warning:
	// other servers will refuse it unless they skip verification).
	TLSCert string `yaml:"tls_cert"`
	TLSKey  string `yaml:"tls_key"`
	// InsecureSkipTLSVerify accepts any certificate from other servers.
	// For tests only; logged as a warning.
	InsecureSkipTLSVerify bool `yaml:"insecure_skip_tls_verify"`
	// AllowServers, if not empty, is the only servers we federate with;
	// DenyServers are never talked to. Entries are server names, and may
	// start with "*." to match subdomains.
	AllowServers []string `yaml:"allow_servers"`
	DenyServers  []string `yaml:"deny_servers"`
	// KeyValidity is the valid_until_ts period we publish for our key.
	KeyValidity Duration `yaml:"key_validity"`
	// TrustedKeyServers are notaries asked for keys a server does not
	// give us itself (Synapse's trusted_key_servers).
	TrustedKeyServers []TrustedKeyServer `yaml:"trusted_key_servers"`
	// WellKnownServer, if set, is served as /.well-known/matrix/server
	// ("m.server") on the client listener: the host[:port] other servers
	// should reach this server's federation at when it is not port 8448
	// of server_name (delegation).
	WellKnownServer string `yaml:"well_known_server"`
}

// TrustedKeyServer is a notary and the keys its answers must be signed
// with (key ID to unpadded base64 ed25519 public key).
type TrustedKeyServer struct {
	ServerName string            `yaml:"server_name"`
	VerifyKeys map[string]string `yaml:"verify_keys"`
}

// Media is the content repository (uploads and downloads of files).
type Media struct {
	// MaxUploadBytes is the largest file accepted (413 M_TOO_LARGE beyond
	// it), advertised as m.upload.size.
	MaxUploadBytes int64 `yaml:"max_upload_bytes"`
	// UnusedMediaIDLifetime is how long an ID from POST /media/v1/create
	// waits for its content before it expires.
	UnusedMediaIDLifetime Duration `yaml:"unused_media_id_lifetime"`
	// MaxPendingUploadsPerUser bounds the created-but-not-uploaded IDs a
	// user may hold at once (429 M_LIMIT_EXCEEDED beyond it).
	MaxPendingUploadsPerUser int `yaml:"max_pending_uploads_per_user"`
	// QuotaBytesPerUser bounds the total size of each user's uploads (403
	// M_FORBIDDEN beyond it); 0 is no quota.
	QuotaBytesPerUser int64 `yaml:"quota_bytes_per_user"`
	// LegacyUnauthenticatedCutoff, in RFC 3339: media created before it
	// stays downloadable from the unauthenticated /_matrix/media/v3
	// endpoints. Empty means the time the media store was first set up.
	LegacyUnauthenticatedCutoff string `yaml:"legacy_unauthenticated_cutoff"`
}

// LegacyCutoff is LegacyUnauthenticatedCutoff parsed; zero when empty.
func (m Media) LegacyCutoff() time.Time {
	t, _ := time.Parse(time.RFC3339, m.LegacyUnauthenticatedCutoff)
	return t
}

// SyncStream bounds each WebSocket sync stream (docs/websocket.md).
type SyncStream struct {
	// PingInterval is the keepalive period; PingTimeout how long a pong
	// may take before the stream is closed.
	PingInterval Duration `yaml:"ping_interval"`
	PingTimeout  Duration `yaml:"ping_timeout"`
	// WriteTimeout is how long one message may take to write (plus 1 s
	// per 64 KiB of it) before a client that does not read is cut off.
	WriteTimeout Duration `yaml:"write_timeout"`
	// MinWriteRate is the slowest a client may read a message, in bytes
	// per second, beyond WriteTimeout.
	MinWriteRate int64 `yaml:"min_write_bytes_per_second"`
	// QueueLength bounds the messages waiting for the writer.
	QueueLength int `yaml:"queue_length"`
}

type Presence struct {
	// Enabled tracks users' presence and sends it to those who share a
	// room with them. When off, setting presence is accepted and ignored,
	// everyone reads as offline, and /sync carries no presence.
	Enabled bool `yaml:"enabled"`
}

type Rooms struct {
	// DefaultRoomVersion is the version of rooms created without one.
	DefaultRoomVersion string `yaml:"default_room_version"`
	// MaxDelayedEventDelay is the longest delay a client may schedule an
	// event with (MSC4140 delayed events, which Element Call uses to leave
	// calls of vanished clients); "0" turns delayed events off.
	MaxDelayedEventDelay Duration `yaml:"max_delayed_event_delay"`
}

type Database struct {
	// Engine is "sqlite" (the default) or "postgres".
	Engine string `yaml:"engine"`
	// Path of the SQLite file; empty means DATA_DIR/tessera.db.
	Path string `yaml:"path"`
	// DSN of the PostgreSQL database (postgres://user@host/db?... or
	// "host=... dbname=..."), for engine postgres.
	DSN string `yaml:"dsn"`
	// MaxOpenConns bounds the read pool (writes use one more
	// connection, and on PostgreSQL WriterConns more); 0 means 4 (SQLite)
	// or 16 (PostgreSQL).
	MaxOpenConns int `yaml:"max_open_conns"`
	// MaxIdleConns is how many of those stay open when idle; 0 means all.
	MaxIdleConns int `yaml:"max_idle_conns"`
	// WriterConns is how many event transactions PostgreSQL commits at
	// once (rooms in parallel); 0 means 1. SQLite has one writer.
	WriterConns int `yaml:"writer_conns"`
}

type Logging struct {
	Level  string `yaml:"level"`  // debug, info, warn, error
	Format string `yaml:"format"` // text or json
}

type HTTP struct {
	MaxRequestBodyBytes int64 `yaml:"max_request_body_bytes"`
	// TrustForwardedFor takes the client address from X-Forwarded-For (only
	// behind a reverse proxy that sets it), for rate limits and device info.
	TrustForwardedFor bool     `yaml:"trust_forwarded_for"`
	ShutdownTimeout   Duration `yaml:"shutdown_timeout"`
	// BodyTimeout is the longest a request body may stall (and the time
	// allowed for its first bytes); BodyMinRate the average rate, in
	// bytes per second, below which it is cut off (408). See
	// httpx.BodyDeadline. A body_timeout of 0 disables both.
	BodyTimeout Duration `yaml:"body_timeout"`
	BodyMinRate int64    `yaml:"body_min_rate"`
}

type Registration struct {
	// Open lets anyone register with /register (m.login.dummy).
	Open bool `yaml:"open"`
	// Tokens, when set, are required to register (m.login.registration_token),
	// whether or not Open is set.
	Tokens []RegistrationToken `yaml:"tokens"`
	// SharedSecret enables /_synapse/admin/v1/register. Empty disables it.
	SharedSecret string `yaml:"shared_secret"`
	AllowGuests  bool   `yaml:"allow_guests"`
}

type RegistrationToken struct {
	Token string `yaml:"token"`
	// UsesAllowed limits completed registrations; 0 is unlimited.
	UsesAllowed int `yaml:"uses_allowed"`
	// Expires, in RFC 3339; empty never expires.
	Expires string `yaml:"expires"`
}

type Passwords struct {
	MinLength        int  `yaml:"min_length"`
	RequireDigit     bool `yaml:"require_digit"`
	RequireLowercase bool `yaml:"require_lowercase"`
	RequireUppercase bool `yaml:"require_uppercase"`
	RequireSymbol    bool `yaml:"require_symbol"`
	// Argon2id cost of new hashes. Each hash keeps its own parameters, so
	// changing these never locks anyone out. Lower only for tests.
	HashMemoryKiB  uint32 `yaml:"hash_memory_kib"`
	HashIterations uint32 `yaml:"hash_iterations"`
}

type Auth struct {
	// AccessTokenLifetime applies to clients that ask for a refresh token;
	// others get tokens that do not expire, as the spec requires.
	AccessTokenLifetime Duration `yaml:"access_token_lifetime"`
	// RefreshTokenLifetime; 0 means refresh tokens do not expire.
	RefreshTokenLifetime Duration `yaml:"refresh_token_lifetime"`
	// PasswordLogin offers m.login.password at /login (the legacy
	// authentication API). Off, clients sign in through the OAuth 2.0 API.
	PasswordLogin bool `yaml:"password_login"`
	// OAuth is the built-in OAuth 2.0 authorisation server (oauth/).
	OAuth OAuth `yaml:"oauth"`
}

// OAuth configures the OAuth 2.0 API (Matrix v1.15+): the server's own
// login, sign-up, consent, device-code and account pages, and the tokens
// it issues to clients such as Element X.
type OAuth struct {
	Enabled bool `yaml:"enabled"`
	// CodeLifetime bounds an authorisation code.
	CodeLifetime Duration `yaml:"code_lifetime"`
	// DeviceCodeLifetime bounds a device authorisation grant (RFC 8628);
	// DeviceCodeInterval is how often the device may poll.
	DeviceCodeLifetime Duration `yaml:"device_code_lifetime"`
	DeviceCodeInterval Duration `yaml:"device_code_interval"`
	// SessionLifetime bounds a sign-in to the server's pages.
	SessionLifetime Duration `yaml:"session_lifetime"`
}

func (o *OAuth) validate() error {
	if !o.Enabled {
		return nil
	}
	if o.CodeLifetime <= 0 || o.DeviceCodeLifetime <= 0 || o.DeviceCodeInterval <= 0 || o.SessionLifetime <= 0 {
		return errors.New("auth.oauth: code_lifetime, device_code_lifetime, device_code_interval and session_lifetime must be positive")
	}
	return nil
}

type RateLimits struct {
	Enabled bool `yaml:"enabled"`
	// Login attempts per client address and per account, and failed
	// attempts per account (repeated wrong passwords back off).
	LoginPerAddress    Rate `yaml:"login_per_address"`
	LoginPerAccount    Rate `yaml:"login_per_account"`
	LoginFailures      Rate `yaml:"login_failures"`
	RegisterPerAddress Rate `yaml:"register_per_address"`
	// MessagesPerUser: events a user sends (messages, state,
	// redactions); an admin's override_ratelimit replaces it per user.
	MessagesPerUser Rate `yaml:"messages_per_user"`
	// MediaUploadsPerUser: uploads and upload IDs created, per user.
	MediaUploadsPerUser Rate `yaml:"media_uploads_per_user"`
	// CallTokens: LiveKit token requests (MSC4195's get_token, the token
	// service) and delegated leaves, per user, per client address and per
	// remote server. Each may create a LiveKit room.
	CallTokens Rate `yaml:"call_tokens"`
	// DelayedEventActions: restart, send or cancel of a delayed event
	// without an access token (by its delay ID, MSC4140), per client
	// address. A service that keeps many users' calls alive may need more.
	DelayedEventActions Rate `yaml:"delayed_event_actions"`
	// OAuthTokenPerAddress: requests to the OAuth token endpoint (code
	// exchanges, refreshes, device code polls), per client address.
	OAuthTokenPerAddress Rate `yaml:"oauth_token_per_address"`
}

// Rate is a token bucket: Burst requests at once, refilled at PerSecond.
type Rate struct {
	PerSecond float64 `yaml:"per_second"`
	Burst     int     `yaml:"burst"`
}

// URLPreviews is GET /_matrix/client/v1/media/preview_url: the server
// fetches URLs for clients, so it is off by default and refuses internal
// addresses when on.
type URLPreviews struct {
	Enabled bool `yaml:"enabled"`
	// MaxResponseBytes caps each page or image fetched.
	MaxResponseBytes int64 `yaml:"max_response_bytes"`
	// Timeout bounds one fetch, redirects included.
	Timeout Duration `yaml:"timeout"`
	// CacheLifetime is how long a preview is served from the cache.
	CacheLifetime Duration `yaml:"cache_lifetime"`
	// IPRangeBlacklist adds CIDRs to the built-in deny list (loopback,
	// private, link-local and other internal ranges), which always applies.
	IPRangeBlacklist []string `yaml:"ip_range_blacklist"`
	// IPRangeWhitelist CIDRs are allowed even when denied.
	IPRangeWhitelist []string `yaml:"ip_range_whitelist"`
}

// Push is the delivery of notifications to the push gateways of HTTP
// pushers (POST /_matrix/push/v1/notify). The gateways' URLs come from
// users, so they get the same SSRF guard as URL previews.
type Push struct {
	// IncludeContent sends the event's content to gateways (Synapse's
	// push.include_content); false sends what event_id_only would.
	IncludeContent bool `yaml:"include_content"`
	// GroupUnreadCountByRoom makes the badge the number of rooms with
	// unread notifications rather than the number of notifications
	// (Synapse's push.group_unread_count_by_room).
	GroupUnreadCountByRoom bool `yaml:"group_unread_count_by_room"`
	// Timeout bounds one request to a gateway.
	Timeout Duration `yaml:"timeout"`
	// InitialBackoff and MaxBackoff bound the waits between retries of a
	// notification that failed (network error, 429 or 5xx).
	InitialBackoff Duration `yaml:"initial_backoff"`
	MaxBackoff     Duration `yaml:"max_backoff"`
	// GiveUpAfter is how long a notification is retried before it is
	// dropped; DisableAfter how long a pusher may fail, with no success,
	// before it is disabled.
	GiveUpAfter  Duration `yaml:"give_up_after"`
	DisableAfter Duration `yaml:"disable_after"`
	// IPRangeBlacklist adds CIDRs to the built-in deny list;
	// IPRangeWhitelist CIDRs are allowed even when denied (a gateway on
	// this host or the private network).
	IPRangeBlacklist []string `yaml:"ip_range_blacklist"`
	IPRangeWhitelist []string `yaml:"ip_range_whitelist"`
	// Email is the SMTP relay of email pushers; off (pushers of kind
	// email refused) while SMTPHost is empty.
	Email PushEmail `yaml:"email"`
}

// PushEmail is how email pushers send their mail (Synapse's email
// section): through one SMTP relay, batched per room.
type PushEmail struct {
	SMTPHost string `yaml:"smtp_host"`
	// SMTPPort 0 is the port of the TLS mode: 587, 465 or 25.
	SMTPPort int `yaml:"smtp_port"`
	// TLS is "starttls" (required, not opportunistic), "tls" (implicit
	// TLS) or "none" (only for a relay on this host, unless
	// AllowPlaintext). Empty: Synapse's keys below decide, else starttls.
	TLS string `yaml:"tls"`
	// RequireTransportSecurity, EnableTLS and ForceTLS are Synapse's
	// names for the TLS mode, so that its email section can be copied:
	// force_tls is tls, enable_tls: false is none, and otherwise
	// starttls, always required (Synapse's default falls back to plain
	// text when the relay offers no STARTTLS; Tessera does not).
	RequireTransportSecurity *bool `yaml:"require_transport_security"`
	EnableTLS                *bool `yaml:"enable_tls"`
	ForceTLS                 *bool `yaml:"force_tls"`
	// TLSName is the name the relay's certificate must be valid for
	// (Synapse's tlsname); empty: SMTPHost.
	TLSName string `yaml:"tlsname"`
	// CAFile is a PEM file of the CAs the relay's certificate is checked
	// against instead of the system's.
	CAFile string `yaml:"ca_file"`
	// InsecureSkipVerify accepts any certificate: for tests only.
	InsecureSkipVerify bool `yaml:"insecure_skip_verify"`
	// AllowPlaintext allows tls: none to a relay on another host.
	AllowPlaintext bool   `yaml:"allow_plaintext"`
	Username       string `yaml:"username"`
	Password       string `yaml:"password"`
	// From is the sender, "Name <address>" or an address.
	From    string `yaml:"from"`
	AppName string `yaml:"app_name"`
	// Delay is how long after a room's first unread notification its
	// email waits for more (and for the user to read them elsewhere).
	Delay Duration `yaml:"delay"`
}

// resolveSynapseTLS sets TLS from Synapse's require_transport_security,
// enable_tls and force_tls when they are given, and to starttls when
// nothing is.
func (e *PushEmail) resolveSynapseTLS() error {
	isSet := func(b *bool, v bool) bool { return b != nil && *b == v }
	mode := ""
	switch {
	case isSet(e.EnableTLS, false):
		if isSet(e.ForceTLS, true) || isSet(e.RequireTransportSecurity, true) {
			return errors.New("push.email: enable_tls: false contradicts force_tls and require_transport_security")
		}
		mode = "none"
	case isSet(e.ForceTLS, true):
		mode = "tls"
	case e.EnableTLS != nil || e.ForceTLS != nil || e.RequireTransportSecurity != nil:
		mode = "starttls"
	}
	switch {
	case mode == "" && e.TLS == "":
		e.TLS = "starttls"
	case mode == "":
	case e.TLS == "":
		e.TLS = mode
	case e.TLS != mode:
		return fmt.Errorf("push.email.tls: %s contradicts Synapse's keys (enable_tls, force_tls, require_transport_security), which say %s", e.TLS, mode)
	}
	return nil
}

// Duration is a time.Duration written as "5m", "1h30m" or "0".
type Duration time.Duration

func (d *Duration) UnmarshalYAML(n *yaml.Node) error {
	var s string
	if err := n.Decode(&s); err != nil {
		return fmt.Errorf("expected a duration such as \"5m\"")
	}
	v, err := time.ParseDuration(s)
	if err != nil || v < 0 {
		return fmt.Errorf("expected a duration such as \"5m\", got %q", s)
	}
	*d = Duration(v)
	return nil
}

func (d Duration) MarshalYAML() (any, error) { return time.Duration(d).String(), nil }

// Std is the value as a time.Duration.
func (d Duration) Std() time.Duration { return time.Duration(d) }

// Default is the configuration with every default filled in.
func Default() Config {
	return Config{
		ServerName: "localhost",
		Listen:     "127.0.0.1:8008",
		DataDir:    "./data",
		Logging:    Logging{Level: "info", Format: "text"},
		Database:   Database{Engine: "sqlite"},
		HTTP: HTTP{
			MaxRequestBodyBytes: 4 << 20,
			ShutdownTimeout:     Duration(10 * time.Second),
			BodyTimeout:         Duration(30 * time.Second),
			BodyMinRate:         4 << 10,
		},
		// Argon2id at OWASP's m=19 MiB, t=2, p=1: as strong for the
		// time spent as 64 MiB with t=1, and a burst of registrations
		// (hashSlots at once) holds a third of the memory.
		// https://cheatsheetseries.owasp.org/cheatsheets/Password_Storage_Cheat_Sheet.html#argon2id
		Passwords: Passwords{MinLength: 8, HashMemoryKiB: 19 * 1024, HashIterations: 2},
		Rooms:     Rooms{DefaultRoomVersion: "12", MaxDelayedEventDelay: Duration(24 * time.Hour)},
		Presence:  Presence{Enabled: true},
		SyncStream: SyncStream{
			PingInterval: Duration(30 * time.Second),
			PingTimeout:  Duration(20 * time.Second),
			WriteTimeout: Duration(15 * time.Second),
			MinWriteRate: 64 << 10,
			QueueLength:  16,
		},
		Auth: Auth{AccessTokenLifetime: Duration(5 * time.Minute), PasswordLogin: true,
			OAuth: OAuth{Enabled: true, CodeLifetime: Duration(10 * time.Minute), DeviceCodeLifetime: Duration(10 * time.Minute),
				DeviceCodeInterval: Duration(5 * time.Second), SessionLifetime: Duration(24 * time.Hour)}},
		// Synapse's defaults (max_upload_size, unused_expiration_time,
		// max_pending_media_uploads).
		Media: Media{
			MaxUploadBytes:           50 << 20,
			UnusedMediaIDLifetime:    Duration(24 * time.Hour),
			MaxPendingUploadsPerUser: 10,
		},
		RateLimits: RateLimits{
			Enabled: true,
			// Synapse's defaults (rc_login, rc_registration).
			LoginPerAddress:    Rate{PerSecond: 0.003, Burst: 5},
			LoginPerAccount:    Rate{PerSecond: 0.003, Burst: 5},
			LoginFailures:      Rate{PerSecond: 0.17, Burst: 3},
			RegisterPerAddress: Rate{PerSecond: 0.17, Burst: 3},
			// Synapse's rc_message.
			MessagesPerUser: Rate{PerSecond: 0.2, Burst: 10},
			// Synapse's rc_media_create.
			MediaUploadsPerUser: Rate{PerSecond: 10, Burst: 50},
			// A client asks once per SFU when it joins a call (and on
			// reconnects); a server asks for all its users.
			CallTokens: Rate{PerSecond: 1, Burst: 20},
			// Element Call restarts each call's leave every few seconds.
			DelayedEventActions: Rate{PerSecond: 10, Burst: 100},
			// A device code flow polls every 5 s; the devices behind one
			// address refresh their tokens every few minutes each.
			OAuthTokenPerAddress: Rate{PerSecond: 1, Burst: 20},
		},
		Federation: Federation{
			Listen:      "0.0.0.0:8448",
			KeyValidity: Duration(24 * time.Hour),
		},
		Calls: Calls{SignalPort: 7880, UDPPort: 7882, TCPPort: 7881,
			DelegatedLeavePollInterval: Duration(2 * time.Second), DelegatedLeaveConnectTimeout: Duration(2 * time.Minute)},
		// Synapse's turn_user_lifetime and turn_allow_guests.
		VoIP:          VoIP{TURNUserLifetime: Duration(time.Hour), TURNAllowGuests: true},
		ServerNotices: ServerNotices{RoomName: "Server Notices"},
		Housekeeping:  Housekeeping{Interval: Duration(time.Hour), TxnIDLifetime: Duration(24 * time.Hour)},
		Moderation:    Moderation{ShadowBanDelayMin: Duration(time.Second), ShadowBanDelayMax: Duration(10 * time.Second)},
		Web:           Web{Enabled: true, Path: "/"},
		Webhooks: Webhooks{BotLocalpart: "webhooks", BotDisplayName: "Webhooks", MaxBodyBytes: 1 << 20,
			Rate: Rate{PerSecond: 5, Burst: 30}, DeliveryRetention: Duration(7 * 24 * time.Hour)},
		// Synapse's push defaults and HttpPusher's backoff (1 s doubling
		// to 1 h, a notification dropped after a day).
		Push: Push{IncludeContent: true, GroupUnreadCountByRoom: true, Timeout: Duration(30 * time.Second),
			InitialBackoff: Duration(time.Second), MaxBackoff: Duration(time.Hour),
			GiveUpAfter: Duration(24 * time.Hour), DisableAfter: Duration(72 * time.Hour),
			// Synapse's notif_delay_before_mail and app_name.
			Email: PushEmail{AppName: "Matrix", Delay: Duration(10 * time.Minute)}},
		// Synapse's max_spider_size; previews are off as in Synapse.
		URLPreviews: URLPreviews{
			MaxResponseBytes: 10 << 20,
			Timeout:          Duration(10 * time.Second),
			CacheLifetime:    Duration(time.Hour),
		},
	}
}

// Load reads, decodes and validates the file at path. Relative paths in it
// are taken relative to the file's directory.
func Load(path string) (*Config, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("config file %s does not exist (create one with `tessera generate-config`)", path)
		}
		return nil, fmt.Errorf("read config file: %w", err)
	}
	cfg, err := Parse(raw)
	if err != nil {
		return nil, fmt.Errorf("config %s: %w", path, err)
	}
	cfg.resolvePaths(filepath.Dir(path))
	return cfg, nil
}

var (
	yamlUnknownKey = regexp.MustCompile(`^line (\d+): field (\S+) not found in type`)
	yamlTypeErr    = regexp.MustCompile(`^line (\d+): cannot unmarshal !!(\w+) ` + "`" + `([^` + "`" + `]*)` + "`" + ` into (\S+)`)
)

// Parse decodes and validates YAML.
func Parse(raw []byte) (*Config, error) {
	cfg := Default()
	dec := yaml.NewDecoder(bytes.NewReader(raw))
	dec.KnownFields(true)
	if err := dec.Decode(&cfg); err != nil && !errors.Is(err, io.EOF) {
		return nil, friendlyYAMLError(raw, err)
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	return &cfg, nil
}

// friendlyYAMLError turns yaml.v3's errors into one line that names the
// full key, e.g. `line 4: unknown key "logging.levle"`.
func friendlyYAMLError(raw []byte, err error) error {
	var te *yaml.TypeError
	if !errors.As(err, &te) || len(te.Errors) == 0 {
		return errors.New(strings.ReplaceAll(err.Error(), "\n", " "))
	}
	msg := te.Errors[0]
	var root yaml.Node
	_ = yaml.Unmarshal(raw, &root)
	if m := yamlUnknownKey.FindStringSubmatch(msg); m != nil {
		line, _ := strconv.Atoi(m[1])
		if key := keyAtLine(&root, line, ""); key != "" {
			return fmt.Errorf("line %s: unknown key %q", m[1], key)
		}
		return fmt.Errorf("line %s: unknown key %q", m[1], m[2])
	}
	if m := yamlTypeErr.FindStringSubmatch(msg); m != nil {
		line, _ := strconv.Atoi(m[1])
		return fmt.Errorf("line %s: %s: expected %s, got %q", m[1], keyAtLine(&root, line, ""), describeType(m[4]), m[3])
	}
	return errors.New(msg)
}

// keyAtLine finds the dotted path of the key on a line of the document.
func keyAtLine(n *yaml.Node, line int, prefix string) string {
	switch n.Kind {
	case yaml.DocumentNode:
		for _, c := range n.Content {
			if k := keyAtLine(c, line, prefix); k != "" {
				return k
			}
		}
	case yaml.MappingNode:
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, v := n.Content[i], n.Content[i+1]
			path := prefix + k.Value
			if k.Line == line {
				return path
			}
			if found := keyAtLine(v, line, path+"."); found != "" {
				return found
			}
		}
	case yaml.SequenceNode:
		for i, c := range n.Content {
			if found := keyAtLine(c, line, fmt.Sprintf("%s[%d].", strings.TrimSuffix(prefix, "."), i)); found != "" {
				return found
			}
		}
	}
	return ""
}

func describeType(goType string) string {
	switch {
	case strings.HasPrefix(goType, "int"), strings.HasPrefix(goType, "uint"):
		return "a whole number"
	case strings.HasPrefix(goType, "float"):
		return "a number"
	case goType == "bool":
		return "true or false"
	case goType == "string":
		return "a string"
	case strings.HasPrefix(goType, "[]"):
		return "a list"
	}
	return "a " + goType
}

// Validate checks every value, naming the key of the first bad one.
func (c *Config) Validate() error {
	if err := validServerName(c.ServerName); err != nil {
		return fmt.Errorf("server_name: %w", err)
	}
	if _, _, err := net.SplitHostPort(c.Listen); err != nil {
		return fmt.Errorf("listen: expected HOST:PORT, got %q", c.Listen)
	}
	if err := c.Auth.OAuth.validate(); err != nil {
		return err
	}
	if err := c.Webhooks.validate(); err != nil {
		return err
	}
	if err := c.Housekeeping.validate(); err != nil {
		return err
	}
	if err := c.Moderation.validate(); err != nil {
		return err
	}
	if err := c.Web.validate(); err != nil {
		return err
	}
	if c.PublicBaseURL != "" {
		u, err := url.Parse(c.PublicBaseURL)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return fmt.Errorf("public_baseurl: expected an http(s) URL, got %q", c.PublicBaseURL)
		}
	}
	if c.DataDir == "" {
		return errors.New("data_dir: must not be empty")
	}
	switch c.Database.Engine {
	case "", "sqlite":
	case "postgres":
		if c.Database.DSN == "" {
			return errors.New("database.dsn: expected the PostgreSQL database to use, e.g. postgres://tessera@localhost/tessera")
		}
	default:
		return fmt.Errorf("database.engine: expected sqlite or postgres, got %q", c.Database.Engine)
	}
	if err := c.validateInstances(); err != nil {
		return err
	}
	if c.Database.MaxOpenConns < 0 || c.Database.MaxIdleConns < 0 || c.Database.WriterConns < 0 {
		return errors.New("database.max_open_conns / max_idle_conns / writer_conns: expected 0 (the default) or more")
	}
	switch c.Logging.Level {
	case "debug", "info", "warn", "error":
	default:
		return fmt.Errorf("logging.level: expected one of debug, info, warn, error, got %q", c.Logging.Level)
	}
	switch c.Logging.Format {
	case "text", "json":
	default:
		return fmt.Errorf("logging.format: expected text or json, got %q", c.Logging.Format)
	}
	if c.HTTP.MaxRequestBodyBytes < 1024 {
		return fmt.Errorf("http.max_request_body_bytes: expected at least 1024, got %d", c.HTTP.MaxRequestBodyBytes)
	}
	for i, t := range c.Registration.Tokens {
		key := fmt.Sprintf("registration.tokens[%d]", i)
		if t.Token == "" || len(t.Token) > 64 || !regTokenRe.MatchString(t.Token) {
			return fmt.Errorf("%s.token: expected 1-64 characters from [A-Za-z0-9._~-]", key)
		}
		if t.UsesAllowed < 0 {
			return fmt.Errorf("%s.uses_allowed: expected 0 (unlimited) or more, got %d", key, t.UsesAllowed)
		}
		if t.Expires != "" {
			if _, err := time.Parse(time.RFC3339, t.Expires); err != nil {
				return fmt.Errorf("%s.expires: expected an RFC 3339 time, got %q", key, t.Expires)
			}
		}
	}
	if c.HTTP.BodyTimeout < 0 || (c.HTTP.BodyTimeout > 0 && c.HTTP.BodyMinRate <= 0) {
		return errors.New("http.body_timeout / body_min_rate: expected a timeout of 0 (off) or more, and a positive rate")
	}
	if c.Passwords.MinLength < 0 {
		return fmt.Errorf("passwords.min_length: expected 0 or more, got %d", c.Passwords.MinLength)
	}
	if c.Passwords.HashMemoryKiB < 8 || c.Passwords.HashIterations < 1 {
		return errors.New("passwords.hash_memory_kib / hash_iterations: expected at least 8 KiB and 1 iteration")
	}
	if !roomversions.IsStable(gomatrixserverlib.RoomVersion(c.Rooms.DefaultRoomVersion)) {
		return fmt.Errorf("rooms.default_room_version: expected a stable room version (1-12), got %q", c.Rooms.DefaultRoomVersion)
	}
	for name, d := range map[string]Duration{
		"ping_interval": c.SyncStream.PingInterval, "ping_timeout": c.SyncStream.PingTimeout,
		"write_timeout": c.SyncStream.WriteTimeout,
	} {
		if d <= 0 {
			return fmt.Errorf("sync_stream.%s: expected a duration above 0", name)
		}
	}
	if c.SyncStream.MinWriteRate < 1 {
		return fmt.Errorf("sync_stream.min_write_bytes_per_second: expected 1 or more, got %d", c.SyncStream.MinWriteRate)
	}
	if c.SyncStream.QueueLength < 1 {
		return fmt.Errorf("sync_stream.queue_length: expected 1 or more, got %d", c.SyncStream.QueueLength)
	}
	if c.Media.QuotaBytesPerUser < 0 {
		return fmt.Errorf("media.quota_bytes_per_user: expected 0 (no quota) or more, got %d", c.Media.QuotaBytesPerUser)
	}
	if c.Media.MaxUploadBytes < 1 {
		return fmt.Errorf("media.max_upload_bytes: expected 1 or more, got %d", c.Media.MaxUploadBytes)
	}
	if c.Media.UnusedMediaIDLifetime <= 0 {
		return errors.New("media.unused_media_id_lifetime: expected a duration above 0")
	}
	if c.Media.MaxPendingUploadsPerUser < 1 {
		return fmt.Errorf("media.max_pending_uploads_per_user: expected 1 or more, got %d", c.Media.MaxPendingUploadsPerUser)
	}
	if v := c.Media.LegacyUnauthenticatedCutoff; v != "" {
		if _, err := time.Parse(time.RFC3339, v); err != nil {
			return fmt.Errorf("media.legacy_unauthenticated_cutoff: expected an RFC 3339 time or \"\", got %q", v)
		}
	}
	for name, r := range map[string]Rate{
		"login_per_address": c.RateLimits.LoginPerAddress, "login_per_account": c.RateLimits.LoginPerAccount,
		"login_failures": c.RateLimits.LoginFailures, "register_per_address": c.RateLimits.RegisterPerAddress,
		"media_uploads_per_user": c.RateLimits.MediaUploadsPerUser, "call_tokens": c.RateLimits.CallTokens,
		"delayed_event_actions": c.RateLimits.DelayedEventActions, "messages_per_user": c.RateLimits.MessagesPerUser,
		"oauth_token_per_address": c.RateLimits.OAuthTokenPerAddress,
	} {
		if r.PerSecond <= 0 || r.Burst < 1 {
			return fmt.Errorf("rate_limits.%s: expected per_second > 0 and burst >= 1", name)
		}
	}
	if c.URLPreviews.MaxResponseBytes < 1 {
		return fmt.Errorf("url_previews.max_response_bytes: expected 1 or more, got %d", c.URLPreviews.MaxResponseBytes)
	}
	if c.URLPreviews.Timeout <= 0 {
		return errors.New("url_previews.timeout: expected a duration above 0")
	}
	for key, list := range map[string][]string{
		"url_previews.ip_range_blacklist": c.URLPreviews.IPRangeBlacklist,
		"url_previews.ip_range_whitelist": c.URLPreviews.IPRangeWhitelist,
		"push.ip_range_blacklist":         c.Push.IPRangeBlacklist,
		"push.ip_range_whitelist":         c.Push.IPRangeWhitelist,
	} {
		for i, cidr := range list {
			if _, _, err := net.ParseCIDR(cidr); err != nil {
				return fmt.Errorf("%s[%d]: expected a CIDR such as 10.1.0.0/16, got %q", key, i, cidr)
			}
		}
	}
	for key, d := range map[string]Duration{
		"timeout": c.Push.Timeout, "initial_backoff": c.Push.InitialBackoff, "max_backoff": c.Push.MaxBackoff,
		"give_up_after": c.Push.GiveUpAfter, "disable_after": c.Push.DisableAfter,
	} {
		if d <= 0 {
			return fmt.Errorf("push.%s: expected a duration above 0", key)
		}
	}
	if c.Push.MaxBackoff < c.Push.InitialBackoff {
		return errors.New("push.max_backoff: expected at least push.initial_backoff")
	}
	if err := c.Push.Email.validate(c.PublicBaseURL); err != nil {
		return err
	}
	if err := c.Calls.validate(); err != nil {
		return err
	}
	if n := c.ServerNotices; n.SystemMXIDAvatarURL != "" && !strings.HasPrefix(n.SystemMXIDAvatarURL, "mxc://") ||
		n.RoomAvatarURL != "" && !strings.HasPrefix(n.RoomAvatarURL, "mxc://") {
		return errors.New("server_notices: system_mxid_avatar_url and room_avatar_url must be mxc:// URIs")
	}
	if err := c.VoIP.validate(); err != nil {
		return err
	}
	return c.Federation.validate()
}

// validate checks the federation section. It is checked even when
// federation is off, so that turning it on does not reveal old mistakes.
func (c *Calls) validate() error {
	for k, p := range map[string]int{"signal_port": c.SignalPort, "udp_port": c.UDPPort, "tcp_port": c.TCPPort} {
		if p < 1 || p > 65535 {
			return fmt.Errorf("calls.%s: expected a port (1-65535), got %d", k, p)
		}
	}
	if c.NodeIP != "" && net.ParseIP(c.NodeIP) == nil {
		return fmt.Errorf("calls.node_ip: expected an IP address, got %q", c.NodeIP)
	}
	if (c.APIKey == "") != (c.APISecret == "") {
		return errors.New("calls.api_key, calls.api_secret: set both or neither")
	}
	if c.APISecret != "" && len(c.APISecret) < 32 {
		return errors.New("calls.api_secret: expected at least 32 characters")
	}
	// Each delegated call asks the SFU once per interval: faster than
	// this is load for nothing.
	if d := c.DelegatedLeavePollInterval.Std(); d < 100*time.Millisecond {
		return fmt.Errorf("calls.delegated_leave_poll_interval: expected at least 100ms, got %s", d)
	}
	if d := c.DelegatedLeaveConnectTimeout.Std(); d < time.Second {
		return fmt.Errorf("calls.delegated_leave_connect_timeout: expected at least 1s, got %s", d)
	}
	return nil
}

func (f *Federation) validate() error {
	if _, _, err := net.SplitHostPort(f.Listen); err != nil {
		return fmt.Errorf("federation.listen: expected HOST:PORT, got %q", f.Listen)
	}
	if (f.TLSCert == "") != (f.TLSKey == "") {
		return errors.New("federation.tls_cert / tls_key: set both (a certificate and its key) or neither (a self-signed certificate is generated)")
	}
	if f.KeyValidity.Std() < time.Hour {
		// The spec asks servers not to publish keys that expire within
		// the hour: others would refetch them all the time.
		return fmt.Errorf("federation.key_validity: expected at least 1h, got %s", f.KeyValidity.Std())
	}
	for key, list := range map[string][]string{"allow_servers": f.AllowServers, "deny_servers": f.DenyServers} {
		for i, entry := range list {
			if err := validServerName(strings.TrimPrefix(entry, "*.")); err != nil {
				return fmt.Errorf("federation.%s[%d]: %w", key, i, err)
			}
		}
	}
	if f.WellKnownServer != "" {
		if err := validServerName(f.WellKnownServer); err != nil {
			return fmt.Errorf("federation.well_known_server: %w", err)
		}
	}
	for i, ts := range f.TrustedKeyServers {
		key := fmt.Sprintf("federation.trusted_key_servers[%d]", i)
		if err := validServerName(ts.ServerName); err != nil {
			return fmt.Errorf("%s.server_name: %w", key, err)
		}
		if len(ts.VerifyKeys) == 0 {
			return fmt.Errorf("%s.verify_keys: expected at least one key (key ID: unpadded base64 ed25519 public key)", key)
		}
		for id, pub := range ts.VerifyKeys {
			if !keyIDRe.MatchString(id) {
				return fmt.Errorf("%s.verify_keys: expected a key ID such as \"ed25519:abc123\", got %q", key, id)
			}
			if raw, err := base64.RawStdEncoding.DecodeString(strings.TrimRight(pub, "=")); err != nil || len(raw) != 32 {
				return fmt.Errorf("%s.verify_keys.%s: expected a 32-byte ed25519 public key in unpadded base64", key, id)
			}
		}
	}
	return nil
}

// AllowsServer reports whether the allow and deny lists let us federate
// with a server. An entry matches the whole server name, its host without
// the port, or, written "*.example.org", any subdomain of example.org.
func (f Federation) AllowsServer(name string) bool {
	if matchServer(f.DenyServers, name) {
		return false
	}
	return len(f.AllowServers) == 0 || matchServer(f.AllowServers, name)
}

func matchServer(list []string, name string) bool {
	host := name
	if h, _, err := net.SplitHostPort(name); err == nil {
		host = h
	}
	host = strings.ToLower(host)
	for _, entry := range list {
		entry = strings.ToLower(entry)
		if suffix, ok := strings.CutPrefix(entry, "*."); ok {
			if strings.HasSuffix(host, "."+suffix) {
				return true
			}
			continue
		}
		if entry == strings.ToLower(name) || entry == host {
			return true
		}
	}
	return false
}

var (
	regTokenRe = regexp.MustCompile(`^[A-Za-z0-9._~-]+$`)
	portRe     = regexp.MustCompile(`^[0-9]{1,5}$`)
	dnsNameRe  = regexp.MustCompile(`^[A-Za-z0-9.-]{1,255}$`)
	// keyIDRe is the spec's key ID: algorithm and version, the version
	// from [a-zA-Z0-9_].
	keyIDRe = regexp.MustCompile(`^ed25519:[A-Za-z0-9_]+$`)
)

// validServerName checks the spec's server name grammar: a DNS name or IP
// literal with an optional port.
// https://spec.matrix.org/v1.19/appendices/#server-name
func validServerName(name string) error {
	host := name
	if h, p, err := net.SplitHostPort(name); err == nil {
		if !portRe.MatchString(p) {
			return fmt.Errorf("bad port in %q", name)
		}
		host = h
		if strings.Contains(h, ":") {
			host = "[" + h + "]"
		}
	}
	switch {
	case host == "":
		return errors.New("must not be empty")
	case strings.HasPrefix(host, "["):
		if !strings.HasSuffix(host, "]") || net.ParseIP(host[1:len(host)-1]) == nil {
			return fmt.Errorf("bad IPv6 literal in %q", name)
		}
	case !dnsNameRe.MatchString(host):
		return fmt.Errorf("expected a DNS name or IP address with optional :port, got %q", name)
	}
	return nil
}

// resolvePaths fills derived paths and makes relative ones relative to dir.
func (c *Config) resolvePaths(dir string) {
	abs := func(p string) string {
		if p == "" || filepath.IsAbs(p) {
			return p
		}
		if a, err := filepath.Abs(filepath.Join(dir, p)); err == nil {
			return a
		}
		return filepath.Join(dir, p)
	}
	c.DataDir = abs(c.DataDir)
	for i, p := range c.AppServices {
		c.AppServices[i] = abs(p)
	}
	if c.Database.Path == "" {
		c.Database.Path = filepath.Join(c.DataDir, "tessera.db")
	} else {
		c.Database.Path = abs(c.Database.Path)
	}
	if c.SigningKeyPath == "" {
		c.SigningKeyPath = filepath.Join(c.DataDir, "signing.key")
	} else {
		c.SigningKeyPath = abs(c.SigningKeyPath)
	}
	c.Federation.TLSCert = abs(c.Federation.TLSCert)
	c.Federation.TLSKey = abs(c.Federation.TLSKey)
	c.Push.Email.CAFile = abs(c.Push.Email.CAFile)
}

// Finalize fills derived paths for a config built in code (tests), relative
// to the working directory.
func (c *Config) Finalize() error {
	if err := c.Validate(); err != nil {
		return err
	}
	c.resolvePaths(".")
	return nil
}

// validate checks the voip section.
func (v *VoIP) validate() error {
	for i, u := range v.TURNURIs {
		if !strings.HasPrefix(u, "turn:") && !strings.HasPrefix(u, "turns:") && !strings.HasPrefix(u, "stun:") {
			return fmt.Errorf("voip.turn_uris[%d]: expected a turn:, turns: or stun: URI, got %q", i, u)
		}
	}
	if (v.TURNUsername == "") != (v.TURNPassword == "") {
		return errors.New("voip.turn_username, voip.turn_password: set both or neither")
	}
	if v.TURNUserLifetime < Duration(time.Minute) {
		return fmt.Errorf("voip.turn_user_lifetime: expected at least 1m, got %s", v.TURNUserLifetime.Std())
	}
	return nil
}

func (w *Webhooks) validate() error {
	if !w.Enabled {
		return nil
	}
	if w.BotLocalpart == "" || strings.ContainsAny(w.BotLocalpart, ":@ ") || strings.ToLower(w.BotLocalpart) != w.BotLocalpart {
		return fmt.Errorf("webhooks.bot_localpart: %q is not a valid localpart", w.BotLocalpart)
	}
	if w.MaxBodyBytes < 1024 {
		return fmt.Errorf("webhooks.max_body_bytes: expected at least 1024, got %d", w.MaxBodyBytes)
	}
	if w.Rate.PerSecond <= 0 || w.Rate.Burst < 1 {
		return fmt.Errorf("webhooks.rate: expected per_second > 0 and burst >= 1")
	}
	return nil
}

func (e *PushEmail) validate(publicBaseURL string) error {
	if e.SMTPHost == "" {
		return nil
	}
	switch e.TLS {
	case "", "starttls", "tls", "none":
	default:
		return fmt.Errorf("push.email.tls: expected starttls, tls or none, got %q", e.TLS)
	}
	if err := e.resolveSynapseTLS(); err != nil {
		return err
	}
	if e.SMTPPort < 0 || e.SMTPPort > 65535 {
		return fmt.Errorf("push.email.smtp_port: expected a port, got %d", e.SMTPPort)
	}
	// The check at connect time (the push domain's) also covers a name
	// that resolves elsewhere; this one fails the start.
	if e.TLS == "none" && !e.AllowPlaintext && e.SMTPHost != "localhost" && !net.ParseIP(e.SMTPHost).IsLoopback() {
		return errors.New("push.email.tls: none would send mail (and the password) in clear to a relay on another host; set allow_plaintext to allow it")
	}
	if e.TLS == "none" && (e.CAFile != "" || e.InsecureSkipVerify || e.TLSName != "") {
		return errors.New("push.email: ca_file, tlsname and insecure_skip_verify need tls: starttls or tls")
	}
	if e.CAFile != "" && e.InsecureSkipVerify {
		return errors.New("push.email: ca_file and insecure_skip_verify contradict each other")
	}
	if _, err := mail.ParseAddress(e.From); err != nil {
		return fmt.Errorf("push.email.from: expected an address such as \"Matrix <noreply@example.org>\", got %q", e.From)
	}
	if publicBaseURL == "" {
		return errors.New("push.email: public_baseurl is needed for the links in the emails")
	}
	if e.Delay < 0 {
		return errors.New("push.email.delay: expected a duration")
	}
	return nil
}
