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
func Stats(ctx context.Context, q database.Querier) (DBStats, error) {
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
	sort.SliceStable(st.Tables, func(i, j int) bool {
		if st.Tables[i].Bytes != st.Tables[j].Bytes {
			return st.Tables[i].Bytes > st.Tables[j].Bytes
		}
		return st.Tables[i].Rows > st.Tables[j].Rows
	})
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
