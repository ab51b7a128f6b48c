package housekeeping_test

import (
	"context"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/id"

	"github.com/tessera-hs/tessera/housekeeping"
	"github.com/tessera-hs/tessera/internal/config"
	"github.com/tessera-hs/tessera/internal/testserver"
)

// A backup taken while messages are being sent restores to a server that
// has every message acknowledged before the backup began.
func TestBackupUnderWriteLoad(t *testing.T) {
	ctx := context.Background()
	// The backup copies the SQLite file: PostgreSQL is backed up with pg_dump.
	s := testserver.Start(t, testserver.SQLite())
	alice := s.Register("alice", "password")
	room, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "private_chat"})
	if err != nil {
		t.Fatal(err)
	}
	upload, err := alice.UploadBytes(ctx, []byte("a picture, say"), "text/plain")
	if err != nil {
		t.Fatal(err)
	}

	var (
		mu    sync.Mutex
		acked []id.EventID
		stop  = make(chan struct{})
		done  = make(chan error, 2)
	)
	// Two writers, so that a commit is in flight while the backup runs.
	for w := 0; w < 2; w++ {
		go func() {
			for i := 0; ; i++ {
				select {
				case <-stop:
					done <- nil
					return
				default:
				}
				resp, err := alice.SendText(ctx, room.RoomID, "load")
				if err != nil {
					done <- err
					return
				}
				mu.Lock()
				acked = append(acked, resp.EventID)
				mu.Unlock()
			}
		}()
	}
	ackedNow := func() []id.EventID {
		mu.Lock()
		defer mu.Unlock()
		return append([]id.EventID(nil), acked...)
	}
	for len(ackedNow()) < 150 {
		time.Sleep(10 * time.Millisecond)
	}
	before := ackedNow()
	out := filepath.Join(t.TempDir(), "backup")
	m, err := housekeeping.Backup(ctx, housekeeping.PathsOf(s.Config), out)
	if err != nil {
		t.Fatalf("backup: %v", err)
	}
	time.Sleep(100 * time.Millisecond) // writes go on after the backup
	close(stop)
	for w := 0; w < 2; w++ {
		if err := <-done; err != nil {
			t.Fatalf("send: %v", err)
		}
	}
	if m.MediaFiles < 1 || m.DBBytes == 0 {
		t.Errorf("manifest %+v: want the database and the upload", m)
	}
	t.Logf("%d events acknowledged before the backup, %d in all", len(before), len(ackedNow()))

	// Restore into a fresh data directory and start a server on it.
	dataDir := t.TempDir()
	restored := config.Default()
	restored.ServerName, restored.DataDir = s.Config.ServerName, dataDir
	if err := restored.Finalize(); err != nil {
		t.Fatal(err)
	}
	if _, err := housekeeping.Restore(ctx, housekeeping.PathsOf(&restored), out, false); err != nil {
		t.Fatalf("restore: %v", err)
	}
	if _, err := housekeeping.Restore(ctx, housekeeping.PathsOf(&restored), out, false); err == nil {
		t.Error("a second restore over the database without force succeeded")
	}
	s.Stop()
	s2 := testserver.Start(t, testserver.SQLite(), func(c *config.Config) { c.DataDir = dataDir })
	// The access token is in the backup too.
	alice2 := s2.Client(alice.UserID, alice.AccessToken)
	for _, ev := range before {
		if _, err := alice2.GetEvent(ctx, room.RoomID, ev); err != nil {
			t.Fatalf("event %s acknowledged before the backup: %v", ev, err)
		}
	}
	data, err := alice2.DownloadBytes(ctx, upload.ContentURI)
	if err != nil || string(data) != "a picture, say" {
		t.Errorf("media after restore: %q, %v", data, err)
	}
	// The restored server goes on.
	if _, err := alice2.SendText(ctx, room.RoomID, "after the restore"); err != nil {
		t.Errorf("send after restore: %v", err)
	}
}
