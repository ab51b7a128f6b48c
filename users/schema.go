package users

import "github.com/tessera-hs/tessera/internal/database"

// migrations are the users domain's tables. Released migrations are never
// edited; a schema change is a new entry.
var migrations = []database.Migration{
	{Version: 1, SQL: `
CREATE TABLE accounts (
	user_id       TEXT PRIMARY KEY,
	localpart     TEXT NOT NULL UNIQUE,
	password_hash TEXT,              -- NULL: cannot log in with a password
	created_ts    INTEGER NOT NULL,
	is_admin      INTEGER NOT NULL DEFAULT 0,
	is_guest      INTEGER NOT NULL DEFAULT 0,
	deactivated   INTEGER NOT NULL DEFAULT 0
);

CREATE TABLE devices (
	user_id        TEXT NOT NULL REFERENCES accounts(user_id),
	device_id      TEXT NOT NULL,
	display_name   TEXT,
	created_ts     INTEGER NOT NULL,
	last_seen_ts   INTEGER,
	last_seen_ip   TEXT,
	last_seen_user_agent TEXT,
	PRIMARY KEY (user_id, device_id)
);

-- Tokens are stored only as SHA-256 hashes of the random token.
CREATE TABLE refresh_tokens (
	id         INTEGER PRIMARY KEY,
	token_hash BLOB NOT NULL UNIQUE,
	user_id    TEXT NOT NULL,
	device_id  TEXT NOT NULL,
	created_ts INTEGER NOT NULL,
	expires_ts INTEGER NOT NULL,     -- 0: never
	-- The token this one was exchanged for (it replaced prev_id); the older
	-- one stays valid until the newer pair is first used.
	prev_id    INTEGER,
	FOREIGN KEY (user_id, device_id) REFERENCES devices(user_id, device_id) ON DELETE CASCADE
);

CREATE TABLE access_tokens (
	token_hash BLOB PRIMARY KEY,
	user_id    TEXT NOT NULL,
	device_id  TEXT NOT NULL,
	created_ts INTEGER NOT NULL,
	expires_ts INTEGER NOT NULL,     -- 0: never
	refresh_id INTEGER REFERENCES refresh_tokens(id) ON DELETE CASCADE,
	FOREIGN KEY (user_id, device_id) REFERENCES devices(user_id, device_id) ON DELETE CASCADE
);
CREATE INDEX access_tokens_device ON access_tokens(user_id, device_id);
CREATE INDEX refresh_tokens_device ON refresh_tokens(user_id, device_id);

-- One row per profile field: displayname, avatar_url, m.tz and custom keys.
CREATE TABLE profile_fields (
	user_id    TEXT NOT NULL REFERENCES accounts(user_id),
	field      TEXT NOT NULL,
	value_json TEXT NOT NULL,
	PRIMARY KEY (user_id, field)
);

CREATE TABLE filters (
	user_id     TEXT NOT NULL REFERENCES accounts(user_id),
	filter_id   INTEGER NOT NULL,
	filter_json TEXT NOT NULL,
	PRIMARY KEY (user_id, filter_id)
);

-- Completed registrations per configured registration token.
CREATE TABLE registration_token_uses (
	token     TEXT PRIMARY KEY,
	completed INTEGER NOT NULL
);
`},
	{Version: 2, SQL: `
-- The position of each of the domain's sync streams: the last position
-- handed out. A change takes the next one inside its own write transaction;
-- as all writes go through one connection, positions commit in order and a
-- reader that sees position N has seen everything before it.
CREATE TABLE users_stream_positions (
	stream TEXT PRIMARY KEY,
	pos    INTEGER NOT NULL
);
INSERT INTO users_stream_positions (stream, pos) VALUES ('account_data', 0), ('receipts', 0);

-- Account data: global (room_id '') and per room, including m.tag and
-- m.fully_read. stream_pos is the account_data stream position of the
-- latest change, for /sync.
-- https://spec.matrix.org/v1.19/client-server-api/#client-config
CREATE TABLE account_data (
	user_id    TEXT NOT NULL REFERENCES accounts(user_id),
	room_id    TEXT NOT NULL,
	type       TEXT NOT NULL,
	content    TEXT NOT NULL,
	stream_pos INTEGER NOT NULL,
	PRIMARY KEY (user_id, room_id, type)
);
CREATE INDEX account_data_stream ON account_data(user_id, stream_pos);

-- Receipts: the latest event each user acknowledged per room, receipt type
-- and thread (thread_id '' for an unthreaded receipt). event_pos is the
-- event's room-server stream position, so a receipt only moves forward;
-- stream_pos is the receipts stream position of the change, for /sync.
-- https://spec.matrix.org/v1.19/client-server-api/#receipts
CREATE TABLE receipts (
	room_id      TEXT NOT NULL,
	user_id      TEXT NOT NULL,
	receipt_type TEXT NOT NULL,
	thread_id    TEXT NOT NULL,
	event_id     TEXT NOT NULL,
	event_pos    INTEGER NOT NULL,
	ts           INTEGER NOT NULL,
	stream_pos   INTEGER NOT NULL,
	PRIMARY KEY (room_id, user_id, receipt_type, thread_id)
);
CREATE INDEX receipts_stream ON receipts(stream_pos);
CREATE INDEX receipts_room_stream ON receipts(room_id, stream_pos);
`},
	{Version: 3, SQL: `
-- Presence: one row per local user who has had any, holding what was last
-- published to other users (the in-memory copy in syncapi may have a newer
-- last_active_ts that was not worth a notification). status_msg '' is none;
-- last_active_ts 0 is never. stream_pos is the presence stream position of
-- the latest published change, for /sync.
-- https://spec.matrix.org/v1.19/client-server-api/#presence
INSERT INTO users_stream_positions (stream, pos) VALUES ('presence', 0);
CREATE TABLE presence (
	user_id          TEXT PRIMARY KEY REFERENCES accounts(user_id),
	presence         TEXT NOT NULL,
	status_msg       TEXT NOT NULL,
	last_active_ts   INTEGER NOT NULL,
	currently_active INTEGER NOT NULL,
	stream_pos       INTEGER NOT NULL
);
CREATE INDEX presence_stream ON presence(stream_pos);
`},
	{Version: 4, SQL: `
-- Dehydrated devices (MSC3814): at most one per user, a device with no
-- access token whose encrypted state (device_data, opaque to the server)
-- a new login can rehydrate. The device itself is a row of devices, so
-- its keys and to-device messages are kept like any device's.
CREATE TABLE dehydrated_devices (
	user_id     TEXT PRIMARY KEY REFERENCES accounts(user_id),
	device_id   TEXT NOT NULL,
	device_data TEXT NOT NULL
);
`},
	{Version: 5, SQL: `
-- Refreshing and logging out delete tokens by the refresh token they hang
-- from; without these each did a scan of every token on the server.
CREATE INDEX access_tokens_refresh ON access_tokens(refresh_id) WHERE refresh_id IS NOT NULL;
CREATE INDEX refresh_tokens_prev ON refresh_tokens(prev_id) WHERE prev_id IS NOT NULL;
`},
	{Version: 6, SQL: `
-- OpenID tokens: a user proves who they are to a third party (an
-- integration manager, a MatrixRTC SFU's token service), which asks our
-- federation API's openid/userinfo. Stored hashed, like access tokens.
CREATE TABLE openid_tokens (
	token_hash BLOB PRIMARY KEY,
	user_id    TEXT NOT NULL,
	expires_ts INTEGER NOT NULL
);
CREATE INDEX openid_tokens_expiry ON openid_tokens(expires_ts);
`},
	{Version: 7, SQL: `
-- Presence also holds users of other servers (m.presence EDUs), who have
-- no account here: the table is made again without the foreign key.
CREATE TABLE presence_new (
	user_id          TEXT PRIMARY KEY,
	presence         TEXT NOT NULL,
	status_msg       TEXT NOT NULL,
	last_active_ts   INTEGER NOT NULL,
	currently_active INTEGER NOT NULL,
	stream_pos       INTEGER NOT NULL
);
INSERT INTO presence_new SELECT user_id, presence, status_msg, last_active_ts, currently_active, stream_pos FROM presence;
DROP TABLE presence;
ALTER TABLE presence_new RENAME TO presence;
CREATE INDEX presence_stream ON presence(stream_pos);
`},
	{Version: 8, SQL: `
-- What server admins set on an account (the admin API): a shadow-banned
-- user's events and invites are dropped while they appear to succeed; a
-- suspended user may read but not write (MSC3823); a locked user may do
-- nothing but log out.
ALTER TABLE accounts ADD COLUMN shadow_banned INTEGER NOT NULL DEFAULT 0;
ALTER TABLE accounts ADD COLUMN suspended INTEGER NOT NULL DEFAULT 0;
ALTER TABLE accounts ADD COLUMN locked INTEGER NOT NULL DEFAULT 0;

-- Per-user rate limits an admin set (override_ratelimit), replacing the
-- configured ones for that user; 0 and 0 is no limit at all.
CREATE TABLE ratelimit_overrides (
	user_id             TEXT PRIMARY KEY REFERENCES accounts(user_id),
	messages_per_second INTEGER NOT NULL,
	burst_count         INTEGER NOT NULL
);
`},
	{Version: 9, SQL: `
-- Another process of a deployment that runs several (docs/scaling.md)
-- asks which users' account data changed in a range of positions.
CREATE INDEX account_data_pos ON account_data(stream_pos);
`},
}
