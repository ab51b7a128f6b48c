package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os/signal"
	"syscall"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/tessera-hs/tessera/internal/config"
	"github.com/tessera-hs/tessera/internal/database"
	"github.com/tessera-hs/tessera/internal/migratedb"
	"github.com/tessera-hs/tessera/internal/server"
)

// cmdMigrateDB copies a stopped SQLite deployment's database into an empty
// PostgreSQL database (docs/postgresql.md). The config is left as it is:
// the operator switches database.engine and dsn once the copy succeeded.
func cmdMigrateDB(args []string, stdout, stderr io.Writer) error {
	fs := newFlags("migrate-db", stderr)
	path := fs.String("from", "tessera.yaml", "config file of the SQLite deployment (the server must be stopped)")
	dsn := fs.String("to", "", "the empty PostgreSQL database, as a postgres:// URL or \"host=... dbname=...\" (required)")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if *dsn == "" {
		return usageError{errors.New("migrate-db: -to DSN is required")}
	}
	cfg, err := loadConfig(*path)
	if err != nil {
		return err
	}
	if database.Engine(cfg.Database.Engine) == database.Postgres {
		return fmt.Errorf("migrate-db: %s is already on PostgreSQL", *path)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()

	// The schema is what Tessera itself makes on PostgreSQL: start it
	// there (without serving) to run every domain's migrations.
	pgCfg := *cfg
	pgCfg.Database = config.Database{Engine: string(database.Postgres), DSN: *dsn,
		MaxOpenConns: 2, MaxIdleConns: 1}
	log := server.NewLogger(cfg.Logging, stderr)
	log.SetLevel(logrus.WarnLevel)
	migrate := func(ctx context.Context) error {
		s, err := server.New(ctx, &pgCfg, log)
		if err != nil {
			return err
		}
		sctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		return s.Shutdown(sctx)
	}
	start := time.Now()
	rep, err := migratedb.Copy(ctx, cfg.Database.Path, *dsn, migratedb.Options{
		Migrate: migrate,
		Progress: func(table string, rows int64) {
			fmt.Fprintf(stdout, "%-36s %10d rows\n", table, rows)
		},
	})
	if err != nil {
		return fmt.Errorf("migrate-db: %w", err)
	}
	var rows int64
	for _, t := range rep.Tables {
		rows += t.Rows
	}
	fmt.Fprintf(stdout, "Copied %d rows in %d tables in %s; row counts match, and the JSON of all %d events.\n"+
		"Now set database.engine: postgres and database.dsn in %s, and start Tessera.\n",
		rows, len(rep.Tables), time.Since(start).Round(time.Millisecond), rep.Events, *path)
	return nil
}
