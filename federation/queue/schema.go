package queue

import "github.com/tessera-hs/tessera/internal/database"

// migrations are the outbound queue's tables. Released migrations are never
// edited; a schema change is a new entry.
var migrations = []database.Migration{
	{Version: 1, SQL: `
-- The JSON of every queued PDU and EDU, stored once however many
-- destinations it goes to: an event in a room with a thousand servers is
-- one row here and a thousand small rows below. A row is deleted when the
-- last destination that needed it has been sent it.
CREATE TABLE federation_queue_json (
	nid  INTEGER PRIMARY KEY,
	json TEXT NOT NULL
);

-- What each destination still has to be sent, oldest (lowest id) first.
-- txn_id is NULL until the row is put into a transaction; from then on the
-- row is retried in that transaction, under that ID, until it is delivered,
-- so a receiver that saw an attempt whose answer we lost drops the retry as
-- a duplicate (its idempotency is keyed on origin and txnId).
CREATE TABLE federation_queue_pdus (
	id          INTEGER PRIMARY KEY,
	destination TEXT NOT NULL,
	json_nid    INTEGER NOT NULL REFERENCES federation_queue_json(nid),
	txn_id      TEXT
);
CREATE INDEX federation_queue_pdus_dest ON federation_queue_pdus(destination, txn_id, id);
CREATE INDEX federation_queue_pdus_json ON federation_queue_pdus(json_nid);

CREATE TABLE federation_queue_edus (
	id          INTEGER PRIMARY KEY,
	destination TEXT NOT NULL,
	json_nid    INTEGER NOT NULL REFERENCES federation_queue_json(nid),
	txn_id      TEXT
);
CREATE INDEX federation_queue_edus_dest ON federation_queue_edus(destination, txn_id, id);
CREATE INDEX federation_queue_edus_json ON federation_queue_edus(json_nid);
`}, {Version: 2, SQL: `
-- What a destination refused for good (a 400 or 413 to a transaction that
-- held only it): kept for an operator to look at instead of being retried
-- forever, which would hold up everything queued after it.
CREATE TABLE federation_queue_quarantine (
	id             INTEGER PRIMARY KEY,
	destination    TEXT NOT NULL,
	kind           TEXT NOT NULL, -- 'pdu' or 'edu'
	json           TEXT NOT NULL,
	error          TEXT NOT NULL,
	quarantined_ts BIGINT NOT NULL
);
CREATE INDEX federation_queue_quarantine_dest ON federation_queue_quarantine(destination, id);
`},
}
