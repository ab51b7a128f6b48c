package notices

import "github.com/tessera-hs/tessera/internal/database"

// migrations are the server notices' tables. Released migrations are never
// edited; a schema change is a new entry.
var migrations = []database.Migration{
	{Version: 1, SQL: `
-- Each user's server notices room, reused for every later notice while the
-- system user is still in it.
CREATE TABLE server_notice_rooms (
	user_id    TEXT PRIMARY KEY,
	room_id    TEXT NOT NULL,
	created_ts INTEGER NOT NULL
);
`},
}
