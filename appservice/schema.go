package appservice

import "github.com/tessera-hs/tessera/internal/database"

// migrations are the application service senders' tables. Released
// migrations are never edited; a schema change is a new entry.
var migrations = []database.Migration{
	{Version: 1, SQL: `
-- One row per application service with a url: how far its sender has got,
-- and the transaction it is delivering, if any.
--
-- Nothing is stored per event: the room server's events and the to-device
-- queue are read again from the cursors after a restart. A transaction is
-- stored whole (pending_body) before its first attempt, under the ID it
-- keeps for every retry, with the positions it reaches; when the service
-- accepts it, the cursors move to those positions and it is cleared, in
-- one statement. So a restart resends the same transaction under the same
-- ID (the service drops it if it saw it already) and carries on after it:
-- nothing is lost, nothing is sent twice under two IDs.
CREATE TABLE appservice_senders (
	as_id         TEXT PRIMARY KEY,
	-- The room stream position of the last event handled.
	event_pos     BIGINT NOT NULL,
	-- The to-device stream position of the last message handled.
	to_device_pos BIGINT NOT NULL,
	-- Transaction IDs are "<epoch>.<seq>": epoch is when the row was
	-- made, so a fresh database never reuses an ID a service has seen.
	epoch         BIGINT NOT NULL,
	txn_seq       BIGINT NOT NULL,
	pending_txn           TEXT,
	pending_body          TEXT,
	pending_event_pos     BIGINT,
	pending_to_device_pos BIGINT
);
`},
}
