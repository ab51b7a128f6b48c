package housekeeping_test

import (
	"context"
	"fmt"
	"path/filepath"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"maunium.net/go/mautrix"

	"github.com/tessera-hs/tessera/housekeeping"
	"github.com/tessera-hs/tessera/internal/config"
	"github.com/tessera-hs/tessera/internal/testserver"
)

// median of the durations, in milliseconds.
func medianMS(ds []time.Duration) float64 {
	s := slices.Clone(ds)
	slices.Sort(s)
	return float64(s[len(s)/2].Microseconds()) / 1000
}

// BenchmarkRetentionPurge: each iteration sends 2,000 messages (not
// timed) and times the job purging them under a one-day policy, a day on.
//
//	go test -tags goolm,sqlite_fts5 ./housekeeping -run '^$' -bench RetentionPurge -benchtime 5x
func BenchmarkRetentionPurge(b *testing.B) {
	ctx := context.Background()
	s := testserver.Start(b, retentionOn, func(c *config.Config) {
		c.Housekeeping.Retention.DefaultMaxLifetime = config.Duration(24 * time.Hour)
	})
	alice := s.Register("alice", "password-alice")
	room, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "private_chat"})
	if err != nil {
		b.Fatal(err)
	}
	const n = 2000
	var took []time.Duration
	for b.Loop() {
		b.StopTimer()
		sendMany(b, alice, room.RoomID, n, "old")
		time.Sleep(5 * time.Millisecond)
		cutoff := time.Now()
		b.StartTimer()
		start := time.Now()
		rep, err := s.Server().Housekeeping.RunOnce(ctx, cutoff.Add(24*time.Hour))
		took = append(took, time.Since(start))
		if err != nil || rep.PurgedEvents < n-1 { // the newest stays: it is the forward extremity
			b.Fatalf("purged %d, %v", rep.PurgedEvents, err)
		}
	}
	b.ReportMetric(medianMS(took), "median-ms/2000-events")
}

// BenchmarkBackup: a backup of a server holding 5,000 messages, idle and
// while a client sends messages; under load it reports the send latency
// medians too.
//
//	go test -tags goolm,sqlite_fts5 ./housekeeping -run '^$' -bench Backup -benchtime 5x
func BenchmarkBackup(b *testing.B) {
	ctx := context.Background()
	s := testserver.Start(b)
	alice := s.Register("alice", "password-alice")
	room, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "private_chat"})
	if err != nil {
		b.Fatal(err)
	}
	sendMany(b, alice, room.RoomID, 5000, "fill")
	run := func(b *testing.B) {
		var took []time.Duration
		var size int64
		for b.Loop() {
			start := time.Now()
			m, err := housekeeping.Backup(ctx, housekeeping.PathsOf(s.Config), filepath.Join(b.TempDir(), "backup"))
			took = append(took, time.Since(start))
			if err != nil {
				b.Fatal(err)
			}
			size = m.DBBytes
		}
		b.ReportMetric(medianMS(took), "median-ms/backup")
		b.ReportMetric(float64(size)/(1<<20), "db-MiB")
	}
	b.Run("idle", run)
	b.Run("under-load", func(b *testing.B) {
		// The send latency without a backup, to compare.
		var base []time.Duration
		for i := range 100 {
			start := time.Now()
			if _, err := alice.SendText(ctx, room.RoomID, fmt.Sprint("base ", i)); err != nil {
				b.Fatal(err)
			}
			base = append(base, time.Since(start))
		}
		var stop atomic.Bool
		done := make(chan []time.Duration)
		go func() {
			var lat []time.Duration
			for i := 0; !stop.Load(); i++ {
				start := time.Now()
				if _, err := alice.SendText(ctx, room.RoomID, fmt.Sprint("load ", i)); err != nil {
					break
				}
				lat = append(lat, time.Since(start))
			}
			done <- lat
		}()
		run(b)
		stop.Store(true)
		// Reported after the loop, which resets what was reported before.
		b.ReportMetric(medianMS(base), "median-send-ms-no-backup")
		if lat := <-done; len(lat) > 0 {
			b.ReportMetric(medianMS(lat), "median-send-ms-during-backups")
			b.ReportMetric(float64(len(lat)), "sends")
		}
	})
}
