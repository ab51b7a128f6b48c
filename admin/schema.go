package admin

import "github.com/tessera-hs/tessera/internal/database"

// migrations are the admin domain's tables. Released migrations are never
// edited; a schema change is a new entry.
var migrations = []database.Migration{
	{Version: 1, SQL: `
-- Rooms an admin blocked (PUT /_synapse/admin/v1/rooms/{roomId}/block):
-- no local user may join them. user_id is the admin who blocked it.
CREATE TABLE admin_blocked_rooms (
	room_id    TEXT PRIMARY KEY,
	user_id    TEXT NOT NULL,
	blocked_ts INTEGER NOT NULL
);
`},
}
