package syncapi

import "github.com/tessera-hs/tessera/internal/database"

// migrations are the sync domain's tables. Released migrations are never
// edited; a schema change is a new entry.
var migrations = []database.Migration{
	{Version: 1, SQL: `
-- The position of each of the domain's sync streams: the last position
-- taken. As all writes go through one connection, positions commit in
-- order.
CREATE TABLE syncapi_stream_positions (
	stream TEXT PRIMARY KEY,
	pos    INTEGER NOT NULL
);
INSERT INTO syncapi_stream_positions (stream, pos) VALUES ('to_device', 0);

-- Send-to-device messages waiting for their device: one row per
-- recipient device, in arrival order (stream_pos, the to-device stream
-- position). A row is deleted when the device acknowledges it by syncing
-- with a token at or past its position, or when the device is deleted.
CREATE TABLE to_device_messages (
	stream_pos INTEGER PRIMARY KEY,
	user_id    TEXT NOT NULL,
	device_id  TEXT NOT NULL,
	sender     TEXT NOT NULL,
	type       TEXT NOT NULL,
	content    TEXT NOT NULL
);
CREATE INDEX to_device_messages_device ON to_device_messages(user_id, device_id, stream_pos);

-- The transactions of /sendToDevice already done, per sending device, so
-- that a retry is not delivered twice. Kept for a day.
CREATE TABLE to_device_txns (
	user_id    TEXT NOT NULL,
	device_id  TEXT NOT NULL,
	txn_id     TEXT NOT NULL,
	created_ts INTEGER NOT NULL,
	PRIMARY KEY (user_id, device_id, txn_id)
);
CREATE INDEX to_device_txns_created ON to_device_txns(created_ts);
`},
	{Version: 2, SQL: `
-- The m.direct_to_device EDUs received, by sender and message_id, so that
-- one a server sends again (a transaction retried after we took it but
-- before it heard our answer) is not delivered twice. Kept for
-- receivedLifetime (todevice_remote.go).
CREATE TABLE to_device_received (
	sender      TEXT NOT NULL,
	message_id  TEXT NOT NULL,
	received_ts INTEGER NOT NULL,
	PRIMARY KEY (sender, message_id)
);
CREATE INDEX to_device_received_ts ON to_device_received(received_ts);
`},
	{Version: 3, SQL: `
-- The typing stream of a deployment that runs several processes
-- (docs/scaling.md): each room's typing users are kept by the room's
-- owner, which writes every change here at the next position of the
-- stream, for the other processes to read. One process keeps typing in
-- memory only and does not use these.
INSERT INTO syncapi_stream_positions (stream, pos) VALUES ('typing', 0);
CREATE TABLE syncapi_typing (
	room_id    TEXT PRIMARY KEY,
	user_ids   TEXT NOT NULL,
	stream_pos INTEGER NOT NULL
);
CREATE INDEX syncapi_typing_pos ON syncapi_typing(stream_pos);
`},
}
