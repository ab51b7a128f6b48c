package oauth

import "github.com/tessera-hs/tessera/internal/database"

// migrations are the OAuth 2.0 server's tables. The tokens it issues are the
// users domain's ordinary access and refresh tokens; these tables hold only
// what OAuth adds around them. Released migrations are never edited.
var migrations = []database.Migration{
	{Version: 1, SQL: `
-- A dynamically registered client (RFC 7591). metadata_json is the
-- validated metadata as answered at registration.
CREATE TABLE oauth_clients (
	client_id        TEXT PRIMARY KEY,
	application_type TEXT NOT NULL,
	metadata_json    TEXT NOT NULL,
	created_ts       BIGINT NOT NULL
);

-- Authorisation codes, by SHA-256 of the code. used_ts is set on the one
-- exchange; a second exchange is a replay, and the device's tokens are
-- revoked (RFC 6749 section 4.1.2). Rows are pruned after expiry.
CREATE TABLE oauth_codes (
	code_hash      BLOB PRIMARY KEY,
	client_id      TEXT NOT NULL,
	redirect_uri   TEXT NOT NULL,
	user_id        TEXT NOT NULL,
	device_id      TEXT NOT NULL,
	scope          TEXT NOT NULL,
	code_challenge TEXT NOT NULL,
	created_ts     BIGINT NOT NULL,
	expires_ts     BIGINT NOT NULL,
	used_ts        BIGINT
);
CREATE INDEX oauth_codes_expires ON oauth_codes (expires_ts);

-- The devices signed in through OAuth: which client and scope, so that a
-- refresh answers the same scope and the account page names the client.
CREATE TABLE oauth_grants (
	user_id    TEXT NOT NULL,
	device_id  TEXT NOT NULL,
	client_id  TEXT NOT NULL,
	scope      TEXT NOT NULL,
	created_ts BIGINT NOT NULL,
	PRIMARY KEY (user_id, device_id)
);

-- Refresh tokens already exchanged, by SHA-256. One presented again after
-- its successor was used is a stolen copy: the device's tokens (its whole
-- token family) are revoked.
CREATE TABLE oauth_used_refresh_tokens (
	token_hash BLOB PRIMARY KEY,
	user_id    TEXT NOT NULL,
	device_id  TEXT NOT NULL,
	used_ts    BIGINT NOT NULL
);
CREATE INDEX oauth_used_refresh_device ON oauth_used_refresh_tokens (user_id, device_id);

-- Device authorisation grants (RFC 8628). status: pending, approved,
-- denied, done. user_id/device_id are set on approval.
CREATE TABLE oauth_device_grants (
	device_code_hash BLOB PRIMARY KEY,
	user_code        TEXT NOT NULL UNIQUE,
	client_id        TEXT NOT NULL,
	scope            TEXT NOT NULL,
	status           TEXT NOT NULL,
	user_id          TEXT,
	device_id        TEXT NOT NULL,
	created_ts       BIGINT NOT NULL,
	expires_ts       BIGINT NOT NULL,
	last_poll_ts     BIGINT NOT NULL DEFAULT 0
);
CREATE INDEX oauth_device_grants_expires ON oauth_device_grants (expires_ts);

-- Browser sessions of the server's own pages, by SHA-256 of the cookie.
CREATE TABLE oauth_browser_sessions (
	session_hash BLOB PRIMARY KEY,
	user_id      TEXT NOT NULL,
	created_ts   BIGINT NOT NULL,
	expires_ts   BIGINT NOT NULL
);
CREATE INDEX oauth_browser_sessions_user ON oauth_browser_sessions (user_id);
`},
	{Version: 2, SQL: `
-- A user's approval, on the account page, of replacing their cross-signing
-- keys: the m.oauth UIA stage passes until expires_ts.
CREATE TABLE oauth_cross_signing_resets (
	user_id     TEXT PRIMARY KEY,
	approved_ts BIGINT NOT NULL,
	expires_ts  BIGINT NOT NULL
);
`},
}
