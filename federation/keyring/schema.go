package keyring

import "github.com/tessera-hs/tessera/internal/database"

// migrations are the key ring's tables. Released migrations are never
// edited; a schema change is a new entry.
var migrations = []database.Migration{
	{Version: 1, SQL: `
-- Other servers' signing keys, one row per key: what the key ring checks
-- signatures with. Our own key is never stored: it comes from the key file.
CREATE TABLE server_signing_keys (
	server_name    TEXT NOT NULL,
	key_id         TEXT NOT NULL,
	-- Unpadded base64 ed25519 public key.
	public_key     TEXT NOT NULL,
	-- Until when the key may be used without asking again (0 for an old
	-- key, which has expired_ts instead).
	valid_until_ts INTEGER NOT NULL,
	-- When an old key stopped being used (0 while it is current).
	expired_ts     INTEGER NOT NULL,
	-- The server the key came from: the key's own server, or the notary
	-- that vouched for it; '' when not known.
	fetched_from   TEXT NOT NULL,
	fetched_ts     INTEGER NOT NULL,
	PRIMARY KEY (server_name, key_id)
);

-- The key responses servers gave us directly (GET /_matrix/key/v2/server),
-- as signed JSON, for answering notary queries: a notary must pass on the
-- server's own signed response. One row per key ID the response lists.
CREATE TABLE server_key_responses (
	server_name    TEXT NOT NULL,
	key_id         TEXT NOT NULL,
	response_json  TEXT NOT NULL,
	valid_until_ts INTEGER NOT NULL,
	fetched_ts     INTEGER NOT NULL,
	PRIMARY KEY (server_name, key_id)
);
`},
}
