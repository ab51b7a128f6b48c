package roomserver

import "github.com/tessera-hs/tessera/internal/database"

// migrations are the room server's tables. Released migrations are never
// edited; a schema change is a new entry.
var migrations = []database.Migration{
	{Version: 1, SQL: `
CREATE TABLE rooms (
	room_id      TEXT PRIMARY KEY,
	room_version TEXT NOT NULL,
	created_ts   INTEGER NOT NULL,
	-- Published in the public room directory.
	published    INTEGER NOT NULL DEFAULT 0,
	-- The state group of the room's current state.
	state_group  INTEGER NOT NULL DEFAULT 0
);

-- Every event, as the canonical JSON it was created or received with.
-- stream_pos is the global order sync follows; (depth, stream_pos) is the
-- per-room topological order /messages follows.
CREATE TABLE events (
	stream_pos  INTEGER PRIMARY KEY,
	event_id    TEXT NOT NULL UNIQUE,
	room_id     TEXT NOT NULL,
	type        TEXT NOT NULL,
	state_key   TEXT,
	sender      TEXT NOT NULL,
	depth       INTEGER NOT NULL,
	origin_ts   INTEGER NOT NULL,
	-- The state after this event (for a non-state event, the state it was
	-- sent in).
	state_group INTEGER NOT NULL,
	json        TEXT NOT NULL,
	-- Server-side unsigned data: prev_content and replaces_state.
	unsigned    TEXT,
	-- Set when a redaction of this event is accepted; json then holds the
	-- redacted form and the original is gone.
	redacted_by TEXT
);
CREATE INDEX events_room_topo ON events(room_id, depth, stream_pos);
CREATE INDEX events_room_ts ON events(room_id, origin_ts);

CREATE TABLE event_edges (
	event_id      TEXT NOT NULL,
	prev_event_id TEXT NOT NULL,
	PRIMARY KEY (event_id, prev_event_id)
);

-- The events nothing points to yet: the next local event's prev_events.
CREATE TABLE forward_extremities (
	room_id  TEXT NOT NULL,
	event_id TEXT NOT NULL,
	PRIMARY KEY (room_id, event_id)
);

-- State snapshots. A group lists the state entries that differ from
-- prev_group (or all of them when prev_group is NULL); chains are cut with
-- a full snapshot every so often so a read walks only a few groups.
CREATE TABLE state_groups (
	group_id   INTEGER PRIMARY KEY,
	room_id    TEXT NOT NULL,
	prev_group INTEGER,
	chain_len  INTEGER NOT NULL
);
CREATE TABLE state_group_entries (
	group_id  INTEGER NOT NULL,
	type      TEXT NOT NULL,
	state_key TEXT NOT NULL,
	event_id  TEXT NOT NULL,
	PRIMARY KEY (group_id, type, state_key)
);

-- The room's current state, for quick reads.
CREATE TABLE current_state (
	room_id   TEXT NOT NULL,
	type      TEXT NOT NULL,
	state_key TEXT NOT NULL,
	event_id  TEXT NOT NULL,
	PRIMARY KEY (room_id, type, state_key)
);

-- Current membership of each user in each room.
CREATE TABLE memberships (
	room_id    TEXT NOT NULL,
	user_id    TEXT NOT NULL,
	membership TEXT NOT NULL,
	event_id   TEXT NOT NULL,
	stream_pos INTEGER NOT NULL,
	forgotten  INTEGER NOT NULL DEFAULT 0,
	PRIMARY KEY (room_id, user_id)
);
CREATE INDEX memberships_user ON memberships(user_id, membership);

-- Local room aliases (#name:server) and who created them.
CREATE TABLE room_aliases (
	alias   TEXT PRIMARY KEY,
	room_id TEXT NOT NULL,
	creator TEXT NOT NULL
);
CREATE INDEX room_aliases_room ON room_aliases(room_id);

-- Transaction IDs of client requests, for idempotent retries.
CREATE TABLE txn_ids (
	user_id   TEXT NOT NULL,
	device_id TEXT NOT NULL,
	txn_id    TEXT NOT NULL,
	event_id  TEXT NOT NULL,
	PRIMARY KEY (user_id, device_id, txn_id)
);
`},
	{Version: 2, SQL: `
-- Reports of events and rooms, for the server's admins.
-- https://spec.matrix.org/v1.19/client-server-api/#reporting-content
CREATE TABLE reports (
	id          INTEGER PRIMARY KEY,
	room_id     TEXT NOT NULL,
	-- NULL for a report of the whole room.
	event_id    TEXT,
	reporter    TEXT NOT NULL,
	reason      TEXT,
	-- The score clients sent before v1.18 of the spec dropped it.
	score       INTEGER,
	received_ts INTEGER NOT NULL
);
CREATE INDEX reports_received ON reports(received_ts);
`},
	{Version: 3, SQL: `
-- Sync reads a room's events by stream position ("what is new in this room
-- since my token"). Without this the planner takes events_room_ts and sorts
-- every event of the room for each incremental sync.
CREATE INDEX events_room_stream ON events(room_id, stream_pos);
`},
	{Version: 4, SQL: `
-- Events other servers sent us that failed the auth rules. They are never
-- served or used as state, but remembering them stops us fetching them
-- again and lets events that cite them be rejected too.
-- https://spec.matrix.org/v1.19/server-server-api/#rejection
CREATE TABLE rejected_events (
	event_id    TEXT PRIMARY KEY,
	room_id     TEXT NOT NULL,
	origin      TEXT NOT NULL,
	reason      TEXT NOT NULL,
	json        TEXT NOT NULL,
	received_ts INTEGER NOT NULL
);
`},
	{Version: 5, SQL: `
-- Events of a room's history from before we joined, fetched from other
-- servers by /backfill. They are outliers (negative stream positions: no
-- sync takes them for new events) that /messages pages through.
CREATE TABLE backfilled_events (
	event_id TEXT PRIMARY KEY
);
`},
	{Version: 6, SQL: relationsTables + relationsBackfill + threadsBackfill, Postgres: relationsTables + relationsBackfillPostgres + threadsBackfill},
	{Version: 7, SQL: `
-- Full-text search (POST /search) over content.body, content.name and
-- content.topic: one row per event, its rowid the event's stream_pos.
-- Written in the commit transaction; a redaction deletes the row. FTS5 is
-- SQLite's (build with -tags sqlite_fts5); bm25() ranks the matches.
CREATE VIRTUAL TABLE event_search USING fts5(
	key UNINDEXED,
	value,
	tokenize = 'unicode61 remove_diacritics 2'
);
-- Index what is already stored.
INSERT INTO event_search (rowid, key, value)
	SELECT stream_pos, 'content.body', json_extract(json, '$.content.body') FROM events
	WHERE type = 'm.room.message' AND redacted_by IS NULL AND json_type(json, '$.content.body') = 'text';
INSERT INTO event_search (rowid, key, value)
	SELECT stream_pos, 'content.name', json_extract(json, '$.content.name') FROM events
	WHERE type = 'm.room.name' AND state_key = '' AND redacted_by IS NULL AND json_type(json, '$.content.name') = 'text';
INSERT INTO event_search (rowid, key, value)
	SELECT stream_pos, 'content.topic', json_extract(json, '$.content.topic') FROM events
	WHERE type = 'm.room.topic' AND state_key = '' AND redacted_by IS NULL AND json_type(json, '$.content.topic') = 'text';
`, Postgres: searchIndexPostgres},
	{Version: 8, SQL: `
-- Redactions of events we did not have when the redaction was stored
-- (room versions 3+ allow it): applied when the target arrives, if the
-- redaction's sender is the target's or had the redact power level.
CREATE TABLE pending_redactions (
	target_id    TEXT NOT NULL,
	redaction_id TEXT NOT NULL,
	room_id      TEXT NOT NULL,
	sender       TEXT NOT NULL,
	privileged   INTEGER NOT NULL,
	PRIMARY KEY (target_id, redaction_id)
);
`},
	{Version: 9, SQL: `
-- The stream position of each room's latest event of a "bump" type (a
-- message, an encrypted event, a call, the create event...): the recency
-- sliding sync orders room lists by (bump_stamp). Written in the commit
-- transaction.
ALTER TABLE rooms ADD COLUMN bump_pos INTEGER NOT NULL DEFAULT 0;
UPDATE rooms SET bump_pos = COALESCE((SELECT MAX(e.stream_pos) FROM events e
	WHERE e.room_id = rooms.room_id AND e.stream_pos > 0 AND e.type IN
	('m.room.create', 'm.room.message', 'm.room.encrypted', 'm.sticker', 'm.call.invite', 'm.poll.start', 'm.beacon_info')), 0);
`},
	{Version: 10, SQL: `
-- Rooms application services list in their networks' directories
-- (PUT /directory/list/appservice/{networkId}/{roomId}), apart from the
-- server's own directory (rooms.published).
CREATE TABLE appservice_room_lists (
	appservice_id TEXT NOT NULL,
	network_id    TEXT NOT NULL,
	room_id       TEXT NOT NULL,
	PRIMARY KEY (appservice_id, network_id, room_id)
);
`},
	{Version: 11, SQL: `
-- The point before which each room's history was purged (by an admin or
-- by retention): /messages does not backfill from other servers below it,
-- which would fetch back what was purged.
CREATE TABLE room_purges (
	room_id    TEXT PRIMARY KEY,
	depth      INTEGER NOT NULL,
	stream_pos INTEGER NOT NULL,
	purged_ts  INTEGER NOT NULL
);
`},
	{Version: 12, SQL: `
-- When each client transaction ID was recorded, so that the housekeeping
-- job prunes them after a while (a retry comes within minutes, not days).
-- Rows recorded before this column count from the upgrade.
ALTER TABLE txn_ids ADD COLUMN created_ts INTEGER NOT NULL DEFAULT 0;
UPDATE txn_ids SET created_ts = CAST(strftime('%s', 'now') AS INTEGER) * 1000;
CREATE INDEX txn_ids_created ON txn_ids(created_ts);
`, Postgres: `
ALTER TABLE txn_ids ADD COLUMN created_ts BIGINT NOT NULL DEFAULT 0;
UPDATE txn_ids SET created_ts = CAST(EXTRACT(EPOCH FROM now()) AS BIGINT) * 1000;
CREATE INDEX txn_ids_created ON txn_ids(created_ts);
`},
}

// Migration 6: its tables, and the backfill of the relations of the events
// stored before them, which reads the events' JSON in each engine's way.
const relationsTables = `
-- Relations between events (m.relates_to), for /relations, /threads and
-- the aggregations bundled in unsigned.m.relations. A redacted event's
-- row is deleted: redacted relations count for nothing.
-- https://spec.matrix.org/v1.19/client-server-api/#forming-relationships-between-events
CREATE TABLE event_relations (
	event_id   TEXT PRIMARY KEY,
	room_id    TEXT NOT NULL,
	relates_to TEXT NOT NULL,
	rel_type   TEXT NOT NULL,
	type       TEXT NOT NULL,
	sender     TEXT NOT NULL,
	-- The annotation key of m.annotation relations.
	key        TEXT,
	origin_ts  INTEGER NOT NULL,
	depth      INTEGER NOT NULL,
	stream_pos INTEGER NOT NULL
);
CREATE INDEX event_relations_target ON event_relations(relates_to, rel_type, depth, stream_pos);

-- One row per thread root: its topologically latest thread event and how
-- many events the thread has, for /threads and the m.thread aggregation.
CREATE TABLE threads (
	root_id       TEXT PRIMARY KEY,
	room_id       TEXT NOT NULL,
	latest_id     TEXT NOT NULL,
	latest_depth  INTEGER NOT NULL,
	latest_stream INTEGER NOT NULL,
	count         INTEGER NOT NULL
);
CREATE INDEX threads_room_latest ON threads(room_id, latest_depth, latest_stream);

`

const relationsBackfill = `-- The relations of the events stored before this table existed.
INSERT INTO event_relations (event_id, room_id, relates_to, rel_type, type, sender, key, origin_ts, depth, stream_pos)
SELECT event_id, room_id,
	json_extract(json, '$.content."m.relates_to".event_id'),
	json_extract(json, '$.content."m.relates_to".rel_type'),
	type, sender,
	json_extract(json, '$.content."m.relates_to".key'),
	origin_ts, depth, stream_pos
FROM events
WHERE redacted_by IS NULL
	AND json_extract(json, '$.content."m.relates_to".rel_type') IS NOT NULL
	AND json_extract(json, '$.content."m.relates_to".event_id') IS NOT NULL;
`

const relationsBackfillPostgres = `-- The relations of the events stored before this table existed.
INSERT INTO event_relations (event_id, room_id, relates_to, rel_type, type, sender, key, origin_ts, depth, stream_pos)
SELECT event_id, room_id,
	CAST(json AS jsonb)->'content'->'m.relates_to'->>'event_id',
	CAST(json AS jsonb)->'content'->'m.relates_to'->>'rel_type',
	type, sender,
	CAST(json AS jsonb)->'content'->'m.relates_to'->>'key',
	origin_ts, depth, stream_pos
FROM events
WHERE redacted_by IS NULL
	AND CAST(json AS jsonb)->'content'->'m.relates_to'->>'rel_type' IS NOT NULL
	AND CAST(json AS jsonb)->'content'->'m.relates_to'->>'event_id' IS NOT NULL;
`

const threadsBackfill = `INSERT INTO threads (root_id, room_id, latest_id, latest_depth, latest_stream, count)
SELECT r.relates_to, r.room_id, r.event_id, r.depth, r.stream_pos,
	(SELECT COUNT(*) FROM event_relations c WHERE c.relates_to = r.relates_to AND c.rel_type = 'm.thread')
FROM event_relations r
WHERE r.rel_type = 'm.thread' AND NOT EXISTS (
	SELECT 1 FROM event_relations n WHERE n.relates_to = r.relates_to AND n.rel_type = 'm.thread'
		AND (n.depth > r.depth OR (n.depth = r.depth AND n.stream_pos > r.stream_pos)));
`
