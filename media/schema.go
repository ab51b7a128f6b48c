package media

import "github.com/tessera-hs/tessera/internal/database"

// migrations are the media domain's tables. Released migrations are never
// edited; a schema change is a new entry.
var migrations = []database.Migration{
	{Version: 1, SQL: `
-- Local media: one row per media ID. The content is the file named by
-- sha256 in the file store, shared by every row with the same content.
-- A row from POST /media/v1/create has no content yet (sha256 NULL) until
-- its uploader PUTs it, and expires at unused_expires_ts if never uploaded.
CREATE TABLE media_local (
	media_id          TEXT PRIMARY KEY,
	server_name       TEXT NOT NULL,
	uploader          TEXT NOT NULL,
	content_type      TEXT,
	upload_name       TEXT,
	size              INTEGER,
	sha256            TEXT,
	created_ts        INTEGER NOT NULL,
	uploaded_ts       INTEGER,
	unused_expires_ts INTEGER          -- NULL: not created empty
);
CREATE INDEX media_local_pending ON media_local(uploader, unused_expires_ts) WHERE sha256 IS NULL;
CREATE INDEX media_local_sha256 ON media_local(sha256);

-- Generated thumbnails of local media, stored in the same file store.
CREATE TABLE media_thumbnails (
	media_id     TEXT NOT NULL REFERENCES media_local(media_id) ON DELETE CASCADE,
	width        INTEGER NOT NULL,
	height       INTEGER NOT NULL,
	method       TEXT NOT NULL,
	animated     INTEGER NOT NULL,
	content_type TEXT NOT NULL,
	size         INTEGER NOT NULL,
	sha256       TEXT NOT NULL,
	created_ts   INTEGER NOT NULL,
	PRIMARY KEY (media_id, width, height, method, animated)
);

-- Settings the domain records for itself, such as media_frozen_after.
CREATE TABLE media_settings (
	name  TEXT PRIMARY KEY,
	value TEXT NOT NULL
);
`},
	{Version: 2, SQL: `
-- The upload quota sums a user's stored media on every upload.
CREATE INDEX media_local_uploader ON media_local(uploader) WHERE sha256 IS NOT NULL;
`},
	{Version: 3, SQL: `
-- Other servers' media, fetched over federation on first request and kept:
-- one row per (origin, media_id), its content the file named by sha256 in
-- the same file store as local media. fetched_ts is when it was cached.
CREATE TABLE media_remote (
	origin       TEXT NOT NULL,
	media_id     TEXT NOT NULL,
	content_type TEXT NOT NULL,
	upload_name  TEXT NOT NULL,
	size         INTEGER NOT NULL,
	sha256       TEXT NOT NULL,
	fetched_ts   INTEGER NOT NULL,
	PRIMARY KEY (origin, media_id)
);
CREATE INDEX media_remote_sha256 ON media_remote(sha256);

-- Thumbnails generated here from cached remote media.
CREATE TABLE media_remote_thumbnails (
	origin       TEXT NOT NULL,
	media_id     TEXT NOT NULL,
	width        INTEGER NOT NULL,
	height       INTEGER NOT NULL,
	method       TEXT NOT NULL,
	animated     INTEGER NOT NULL,
	content_type TEXT NOT NULL,
	size         INTEGER NOT NULL,
	sha256       TEXT NOT NULL,
	created_ts   INTEGER NOT NULL,
	PRIMARY KEY (origin, media_id, width, height, method, animated),
	FOREIGN KEY (origin, media_id) REFERENCES media_remote(origin, media_id) ON DELETE CASCADE
);
`},
	{Version: 4, SQL: `
-- When media was last downloaded (or thumbnailed), for media retention:
-- the housekeeping job deletes what was not accessed for a configured
-- time, the remote cache first of all. Written at most once an hour per
-- media (accessResolution). Existing rows count from their upload/fetch.
ALTER TABLE media_local ADD COLUMN last_access_ts INTEGER NOT NULL DEFAULT 0;
UPDATE media_local SET last_access_ts = COALESCE(uploaded_ts, created_ts);
CREATE INDEX media_local_last_access ON media_local(last_access_ts) WHERE sha256 IS NOT NULL;
ALTER TABLE media_remote ADD COLUMN last_access_ts INTEGER NOT NULL DEFAULT 0;
UPDATE media_remote SET last_access_ts = fetched_ts;
CREATE INDEX media_remote_last_access ON media_remote(last_access_ts);
-- A file is deleted only when no row names it.
CREATE INDEX media_thumbnails_sha256 ON media_thumbnails(sha256);
CREATE INDEX media_remote_thumbnails_sha256 ON media_remote_thumbnails(sha256);
`},
	{Version: 5, SQL: `
-- Quarantined media (the admin API): served to nobody (404), local or
-- remote, cached here or not yet. quarantined_by is the admin who did it.
CREATE TABLE media_quarantine (
	origin         TEXT NOT NULL,
	media_id       TEXT NOT NULL,
	quarantined_by TEXT NOT NULL,
	quarantined_ts INTEGER NOT NULL,
	PRIMARY KEY (origin, media_id)
);

-- Local media an admin protected: never quarantined, and kept by the
-- admin API's deletion by age and size.
CREATE TABLE media_protected (
	media_id TEXT PRIMARY KEY
);
`},
}
