package roomserver

import (
	"strings"

	"github.com/tessera-hs/tessera/internal/database"
)

// searchIndex is what the full-text index of event_search (rowid, key,
// value) looks like to Search on each engine: SQLite's FTS5 table (the
// default) or PostgreSQL's tsvector column with a GIN index. Everything
// else about search (rooms, filters, visibility, paging) is one code.
type searchIndex interface {
	// query is the argument that matches every one of terms (lower-case
	// letters and digits only, see searchTerms), each as a word prefix.
	query(terms []string) string
	// match is the WHERE condition of event_search s matching the query
	// bound at param.
	match(param string) string
	// rank is the relevance of s to the query at param, higher better.
	rank(param string) string
	// byRank orders by rank, best first (newest first among equals).
	byRank(param string) string
}

func newSearchIndex(engine database.Engine) searchIndex {
	if engine == database.Postgres {
		return tsvectorIndex{}
	}
	return fts5Index{}
}

// fts5Index is SQLite's FTS5 table (migration 7).
type fts5Index struct{}

func (fts5Index) query(terms []string) string {
	match := make([]string, len(terms))
	for i, t := range terms {
		// Each word quoted (no FTS5 syntax from the user), as a prefix,
		// all of them required.
		match[i] = `"` + t + `"*`
	}
	return strings.Join(match, " ")
}

func (fts5Index) match(param string) string { return `event_search MATCH ` + param }

// FTS5's rank column is bm25(), lower better.
func (fts5Index) rank(string) string { return `-s.rank` }

// ORDER BY rank is the form FTS5 sorts fastest.
func (fts5Index) byRank(string) string { return `s.rank, s.rowid DESC` }

// tsvectorIndex is PostgreSQL's: s.tsv is to_tsvector('simple', value),
// lower-cased words without stemming, as FTS5's unicode61 tokenizer
// gives (without its removal of diacritics).
type tsvectorIndex struct{}

func (tsvectorIndex) query(terms []string) string {
	q := make([]string, len(terms))
	for i, t := range terms {
		q[i] = `'` + strings.ReplaceAll(t, `'`, `''`) + `':*`
	}
	return strings.Join(q, " & ")
}

func (tsvectorIndex) match(param string) string {
	return `s.tsv @@ to_tsquery('simple', ` + param + `)`
}

func (tsvectorIndex) rank(param string) string {
	return `CAST(ts_rank(s.tsv, to_tsquery('simple', ` + param + `)) AS DOUBLE PRECISION)`
}

func (i tsvectorIndex) byRank(param string) string { return i.rank(param) + ` DESC, s.rowid DESC` }

// searchIndexPostgres is migration 7 on PostgreSQL: the same table and
// backfill as FTS5's, with a generated tsvector column under a GIN index.
const searchIndexPostgres = `
CREATE TABLE event_search (
	rowid BIGINT PRIMARY KEY,
	key   TEXT NOT NULL,
	value TEXT NOT NULL,
	tsv   tsvector GENERATED ALWAYS AS (to_tsvector('simple', value)) STORED
);
CREATE INDEX event_search_tsv ON event_search USING GIN (tsv);
INSERT INTO event_search (rowid, key, value)
	SELECT stream_pos, 'content.body', CAST(json AS jsonb)->'content'->>'body' FROM events
	WHERE type = 'm.room.message' AND redacted_by IS NULL AND jsonb_typeof(CAST(json AS jsonb)->'content'->'body') = 'string';
INSERT INTO event_search (rowid, key, value)
	SELECT stream_pos, 'content.name', CAST(json AS jsonb)->'content'->>'name' FROM events
	WHERE type = 'm.room.name' AND state_key = '' AND redacted_by IS NULL AND jsonb_typeof(CAST(json AS jsonb)->'content'->'name') = 'string';
INSERT INTO event_search (rowid, key, value)
	SELECT stream_pos, 'content.topic', CAST(json AS jsonb)->'content'->>'topic' FROM events
	WHERE type = 'm.room.topic' AND state_key = '' AND redacted_by IS NULL AND jsonb_typeof(CAST(json AS jsonb)->'content'->'topic') = 'string';
`
