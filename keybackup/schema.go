package keybackup

import "github.com/tessera-hs/tessera/internal/database"

// migrations are the key backup domain's tables. Released migrations are
// never edited; a schema change is a new entry.
var migrations = []database.Migration{
	{Version: 1, SQL: `
-- Backup versions, numbered 1, 2, 3, ... per user. A deleted version keeps
-- its row (deleted = 1, its keys gone) so that its number is never handed
-- out again and deleting it twice succeeds, as the spec asks. etag counts
-- the changes to the version's keys; key_count is the number of keys
-- stored, kept with every change so that reading it costs nothing.
-- https://spec.matrix.org/v1.19/client-server-api/#server-side-key-backups
CREATE TABLE keybackup_versions (
	user_id   TEXT NOT NULL,
	version   INTEGER NOT NULL,
	algorithm TEXT NOT NULL,
	auth_data TEXT NOT NULL,
	etag      INTEGER NOT NULL DEFAULT 0,
	key_count INTEGER NOT NULL DEFAULT 0,
	deleted   INTEGER NOT NULL DEFAULT 0,
	PRIMARY KEY (user_id, version)
);

-- The backed-up keys: one per (version, room, megolm session), with the
-- metadata that decides whether an upload replaces it. session_data is the
-- client's encrypted blob, stored as compact JSON.
CREATE TABLE keybackup_keys (
	user_id             TEXT NOT NULL,
	version             INTEGER NOT NULL,
	room_id             TEXT NOT NULL,
	session_id          TEXT NOT NULL,
	first_message_index INTEGER NOT NULL,
	forwarded_count     INTEGER NOT NULL,
	is_verified         INTEGER NOT NULL,
	session_data        TEXT NOT NULL,
	PRIMARY KEY (user_id, version, room_id, session_id),
	FOREIGN KEY (user_id, version) REFERENCES keybackup_versions(user_id, version)
);
`},
}
