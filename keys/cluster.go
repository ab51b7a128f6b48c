package keys

import (
	"context"
	"fmt"

	"github.com/tessera-hs/tessera/internal/database"
	"github.com/tessera-hs/tessera/internal/streampos"
)

// The key store across the processes of a deployment that runs several on
// one PostgreSQL database (docs/scaling.md). Every key store transaction
// announces itself (Announcer): the other processes drop their cached key
// counts and fallback key types, and follow the device list stream, whose
// positions come from the keys_stream_positions counter row (its lock
// makes every process's writers commit in position order): they read
// whose device list changed, advance their copy of the position and run
// the change hook, which wakes their own syncing clients.

// Announcer tells the other processes, inside tx, that tx changed the key
// store and took device list positions up to pos (0: none); it must reach
// them only if tx commits (NOTIFY).
type Announcer func(ctx context.Context, tx *database.Tx, pos int64) error

// SetAnnouncer makes the service announce every transaction with f and
// follow the other processes'. Call it once, before serving requests.
func (s *Service) SetAnnouncer(f Announcer) {
	s.announce = f
	read := func(ctx context.Context) (int64, error) {
		var pos int64
		if err := s.db.QueryRowContext(ctx, `SELECT pos FROM keys_stream_positions WHERE stream = $1`,
			streamDeviceLists).Scan(&pos); err != nil {
			return 0, fmt.Errorf("read device list position: %w", err)
		}
		return pos, nil
	}
	s.follower = streampos.NewFollower(s.pos.Load(), read, s.deviceListsElsewhere)
}

// ChangedElsewhere applies a key store transaction of another process,
// which took device list positions up to pos (0: none; -1: unknown, after
// notifications may have been missed).
func (s *Service) ChangedElsewhere(ctx context.Context, pos int64) error {
	s.otkCounts.Invalidate()
	s.fallbackTypes.Invalidate()
	switch {
	case pos == 0:
		return nil
	case pos < 0:
		pos = 0 // the follower reads the committed position
	}
	return s.follower.Moved(ctx, pos)
}

// CatchUp brings this process's device list position up to what the
// deployment committed (a client's token from another process may be
// ahead of it). A no-op for one process.
func (s *Service) CatchUp(ctx context.Context) error {
	if s.follower == nil {
		return nil
	}
	return s.follower.Moved(ctx, 0)
}

// deviceListsElsewhere wakes those who share a room with the users whose
// device list another process changed in (from, to].
func (s *Service) deviceListsElsewhere(ctx context.Context, from, to int64) error {
	changed, err := s.ChangedUsers(ctx, from, to)
	if err != nil {
		return err
	}
	s.pos.Advance(to)
	if s.onChange != nil {
		for _, u := range changed {
			s.onChange(ctx, u)
		}
	}
	return nil
}
