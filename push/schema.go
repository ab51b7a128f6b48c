package push

import "github.com/tessera-hs/tessera/internal/database"

// migrations are the push domain's tables. Released migrations are never
// edited; a schema change is a new entry.
var migrations = []database.Migration{
	{Version: 1, SQL: `
-- User-defined push rules. position orders the rules of one kind, 0 being
-- the most important; rule_json holds the rule's actions and its
-- conditions (override, underride) or pattern (content).
-- https://spec.matrix.org/v1.19/client-server-api/#push-rules
CREATE TABLE push_rules (
	user_id   TEXT NOT NULL,
	kind      TEXT NOT NULL,
	rule_id   TEXT NOT NULL,
	position  INTEGER NOT NULL,
	rule_json TEXT NOT NULL,
	enabled   INTEGER NOT NULL,
	PRIMARY KEY (user_id, kind, rule_id)
);

-- A user's changes to server-default rules: NULL keeps the default.
CREATE TABLE push_rule_defaults (
	user_id TEXT NOT NULL,
	kind    TEXT NOT NULL,
	rule_id TEXT NOT NULL,
	enabled INTEGER,
	actions TEXT,
	PRIMARY KEY (user_id, kind, rule_id)
);

-- The outcome of evaluating push rules: one row per (user, event) whose
-- actions notify or highlight. stream_pos is the event's room-server
-- stream position, compared with receipts to count what is unread;
-- thread_id is "main" or the thread root's event ID.
-- https://spec.matrix.org/v1.19/client-server-api/#receiving-notifications
CREATE TABLE event_push_actions (
	user_id    TEXT NOT NULL,
	room_id    TEXT NOT NULL,
	event_id   TEXT NOT NULL,
	stream_pos INTEGER NOT NULL,
	notify     INTEGER NOT NULL,
	highlight  INTEGER NOT NULL,
	thread_id  TEXT NOT NULL,
	actions    TEXT NOT NULL,
	ts         INTEGER NOT NULL,
	PRIMARY KEY (user_id, event_id)
);
CREATE INDEX event_push_actions_room ON event_push_actions(user_id, room_id, stream_pos);
CREATE INDEX event_push_actions_user ON event_push_actions(user_id, stream_pos);

-- The last event a local user sent in each room and thread: sending an
-- event marks what came before it in that thread as read, as a receipt
-- would.
CREATE TABLE push_sent_marks (
	user_id    TEXT NOT NULL,
	room_id    TEXT NOT NULL,
	thread_id  TEXT NOT NULL,
	stream_pos INTEGER NOT NULL,
	PRIMARY KEY (user_id, room_id, thread_id)
);

-- Pushers: where a user's notifications would be delivered. They are
-- stored and listed only; this server does not call push gateways yet.
-- https://spec.matrix.org/v1.19/client-server-api/#post_matrixclientv3pushersset
CREATE TABLE pushers (
	user_id             TEXT NOT NULL,
	app_id              TEXT NOT NULL,
	pushkey             TEXT NOT NULL,
	kind                TEXT NOT NULL,
	app_display_name    TEXT NOT NULL,
	device_display_name TEXT NOT NULL,
	profile_tag         TEXT NOT NULL,
	lang                TEXT NOT NULL,
	data                TEXT NOT NULL,
	device_id           TEXT NOT NULL,
	created_ts          INTEGER NOT NULL,
	PRIMARY KEY (user_id, app_id, pushkey)
);
CREATE INDEX pushers_key ON pushers(app_id, pushkey);
`},
	{Version: 2, SQL: `
-- event_push_actions keyed by (user_id, stream_pos): an event has one
-- stream position, so that identifies a row, and the key serves
-- /notifications; one index serves the per-room counts. One index fewer
-- to write for every notification. The rows are carried over.
CREATE TABLE event_push_actions_v2 (
	user_id    TEXT NOT NULL,
	stream_pos INTEGER NOT NULL,
	room_id    TEXT NOT NULL,
	event_id   TEXT NOT NULL,
	notify     INTEGER NOT NULL,
	highlight  INTEGER NOT NULL,
	thread_id  TEXT NOT NULL,
	actions    TEXT NOT NULL,
	ts         INTEGER NOT NULL,
	PRIMARY KEY (user_id, stream_pos)
);
INSERT INTO event_push_actions_v2 (user_id, stream_pos, room_id, event_id, notify, highlight, thread_id, actions, ts)
	SELECT user_id, stream_pos, room_id, event_id, notify, highlight, thread_id, actions, ts FROM event_push_actions;
DROP TABLE event_push_actions;
ALTER TABLE event_push_actions_v2 RENAME TO event_push_actions;
CREATE INDEX event_push_actions_room ON event_push_actions(user_id, room_id, stream_pos);
`},
	{Version: 3, SQL: `
-- Delivery to push gateways. last_stream_pos is the stream position of the
-- last notification the pusher delivered or gave up on (NULL: a pusher
-- set before delivery existed, which starts from the position at the next
-- start); failing_since is when its current notification started to fail
-- (0: not failing); last_success_ts when it last delivered (or was set);
-- a pusher failing for too long is disabled (enabled 0) until set again;
-- last_badge is the unread count the gateway was last sent.
ALTER TABLE pushers ADD COLUMN last_stream_pos INTEGER;
ALTER TABLE pushers ADD COLUMN last_badge INTEGER NOT NULL DEFAULT 0;
ALTER TABLE pushers ADD COLUMN failing_since INTEGER NOT NULL DEFAULT 0;
ALTER TABLE pushers ADD COLUMN last_success_ts INTEGER NOT NULL DEFAULT 0;
ALTER TABLE pushers ADD COLUMN enabled INTEGER NOT NULL DEFAULT 1;
`},
	{Version: 4, SQL: `
-- Email pushers (kind "email", app_id "m.email", the address as pushkey).
-- This server keeps no third-party identifiers, so an address is proved by
-- a link mailed to it: push_email_addresses holds the addresses each user
-- confirmed, and when the last confirmation mail was sent (to throttle
-- them). An email pusher for an address not yet confirmed is stored
-- disabled. An email pusher's pushers.last_stream_pos is the last
-- notification it put in a batch.
CREATE TABLE push_email_addresses (
	user_id         TEXT NOT NULL,
	address         TEXT NOT NULL,
	confirmed       INTEGER NOT NULL DEFAULT 0,
	confirm_sent_ts INTEGER NOT NULL DEFAULT 0,
	PRIMARY KEY (user_id, address)
);

-- A room's notifications waiting to be mailed together: first_pos is the
-- stream position of the first, due_ts when the mail goes (the delay after
-- the first notification; later after a failed attempt), failing_since
-- when attempts started failing (0: none failed).
CREATE TABLE push_email_batches (
	user_id       TEXT NOT NULL,
	address       TEXT NOT NULL,
	room_id       TEXT NOT NULL,
	first_pos     INTEGER NOT NULL,
	due_ts        INTEGER NOT NULL,
	failing_since INTEGER NOT NULL DEFAULT 0,
	PRIMARY KEY (user_id, address, room_id)
);

-- The key that signs the confirmation and unsubscribe links of emails,
-- made at the first start.
CREATE TABLE push_secrets (
	name  TEXT PRIMARY KEY,
	value TEXT NOT NULL
);
`},
	{Version: 5, SQL: `
-- Synapse's pusher_throttle: how often each email pusher may mail about a
-- room. A room's next mail waits until last_sent_ts + throttle_ms (ms);
-- throttle_ms grows with each mail (push/email_throttle.go) and falls back
-- after a quiet period.
CREATE TABLE push_email_throttle (
	user_id      TEXT NOT NULL,
	address      TEXT NOT NULL,
	room_id      TEXT NOT NULL,
	last_sent_ts INTEGER NOT NULL,
	throttle_ms  INTEGER NOT NULL,
	PRIMARY KEY (user_id, address, room_id)
);
`},
	{Version: 6, SQL: `
-- Unread notifications folded out of event_push_actions (Synapse's
-- event_push_summary): once older than the actions are kept, a user's
-- unread rows of a room's thread are summed here, so that the counts stay
-- right while the table of actions stays bounded. stream_pos is the
-- position of the newest notification folded in: a read position at or
-- after it reads them all.
CREATE TABLE event_push_summary (
	user_id         TEXT NOT NULL,
	room_id         TEXT NOT NULL,
	thread_id       TEXT NOT NULL,
	notif_count     INTEGER NOT NULL,
	highlight_count INTEGER NOT NULL,
	ring_count      INTEGER NOT NULL,
	stream_pos      INTEGER NOT NULL,
	PRIMARY KEY (user_id, room_id, thread_id)
);
`},
}
