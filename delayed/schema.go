package delayed

import "github.com/tessera-hs/tessera/internal/database"

// migrations are the delayed events' tables. Released migrations are never
// edited; a schema change is a new entry.
var migrations = []database.Migration{
	{Version: 1, SQL: `
-- One row per delayed event (MSC4140). A row is scheduled while
-- finalised_ts is NULL; once sent or cancelled it stays, finalised, for a
-- while so that GET ?status=finalised can report the outcome.
CREATE TABLE delayed_events (
	delay_id     TEXT PRIMARY KEY,
	user_id      TEXT NOT NULL,
	device_id    TEXT NOT NULL,
	room_id      TEXT NOT NULL,
	type         TEXT NOT NULL,
	state_key    TEXT,
	content      TEXT NOT NULL,
	delay_ms     INTEGER NOT NULL,
	-- When the event fires; restart moves it to now + delay_ms.
	send_ts      INTEGER NOT NULL,
	-- Set while the event is being sent, so that a restart, cancel or a
	-- second send cannot race the send. Reset at start-up: a send cut
	-- short by a crash is retried (at least once, as in Synapse).
	processing   INTEGER NOT NULL DEFAULT 0,
	-- The client's transaction key ("send/<room>/<type>/<txn>"), so that a
	-- retried request gets the same delay_id back.
	txn_key      TEXT,
	finalised_ts INTEGER,
	outcome      TEXT,  -- "send" or "cancel"
	reason       TEXT,  -- "action", "delay" or "error"
	event_id     TEXT,  -- the sent event
	error        TEXT   -- the Matrix error (JSON) a failed send got
);
-- The timer's one query: the next scheduled send time.
CREATE INDEX delayed_events_due ON delayed_events(send_ts) WHERE finalised_ts IS NULL;
CREATE INDEX delayed_events_user ON delayed_events(user_id, send_ts);
-- Cancelling other users' delayed events for state that just changed.
CREATE INDEX delayed_events_state ON delayed_events(room_id, type, state_key)
	WHERE finalised_ts IS NULL AND state_key IS NOT NULL;
CREATE UNIQUE INDEX delayed_events_txn ON delayed_events(user_id, device_id, txn_key)
	WHERE txn_key IS NOT NULL;
`},
}
