package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestBackupRestoreDBStats is the operator's path: back up a running
// server, read its table sizes, and restore the backup as a new server's
// data, which then serves the account made before the backup.
func TestBackupRestoreDBStats(t *testing.T) {
	dir := t.TempDir()
	path := generate(t, dir)
	if _, stderr, code := tessera(t, dir, "register-user", "-config", path, "-user", "alice", "-password", "hunter2hunter2"); code != 0 {
		t.Fatalf("register-user: %s", stderr)
	}
	srv := start(t, dir, "run", "-config", path)
	backup := filepath.Join(dir, "backup")
	out, stderr, code := tessera(t, dir, "backup", "-config", path, "-o", backup)
	if code != 0 || !strings.Contains(out, "Backed up cli.test to "+backup) {
		t.Fatalf("backup of the running server: exit %d %q %q", code, out, stderr)
	}
	if _, stderr, code := tessera(t, dir, "backup", "-config", path, "-o", backup); code != 1 || !strings.Contains(stderr, "is not empty") {
		t.Errorf("backup into a non-empty directory: exit %d %q", code, stderr)
	}
	out, stderr, code = tessera(t, dir, "db-stats", "-config", path)
	if code != 0 || !strings.Contains(out, "accounts") || !strings.Contains(out, "events") {
		t.Errorf("db-stats: exit %d %q %q", code, out, stderr)
	}
	srv.stop(t)
	if _, stderr, code := tessera(t, dir, "restore", "-config", path, "-i", backup); code != 1 || !strings.Contains(stderr, "-force") {
		t.Errorf("restore over a database without -force: exit %d %q", code, stderr)
	}
	if _, stderr, code := tessera(t, dir, "restore", "-config", path); code != 2 {
		t.Errorf("restore without -i: exit %d %q", code, stderr)
	}

	// A new machine: a fresh config of the same server, the backup
	// restored into it.
	dir2 := t.TempDir()
	path2 := generate(t, dir2)
	out, stderr, code = tessera(t, dir2, "restore", "-config", path2, "-i", backup)
	if code != 0 || !strings.Contains(out, "Restored the backup of cli.test") {
		t.Fatalf("restore: exit %d %q %q", code, out, stderr)
	}
	key1, _ := os.ReadFile(filepath.Join(dir, "data", "signing.key"))
	key2, _ := os.ReadFile(filepath.Join(dir2, "data", "signing.key"))
	if string(key1) != string(key2) {
		t.Error("the signing key was not restored")
	}
	srv2 := start(t, dir2, "run", "-config", path2)
	login := map[string]any{"type": "m.login.password", "identifier": map[string]string{"type": "m.id.user", "user": "alice"}, "password": "hunter2hunter2"}
	if status, body := postJSON(t, "http://"+srv2.addr+"/_matrix/client/v3/login", login); status != 200 || body["user_id"] != "@alice:cli.test" {
		t.Errorf("login on the restored server: %d %v", status, body)
	}
	srv2.stop(t)
}

// TestFileCommandsRefusePostgres: backup and restore work on the SQLite
// file; on a PostgreSQL deployment they say what to use instead rather
// than failing on a file that is not there. db-stats reads PostgreSQL
// (TestMigrateDBToPostgres): here it reports the server it cannot reach.
func TestFileCommandsRefusePostgres(t *testing.T) {
	dir := t.TempDir()
	path := generate(t, dir)
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	cfg := strings.Replace(string(raw), "  engine: sqlite\n", "  engine: postgres\n", 1)
	cfg = strings.Replace(cfg, "  dsn: \"\"\n", "  dsn: \"postgres://tessera@127.0.0.1:1/tessera\"\n", 1)
	if cfg == string(raw) || !strings.Contains(cfg, "engine: postgres") || !strings.Contains(cfg, "127.0.0.1:1") {
		t.Fatal("could not switch the generated config to PostgreSQL")
	}
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{
		{"backup", "-config", path, "-o", filepath.Join(dir, "backup")},
		{"restore", "-config", path, "-i", filepath.Join(dir, "backup")},
	} {
		if _, stderr, code := tessera(t, dir, args...); code != 1 || !strings.Contains(stderr, "pg_dump") {
			t.Errorf("%s on PostgreSQL: exit %d %q", args[0], code, stderr)
		}
	}
	if _, stderr, code := tessera(t, dir, "db-stats", "-config", path); code != 1 || !strings.Contains(stderr, "open postgres database") {
		t.Errorf("db-stats on an unreachable PostgreSQL: exit %d %q", code, stderr)
	}
}
