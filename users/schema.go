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
}
