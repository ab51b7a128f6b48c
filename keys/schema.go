package keys

import "github.com/tessera-hs/tessera/internal/database"

// migrations are the keys domain's tables. Released migrations are never
// edited; a schema change is a new entry.
var migrations = []database.Migration{
	{Version: 1, SQL: `
-- Device identity keys, one object per device, as uploaded (canonical JSON,
-- without "unsigned"). ed25519 is the device's ed25519 public key, which
-- signs its one-time keys and its signatures of the master key.
CREATE TABLE keys_device_keys (
	user_id   TEXT NOT NULL,
	device_id TEXT NOT NULL,
	key_json  TEXT NOT NULL,
	ed25519   TEXT NOT NULL,
	PRIMARY KEY (user_id, device_id)
);

-- Unclaimed one-time keys. id orders them by upload, as /keys/claim hands
-- them out in that order.
CREATE TABLE keys_one_time_keys (
	id        INTEGER PRIMARY KEY AUTOINCREMENT,
	user_id   TEXT NOT NULL,
	device_id TEXT NOT NULL,
	algorithm TEXT NOT NULL,
	key_id    TEXT NOT NULL,
	key_json  TEXT NOT NULL,
	UNIQUE (user_id, device_id, algorithm, key_id)
);
CREATE INDEX keys_one_time_keys_claim ON keys_one_time_keys(user_id, device_id, algorithm, id);

-- Fallback keys: at most one per device and algorithm; used once claimed.
CREATE TABLE keys_fallback_keys (
	user_id   TEXT NOT NULL,
	device_id TEXT NOT NULL,
	algorithm TEXT NOT NULL,
	key_id    TEXT NOT NULL,
	key_json  TEXT NOT NULL,
	used      INTEGER NOT NULL DEFAULT 0,
	PRIMARY KEY (user_id, device_id, algorithm)
);

-- Cross-signing keys: key_type is master, self_signing or user_signing;
-- public_key the unpadded base64 ed25519 key (also its key ID).
CREATE TABLE keys_cross_signing_keys (
	user_id    TEXT NOT NULL,
	key_type   TEXT NOT NULL,
	public_key TEXT NOT NULL,
	key_json   TEXT NOT NULL,
	PRIMARY KEY (user_id, key_type)
);

-- Signatures uploaded through /keys/signatures/upload, merged into the
-- signed keys by /keys/query. target_key_id is a device ID or the public
-- key of a master key; signer_key_id is "ed25519:<key>".
CREATE TABLE keys_signatures (
	target_user_id TEXT NOT NULL,
	target_key_id  TEXT NOT NULL,
	signer_user_id TEXT NOT NULL,
	signer_key_id  TEXT NOT NULL,
	signature      TEXT NOT NULL,
	PRIMARY KEY (target_user_id, target_key_id, signer_user_id, signer_key_id)
);
CREATE INDEX keys_signatures_signer ON keys_signatures(signer_user_id, signer_key_id);

-- The device list stream: one row per change of a user's device list, at
-- the position it took. The position is the last handed out; a change takes
-- the next one inside its write transaction, so positions commit in order.
CREATE TABLE keys_stream_positions (
	stream TEXT PRIMARY KEY,
	pos    INTEGER NOT NULL
);
INSERT INTO keys_stream_positions (stream, pos) VALUES ('device_lists', 0);
CREATE TABLE keys_device_list_changes (
	pos     INTEGER PRIMARY KEY,
	user_id TEXT NOT NULL
);
`},
	{Version: 2, SQL: `
-- Federation (remote.go). Our users' device list versions, as other
-- servers see them: stream_id counts the m.device_list_update EDUs sent
-- for the user, and is the stream_id of GET /user/devices.
CREATE TABLE keys_local_device_streams (
	user_id   TEXT PRIMARY KEY,
	stream_id INTEGER NOT NULL
);

-- The cached device lists of other servers' users who share a room with
-- ours: stream_id is the version we have (from /user/devices or the last
-- m.device_list_update applied); stale is set when an update could not be
-- applied, and the next query fetches the list again. The cross-signing
-- keys are their JSON, '' when the user has none.
CREATE TABLE keys_remote_users (
	user_id          TEXT PRIMARY KEY,
	stream_id        INTEGER NOT NULL,
	stale            INTEGER NOT NULL DEFAULT 0,
	master_key       TEXT NOT NULL DEFAULT '',
	self_signing_key TEXT NOT NULL DEFAULT ''
);
CREATE TABLE keys_remote_devices (
	user_id      TEXT NOT NULL,
	device_id    TEXT NOT NULL,
	display_name TEXT,
	key_json     TEXT NOT NULL,
	PRIMARY KEY (user_id, device_id)
);
`},
}
