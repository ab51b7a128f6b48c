package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/tessera-hs/tessera/housekeeping"
	"github.com/tessera-hs/tessera/internal/config"
	"github.com/tessera-hs/tessera/internal/database"
)

// cmdBackup copies the database, media store and signing key to a new
// directory, while the server runs or not.
func cmdBackup(args []string, stdout, stderr io.Writer) error {
	fs := newFlags("backup", stderr)
	path := fs.String("config", "tessera.yaml", "config file")
	out := fs.String("o", "", "directory to write the backup to; must not exist or be empty (required)")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if *out == "" {
		return usageError{errors.New("backup: -o DIR is required")}
	}
	cfg, err := loadConfig(*path)
	if err != nil {
		return err
	}
	if err := sqliteOnly(cfg); err != nil {
		return err
	}
	m, err := housekeeping.Backup(context.Background(), housekeeping.PathsOf(cfg), *out)
	if err != nil {
		return fmt.Errorf("backup: %w", err)
	}
	fmt.Fprintf(stdout, "Backed up %s to %s: database %d bytes, %d media files (%d bytes)\n",
		cfg.ServerName, *out, m.DBBytes, m.MediaFiles, m.MediaBytes)
	return nil
}

// cmdRestore puts a backup in place of a stopped server's data.
func cmdRestore(args []string, stdout, stderr io.Writer) error {
	fs := newFlags("restore", stderr)
	path := fs.String("config", "tessera.yaml", "config file")
	in := fs.String("i", "", "backup directory written by `tessera backup` (required)")
	force := fs.Bool("force", false, "replace an existing database (stop the server first)")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if *in == "" {
		return usageError{errors.New("restore: -i DIR is required")}
	}
	cfg, err := loadConfig(*path)
	if err != nil {
		return err
	}
	if err := sqliteOnly(cfg); err != nil {
		return err
	}
	m, err := housekeeping.Restore(context.Background(), housekeeping.PathsOf(cfg), *in, *force)
	if err != nil {
		return fmt.Errorf("restore: %w", err)
	}
	fmt.Fprintf(stdout, "Restored the backup of %s taken %s into %s\n", m.ServerName, m.Taken.Format("2006-01-02 15:04:05Z"), cfg.DataDir)
	return nil
}

// cmdDBStats prints the size of each table, on either engine; it may run
// while the server does.
func cmdDBStats(args []string, stdout, stderr io.Writer) error {
	fs := newFlags("db-stats", stderr)
	path := fs.String("config", "tessera.yaml", "config file")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	cfg, err := loadConfig(*path)
	if err != nil {
		return err
	}
	ctx := context.Background()
	var db *database.DB
	if cfg.Database.Engine == "postgres" {
		db, err = database.OpenPostgres(ctx, cfg.Database.DSN, database.Options{Readers: 1, Writers: 1})
	} else {
		if _, err := os.Stat(cfg.Database.Path); err != nil {
			return fmt.Errorf("db-stats: %w", err)
		}
		db, err = database.Open(cfg.Database.Path, database.Options{Readers: 1})
	}
	if err != nil {
		return err
	}
	defer db.Close()
	st, err := housekeeping.Stats(ctx, db)
	if err != nil {
		return fmt.Errorf("db-stats: %w", err)
	}
	return st.Print(stdout)
}

// sqliteOnly refuses the commands that work on the SQLite file itself
// when the deployment is on PostgreSQL, whose own tools do those jobs.
func sqliteOnly(cfg *config.Config) error {
	if cfg.Database.Engine == "postgres" {
		return errors.New("this deployment is on PostgreSQL: back it up with pg_dump and restore it with pg_restore " +
			"(docs/postgresql.md), and copy the media store and signing key yourself")
	}
	return nil
}
