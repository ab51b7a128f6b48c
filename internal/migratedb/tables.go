package migratedb

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/jackc/pgx/v5"
)

// table is a target table and the columns the copy fills.
type table struct {
	name string
	cols []column
	// parents are the tables its foreign keys name.
	parents []string
}

type column struct {
	name     string
	pgType   string // information_schema's data_type
	identity bool
}

// targetTables lists the PostgreSQL tables (but schema_migrations, which
// the migrations filled) in an order where every table comes after the
// tables its foreign keys reference. Generated columns (the search
// index's tsvector) are left out: PostgreSQL computes them.
func targetTables(ctx context.Context, dst *pgx.Conn) ([]table, error) {
	rows, err := dst.Query(ctx, `SELECT table_name, column_name, data_type, is_identity
		FROM information_schema.columns
		WHERE table_schema = current_schema() AND is_generated = 'NEVER' AND table_name <> 'schema_migrations'
		ORDER BY table_name, ordinal_position`)
	if err != nil {
		return nil, fmt.Errorf("list PostgreSQL columns: %w", err)
	}
	byName := map[string]*table{}
	var names []string
	for rows.Next() {
		var tname, cname, typ, ident string
		if err := rows.Scan(&tname, &cname, &typ, &ident); err != nil {
			rows.Close()
			return nil, err
		}
		t := byName[tname]
		if t == nil {
			t = &table{name: tname}
			byName[tname] = t
			names = append(names, tname)
		}
		t.cols = append(t.cols, column{name: cname, pgType: typ, identity: ident == "YES"})
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list PostgreSQL columns: %w", err)
	}
	fks, err := dst.Query(ctx, `SELECT c.conrelid::regclass::text, c.confrelid::regclass::text
		FROM pg_catalog.pg_constraint c
		JOIN pg_catalog.pg_namespace n ON n.oid = c.connamespace
		WHERE c.contype = 'f' AND n.nspname = current_schema()`)
	if err != nil {
		return nil, fmt.Errorf("list PostgreSQL foreign keys: %w", err)
	}
	for fks.Next() {
		var child, parent string
		if err := fks.Scan(&child, &parent); err != nil {
			fks.Close()
			return nil, err
		}
		if t := byName[child]; t != nil && child != parent {
			t.parents = append(t.parents, parent)
		}
	}
	fks.Close()
	if err := fks.Err(); err != nil {
		return nil, fmt.Errorf("list PostgreSQL foreign keys: %w", err)
	}

	// Depth-first: each table after its parents.
	var order []table
	state := map[string]int{} // 1 visiting, 2 done
	var visit func(name string) error
	visit = func(name string) error {
		switch state[name] {
		case 1:
			return fmt.Errorf("foreign keys form a cycle through %s", name)
		case 2:
			return nil
		}
		state[name] = 1
		t := byName[name]
		for _, p := range t.parents {
			if byName[p] == nil {
				continue
			}
			if err := visit(p); err != nil {
				return err
			}
		}
		state[name] = 2
		order = append(order, *t)
		return nil
	}
	for _, n := range names {
		if err := visit(n); err != nil {
			return nil, err
		}
	}
	return order, nil
}

// sourceColumns are the columns of a SQLite table. rowid is the FTS5
// table's document id, a column of event_search on PostgreSQL.
func sourceColumns(ctx context.Context, src *source, name string) ([]string, error) {
	rows, err := src.tx.QueryContext(ctx, `SELECT name FROM pragma_table_info($1)`, name)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	cols := []string{"rowid"}
	for rows.Next() {
		var c string
		if err := rows.Scan(&c); err != nil {
			return nil, err
		}
		cols = append(cols, c)
	}
	return cols, rows.Err()
}

// copyTable streams a table's rows from SQLite into PostgreSQL with COPY.
func copyTable(ctx context.Context, src *source, tx pgx.Tx, t table) (int64, error) {
	have, err := sourceColumns(ctx, src, t.name)
	if err != nil {
		return 0, err
	}
	var names, quoted []string
	for _, c := range t.cols {
		if !slices.Contains(have, c.name) {
			return 0, fmt.Errorf("SQLite has no column %s", c.name)
		}
		names = append(names, c.name)
		quoted = append(quoted, quote(c.name))
	}
	for _, c := range have[1:] {
		if !slices.Contains(names, c) {
			return 0, fmt.Errorf("PostgreSQL has no column %s", c)
		}
	}
	rows, err := src.tx.QueryContext(ctx, `SELECT `+strings.Join(quoted, ", ")+` FROM `+quote(t.name))
	if err != nil {
		return 0, err
	}
	defer rows.Close()
	vals := make([]any, len(t.cols))
	ptrs := make([]any, len(t.cols))
	for i := range vals {
		ptrs[i] = &vals[i]
	}
	var convErr error
	next := func() ([]any, error) {
		if !rows.Next() {
			return nil, rows.Err()
		}
		if err := rows.Scan(ptrs...); err != nil {
			return nil, err
		}
		row := make([]any, len(vals))
		for i, v := range vals {
			if row[i], convErr = convert(v, t.cols[i]); convErr != nil {
				return nil, convErr
			}
		}
		return row, nil
	}
	n, err := tx.CopyFrom(ctx, pgx.Identifier{t.name}, names, pgx.CopyFromFunc(next))
	if err != nil {
		return n, err
	}
	return n, nil
}

// convert turns a value SQLite returned into the Go type COPY encodes for
// the column's PostgreSQL type. SQLite's columns hold any type (an
// INTEGER column may hold text); a value that does not fit is an error,
// not a guess.
func convert(v any, c column) (any, error) {
	if v == nil {
		return nil, nil
	}
	switch c.pgType {
	case "bigint", "integer", "smallint":
		switch x := v.(type) {
		case int64:
			return x, nil
		case float64:
			if x == float64(int64(x)) {
				return int64(x), nil
			}
		case string:
			if n, err := strconv.ParseInt(x, 10, 64); err == nil {
				return n, nil
			}
		}
	case "double precision", "real", "numeric":
		switch x := v.(type) {
		case int64:
			return float64(x), nil
		case float64:
			return x, nil
		}
	case "boolean":
		if x, ok := v.(int64); ok {
			return x != 0, nil
		}
	case "text", "character varying":
		switch x := v.(type) {
		case string:
			return x, nil
		case []byte:
			return string(x), nil
		case int64:
			return strconv.FormatInt(x, 10), nil
		case float64:
			return strconv.FormatFloat(x, 'g', -1, 64), nil
		}
	case "bytea":
		switch x := v.(type) {
		case []byte:
			return x, nil
		case string:
			return []byte(x), nil
		}
	default:
		return nil, fmt.Errorf("column %s: PostgreSQL type %s is not supported by the copy", c.name, c.pgType)
	}
	return nil, fmt.Errorf("column %s: a %T value (%v) does not fit PostgreSQL's %s", c.name, v, v, c.pgType)
}

// continueIdentities makes each identity column go on after the largest
// value the source used: the largest copied, or for an AUTOINCREMENT
// column the largest ever handed out (sqlite_sequence), as SQLite would.
func continueIdentities(ctx context.Context, src *source, tx pgx.Tx, order []table) error {
	used := map[string]int64{}
	var hasSeq int
	if err := src.tx.QueryRowContext(ctx, `SELECT count(*) FROM sqlite_master WHERE name = 'sqlite_sequence'`).Scan(&hasSeq); err != nil {
		return err
	}
	if hasSeq > 0 {
		rows, err := src.tx.QueryContext(ctx, `SELECT name, seq FROM sqlite_sequence`)
		if err != nil {
			return err
		}
		for rows.Next() {
			var name string
			var seq int64
			if err := rows.Scan(&name, &seq); err != nil {
				rows.Close()
				return err
			}
			used[name] = seq
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return err
		}
	}
	for _, t := range order {
		for _, c := range t.cols {
			if !c.identity {
				continue
			}
			var largest int64
			if err := tx.QueryRow(ctx, `SELECT COALESCE(MAX(`+quote(c.name)+`), 0) FROM `+quote(t.name)).Scan(&largest); err != nil {
				return fmt.Errorf("largest %s.%s: %w", t.name, c.name, err)
			}
			largest = max(largest, used[t.name])
			// setval(seq, n, false): the next value is n itself.
			if _, err := tx.Exec(ctx, `SELECT setval(pg_get_serial_sequence($1, $2), $3, false)`,
				quote(t.name), c.name, largest+1); err != nil {
				return fmt.Errorf("continue %s.%s after %d: %w", t.name, c.name, largest, err)
			}
		}
	}
	return nil
}

// quote is an identifier quoted for both engines.
func quote(name string) string { return pgx.Identifier{name}.Sanitize() }
