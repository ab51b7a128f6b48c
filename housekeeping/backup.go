// Package housekeeping keeps a server's disk in hand: online backups and
// their restore, the periodic pruning of what is only needed for a while,
// and the table sizes an operator watches.
package housekeeping

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/url"
	"os"
	"path/filepath"
	"time"

	_ "github.com/mattn/go-sqlite3" // the "sqlite3" driver

	"github.com/tessera-hs/tessera/internal/config"
)

// The names inside a backup directory.
const (
	backupDBFile       = "tessera.db"
	backupMediaDir     = "media"
	backupKeyFile      = "signing.key"
	backupManifestFile = "backup.json"
)

// Manifest describes a backup; restore reads it to refuse a backup of
// another server.
type Manifest struct {
	ServerName string    `json:"server_name"`
	Taken      time.Time `json:"taken"`
	DBBytes    int64     `json:"db_bytes"`
	MediaFiles int       `json:"media_files"`
	MediaBytes int64     `json:"media_bytes"`
}

// Paths are where a server keeps its data.
type Paths struct {
	ServerName string
	Database   string
	MediaDir   string
	SigningKey string
}

// PathsOf are the paths a (finalized) config gives.
func PathsOf(cfg *config.Config) Paths {
	return Paths{
		ServerName: cfg.ServerName,
		Database:   cfg.Database.Path,
		MediaDir:   filepath.Join(cfg.DataDir, "media"),
		SigningKey: cfg.SigningKeyPath,
	}
}

// Backup writes a consistent copy of the database, the media store and the
// signing key to dir (which must not exist or be empty) while the server
// may be running.
//
// The database is copied with VACUUM INTO on a read-only connection: it
// reads one WAL snapshot, so the copy holds exactly the transactions
// committed before it began, and the server's writer is never blocked.
// Media files are copied after the snapshot: they are content-addressed
// and never rewritten, so every file the copied database refers to is
// already in place (files uploaded later are copied too, and unused).
func Backup(ctx context.Context, p Paths, dir string) (Manifest, error) {
	m := Manifest{ServerName: p.ServerName, Taken: time.Now().UTC()}
	if err := ensureEmptyDir(dir); err != nil {
		return m, err
	}
	dbOut := filepath.Join(dir, backupDBFile)
	if err := snapshotDB(ctx, p.Database, dbOut); err != nil {
		return m, err
	}
	st, err := os.Stat(dbOut)
	if err != nil {
		return m, err
	}
	m.DBBytes = st.Size()
	if m.MediaFiles, m.MediaBytes, err = copyTree(ctx, p.MediaDir, filepath.Join(dir, backupMediaDir)); err != nil {
		return m, fmt.Errorf("copy media store: %w", err)
	}
	if err := copyFile(p.SigningKey, filepath.Join(dir, backupKeyFile), 0o600); err != nil {
		return m, fmt.Errorf("copy signing key: %w", err)
	}
	raw, _ := json.MarshalIndent(m, "", "  ")
	if err := writeSynced(filepath.Join(dir, backupManifestFile), bytes.NewReader(raw), 0o600); err != nil {
		return m, err
	}
	return m, nil
}

// snapshotDB copies the database at src to dst in one read transaction.
func snapshotDB(ctx context.Context, src, dst string) error {
	if _, err := os.Stat(src); err != nil {
		return fmt.Errorf("database: %w", err)
	}
	params := url.Values{}
	params.Set("mode", "ro")
	params.Set("_busy_timeout", "10000")
	db, err := sql.Open("sqlite3", "file:"+src+"?"+params.Encode())
	if err != nil {
		return fmt.Errorf("open database %s: %w", src, err)
	}
	defer db.Close()
	if _, err := db.ExecContext(ctx, `VACUUM INTO ?`, dst); err != nil {
		return fmt.Errorf("copy database: %w", err)
	}
	return checkIntegrity(ctx, dst)
}

// checkIntegrity runs SQLite's integrity check on the database at path.
func checkIntegrity(ctx context.Context, path string) error {
	db, err := sql.Open("sqlite3", "file:"+path+"?mode=ro")
	if err != nil {
		return err
	}
	defer db.Close()
	var res string
	if err := db.QueryRowContext(ctx, `PRAGMA quick_check`).Scan(&res); err != nil {
		return fmt.Errorf("check %s: %w", path, err)
	}
	if res != "ok" {
		return fmt.Errorf("check %s: %s", path, res)
	}
	return nil
}

// Restore puts the backup in dir in place of the server's data. The server
// must be stopped. Unless force is set it refuses to overwrite a database
// that exists; it always refuses a backup of another server name, whose
// events and keys would not be this server's.
func Restore(ctx context.Context, p Paths, dir string, force bool) (Manifest, error) {
	var m Manifest
	raw, err := os.ReadFile(filepath.Join(dir, backupManifestFile))
	if err != nil {
		return m, fmt.Errorf("not a Tessera backup: %w", err)
	}
	if err := json.Unmarshal(raw, &m); err != nil {
		return m, fmt.Errorf("read %s: %w", backupManifestFile, err)
	}
	if m.ServerName != p.ServerName {
		return m, fmt.Errorf("the backup is of server %q, the config is of %q", m.ServerName, p.ServerName)
	}
	dbIn := filepath.Join(dir, backupDBFile)
	if err := checkIntegrity(ctx, dbIn); err != nil {
		return m, err
	}
	if _, err := os.Stat(p.Database); err == nil && !force {
		return m, fmt.Errorf("%s exists: stop the server and pass -force to replace it", p.Database)
	}
	if err := os.MkdirAll(filepath.Dir(p.Database), 0o700); err != nil {
		return m, err
	}
	// The old database's WAL and shared memory would be replayed onto
	// the restored file: remove them with it.
	for _, suffix := range []string{"", "-wal", "-shm", "-journal"} {
		if err := os.Remove(p.Database + suffix); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return m, err
		}
	}
	tmp := p.Database + ".restore"
	if err := copyFile(dbIn, tmp, 0o600); err != nil {
		return m, err
	}
	if err := os.Rename(tmp, p.Database); err != nil {
		return m, err
	}
	if _, _, err := copyTree(ctx, filepath.Join(dir, backupMediaDir), p.MediaDir); err != nil {
		return m, fmt.Errorf("restore media store: %w", err)
	}
	if err := copyFile(filepath.Join(dir, backupKeyFile), p.SigningKey, 0o600); err != nil {
		return m, fmt.Errorf("restore signing key: %w", err)
	}
	return m, nil
}

func ensureEmptyDir(dir string) error {
	entries, err := os.ReadDir(dir)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return os.MkdirAll(dir, 0o700)
	case err != nil:
		return err
	case len(entries) > 0:
		return fmt.Errorf("%s is not empty", dir)
	}
	return nil
}

// copyTree copies the regular files under src to dst, leaving out the
// media store's tmp directory of uploads in progress. A missing src is an
// empty tree.
func copyTree(ctx context.Context, src, dst string) (files int, size int64, err error) {
	err = filepath.WalkDir(src, func(path string, d fs.DirEntry, err error) error {
		if errors.Is(err, fs.ErrNotExist) && path == src {
			return fs.SkipAll
		}
		if err != nil {
			return err
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, path)
		if d.IsDir() {
			if rel == "tmp" {
				return fs.SkipDir
			}
			return os.MkdirAll(filepath.Join(dst, rel), 0o700)
		}
		if !d.Type().IsRegular() {
			return nil
		}
		if err := copyFile(path, filepath.Join(dst, rel), 0o600); err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return nil // deleted while we walked: not in the snapshot's future either
			}
			return err
		}
		info, err := d.Info()
		if err == nil {
			size += info.Size()
		}
		files++
		return nil
	})
	return files, size, err
}

// copyFile copies src to dst and syncs it.
func copyFile(src, dst string, perm fs.FileMode) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	return writeSynced(dst, in, perm)
}

// writeSynced writes what r reads to path and syncs it.
func writeSynced(path string, r io.Reader, perm fs.FileMode) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, perm)
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, r); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
