package webhooks

import "github.com/tessera-hs/tessera/internal/database"

// migrations are the webhooks' tables. Released migrations are never
// edited; a schema change is a new entry.
var migrations = []database.Migration{
	{Version: 1, SQL: `
-- One incoming hook. The secret is kept as is: it is the HMAC key of
-- GitHub's signatures, so a hash of it would not do. disabled_ts is set
-- when the bot leaves the room (kicked, banned, left).
CREATE TABLE webhooks (
	hook_id     TEXT PRIMARY KEY,
	room_id     TEXT NOT NULL,
	kind        TEXT NOT NULL,
	secret      TEXT NOT NULL,
	created_by  TEXT NOT NULL,
	created_ts  BIGINT NOT NULL,
	disabled_ts BIGINT
);
CREATE INDEX webhooks_room ON webhooks (room_id);

-- GitHub delivery IDs seen, to drop redeliveries of one event; pruned
-- after webhooks.delivery_retention.
CREATE TABLE webhook_deliveries (
	hook_id     TEXT NOT NULL,
	delivery_id TEXT NOT NULL,
	received_ts BIGINT NOT NULL,
	PRIMARY KEY (hook_id, delivery_id)
);
CREATE INDEX webhook_deliveries_ts ON webhook_deliveries (received_ts);
`},
}
