package slidingsync

import "github.com/tessera-hs/tessera/internal/database"

// migrations are the sliding sync domain's tables: what each connection
// has sent, so that a restart (or another process) carries on the
// connection rather than making the client start again.
var migrations = []database.Migration{
	{Version: 1, SQL: `
-- One row per (user, device, conn_id). Positions are never reused, even
-- when the client starts the connection again, so a pos from before a
-- restart of the connection is unknown rather than mistaken for a new one.
CREATE TABLE sliding_sync_connections (
	conn_key     INTEGER PRIMARY KEY,
	user_id      TEXT NOT NULL,
	device_id    TEXT NOT NULL,
	conn_id      TEXT NOT NULL,
	-- The position the client last sent (0: none yet), the sync token of
	-- that position and the connection's state there (JSON).
	acked_pos    INTEGER NOT NULL,
	acked_token  TEXT NOT NULL,
	state        TEXT NOT NULL,
	-- The last position handed out.
	next_pos     INTEGER NOT NULL,
	last_used_ts INTEGER NOT NULL,
	UNIQUE (user_id, device_id, conn_id)
);
CREATE INDEX sliding_sync_connections_used ON sliding_sync_connections(last_used_ts);

-- Positions handed out and not yet sent back by the client.
CREATE TABLE sliding_sync_positions (
	conn_key INTEGER NOT NULL,
	pos      INTEGER NOT NULL,
	token    TEXT NOT NULL,
	state    TEXT NOT NULL,
	PRIMARY KEY (conn_key, pos)
);

-- What the connection has sent of each room (JSON), as of acked_pos.
CREATE TABLE sliding_sync_rooms (
	conn_key INTEGER NOT NULL,
	room_id  TEXT NOT NULL,
	base     TEXT NOT NULL,
	PRIMARY KEY (conn_key, room_id)
);

-- What the response at pos sent of each room: it becomes base when the
-- client sends pos back. Two answers to one request (a retry whose first
-- answer the client did get after all) keep theirs apart.
CREATE TABLE sliding_sync_room_pending (
	conn_key INTEGER NOT NULL,
	pos      INTEGER NOT NULL,
	room_id  TEXT NOT NULL,
	state    TEXT NOT NULL,
	PRIMARY KEY (conn_key, pos, room_id)
);
`},
}
