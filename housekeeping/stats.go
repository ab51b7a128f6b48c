package housekeeping

import (
	"context"
	"fmt"
	"io"
	"sort"
	"text/tabwriter"

	"github.com/tessera-hs/tessera/internal/database"
)

// TableStat is the size of one table.
type TableStat struct {
	Name string
	Rows int64
	// Bytes is the space the table and its indexes take, or -1 when this
	// SQLite lacks the dbstat table (build tag sqlite_dbstat).
	Bytes int64
}

// DBStats is the database's size and its tables', biggest first.
type DBStats struct {
	// FileBytes is page_count × page_size; FreeBytes the part of it on
	// the free list (reused before the file grows; VACUUM returns it).
	FileBytes, FreeBytes int64
	Tables               []TableStat
}

// Stats measures the database's tables. It counts rows, which reads each
// table once: for an operator's command and a daily log line, not a
// request.
func Stats(ctx context.Context, db *database.DB) (DBStats, error) {
	if db.Engine() == database.Postgres {
		return postgresStats(ctx, db)
	}
	return sqliteStats(ctx, db)
}

func sqliteStats(ctx context.Context, q database.Querier) (DBStats, error) {
	var st DBStats
	var pages, pageSize, free int64
	if err := q.QueryRowContext(ctx, `PRAGMA page_count`).Scan(&pages); err != nil {
		return st, fmt.Errorf("page_count: %w", err)
	}
	if err := q.QueryRowContext(ctx, `PRAGMA page_size`).Scan(&pageSize); err != nil {
		return st, fmt.Errorf("page_size: %w", err)
	}
	if err := q.QueryRowContext(ctx, `PRAGMA freelist_count`).Scan(&free); err != nil {
		return st, fmt.Errorf("freelist_count: %w", err)
	}
	st.FileBytes, st.FreeBytes = pages*pageSize, free*pageSize
	// Virtual tables (full-text search) are counted through their
	// shadow tables, which are ordinary tables.
	names, err := database.Strings(ctx, q, `SELECT name FROM sqlite_master
		WHERE type = 'table' AND name NOT LIKE 'sqlite_%' AND sql NOT LIKE 'CREATE VIRTUAL%' ORDER BY name`)
	if err != nil {
		return st, fmt.Errorf("list tables: %w", err)
	}
	bytes := tableBytes(ctx, q)
	for _, name := range names {
		t := TableStat{Name: name, Bytes: -1}
		// name comes from sqlite_master, not from a user.
		if err := q.QueryRowContext(ctx, `SELECT COUNT(*) FROM "`+name+`"`).Scan(&t.Rows); err != nil {
			return st, fmt.Errorf("count %s: %w", name, err)
		}
		if b, ok := bytes[name]; ok {
			t.Bytes = b
		}
		st.Tables = append(st.Tables, t)
	}
	st.sortTables()
	return st, nil
}

// sortTables puts the biggest tables first.
func (st *DBStats) sortTables() {
	sort.SliceStable(st.Tables, func(i, j int) bool {
		if st.Tables[i].Bytes != st.Tables[j].Bytes {
			return st.Tables[i].Bytes > st.Tables[j].Bytes
		}
		return st.Tables[i].Rows > st.Tables[j].Rows
	})
}

// postgresStats is Stats on PostgreSQL. FileBytes is the database's size
// on disk. PostgreSQL has no free list to read: a deleted row's space is
// reused once (auto)vacuum has seen it, and stays in the files. FreeBytes
// is therefore measured per table: the part of its heap not taken by its
// live rows (sum of pg_column_size, read with the row count), applied to
// the table with its indexes and TOAST. That is the space PostgreSQL
// reuses before the files grow, as SQLite's free list is.
func postgresStats(ctx context.Context, db *database.DB) (DBStats, error) {
	var st DBStats
	if err := db.QueryRowContext(ctx, `SELECT pg_database_size(current_database())`).Scan(&st.FileBytes); err != nil {
		return st, fmt.Errorf("database size: %w", err)
	}
	names, err := database.Strings(ctx, db, `SELECT tablename FROM pg_catalog.pg_tables
		WHERE schemaname = current_schema() ORDER BY tablename`)
	if err != nil {
		return st, fmt.Errorf("list tables: %w", err)
	}
	var free float64
	for _, name := range names {
		t := TableStat{Name: name}
		var heap, live int64
		// name comes from pg_tables, not from a user.
		q := `SELECT COUNT(*), COALESCE(SUM(pg_column_size(t.*)), 0), pg_total_relation_size('"` + name + `"'),
			pg_relation_size('"` + name + `"') FROM "` + name + `" t`
		if err := db.QueryRowContext(ctx, q).Scan(&t.Rows, &live, &t.Bytes, &heap); err != nil {
			return st, fmt.Errorf("measure %s: %w", name, err)
		}
		if heap > 0 {
			free += float64(t.Bytes) * max(0, 1-float64(live)/float64(heap))
		}
		st.Tables = append(st.Tables, t)
	}
	st.FreeBytes = int64(free)
	st.sortTables()
	return st, nil
}

// tableBytes reads each table's size, its indexes included, from the
// dbstat virtual table; nil when SQLite was built without it.
func tableBytes(ctx context.Context, q database.Querier) map[string]int64 {
	rows, err := q.QueryContext(ctx, `SELECT COALESCE(m.tbl_name, d.name), SUM(d.pgsize)
		FROM dbstat d LEFT JOIN sqlite_master m ON m.name = d.name GROUP BY 1`)
	if err != nil {
		return nil
	}
	defer rows.Close()
	out := map[string]int64{}
	for rows.Next() {
		var name string
		var n int64
		if rows.Scan(&name, &n) == nil {
			out[name] = n
		}
	}
	return out
}

// Print writes the stats as a table.
func (st DBStats) Print(w io.Writer) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintf(tw, "database\t%d bytes\t(%d free)\t\n", st.FileBytes, st.FreeBytes)
	fmt.Fprintf(tw, "table\trows\tbytes\t\n")
	for _, t := range st.Tables {
		b := "-"
		if t.Bytes >= 0 {
			b = fmt.Sprint(t.Bytes)
		}
		fmt.Fprintf(tw, "%s\t%d\t%s\t\n", t.Name, t.Rows, b)
	}
	return tw.Flush()
}
