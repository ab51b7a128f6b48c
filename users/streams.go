package users

import (
	"context"
	"fmt"
	"slices"

	"github.com/tessera-hs/tessera/internal/database"
	"github.com/tessera-hs/tessera/internal/streampos"
)

// The users domain's streams (account data, receipts, presence) across the
// processes of a deployment that runs several on one PostgreSQL database
// (docs/scaling.md). Positions come from the users_stream_positions
// counter rows, whose row lock makes every process's writers of a stream
// commit in position order; each such transaction announces its position
// (StreamAnnouncer), and the other processes follow (StreamMovedElsewhere):
// they read what changed, advance their copy of the position, drop what
// they cached of it and run the same hooks a local change runs, which wake
// their own syncing clients.

// StreamAnnouncer tells the other processes, inside tx, that tx takes
// position pos of stream; it must reach them only if tx commits (NOTIFY).
type StreamAnnouncer func(ctx context.Context, tx *database.Tx, stream string, pos int64) error

// Streams are the names of the users domain's streams, for
// StreamMovedElsewhere.
var Streams = []string{streamAccountData, streamReceipts, streamPresence}

// SetStreamAnnouncer makes the service announce every position it takes
// with f and follow the other processes' positions. Call it once, before
// serving requests; without it (one process) nothing is announced.
func (s *Service) SetStreamAnnouncer(f StreamAnnouncer) {
	s.announce = f
	s.followers = map[string]*streampos.Follower{}
	for _, stream := range Streams {
		apply := map[string]func(ctx context.Context, from, to int64) error{
			streamAccountData: s.accountDataElsewhere,
			streamReceipts:    s.receiptsElsewhere,
			streamPresence:    s.presenceElsewhere,
		}[stream]
		read := func(ctx context.Context) (int64, error) {
			var pos int64
			if err := s.db.QueryRowContext(ctx, `SELECT pos FROM users_stream_positions WHERE stream = $1`, stream).Scan(&pos); err != nil {
				return 0, fmt.Errorf("read %s position: %w", stream, err)
			}
			return pos, nil
		}
		s.followers[stream] = streampos.NewFollower(s.positions[stream].Load(), read, apply)
	}
}

// StreamMovedElsewhere applies the changes of stream up to pos that
// another process committed (pos 0: up to the stream's committed
// position, after notifications may have been missed).
func (s *Service) StreamMovedElsewhere(ctx context.Context, stream string, pos int64) error {
	f, ok := s.followers[stream]
	if !ok {
		return fmt.Errorf("unknown stream %q", stream)
	}
	return f.Moved(ctx, pos)
}

// CatchUp brings this process's position of stream up to what the
// deployment committed: a client's token from another process can be
// ahead of it for the few milliseconds its notification takes, and
// answering from behind would send it back what it has. A no-op for one
// process.
func (s *Service) CatchUp(ctx context.Context, stream string) error {
	if s.followers == nil {
		return nil
	}
	return s.StreamMovedElsewhere(ctx, stream, 0)
}

// Stream names for CatchUp.
const (
	StreamAccountData = streamAccountData
	StreamReceipts    = streamReceipts
	StreamPresence    = streamPresence
)

// accountDataElsewhere wakes the users whose account data another process
// changed in (from, to], and forgets the ignore lists it may have cached.
func (s *Service) accountDataElsewhere(ctx context.Context, from, to int64) error {
	rows, err := s.db.QueryContext(ctx, `SELECT DISTINCT user_id, type FROM account_data
		WHERE stream_pos > $1 AND stream_pos <= $2`, from, to)
	if err != nil {
		return fmt.Errorf("account data changed elsewhere: %w", err)
	}
	var changed []string
	ignored := false
	for rows.Next() {
		var userID, typ string
		if err := rows.Scan(&userID, &typ); err != nil {
			rows.Close()
			return fmt.Errorf("account data changed elsewhere: %w", err)
		}
		if !slices.Contains(changed, userID) {
			changed = append(changed, userID)
		}
		ignored = ignored || typ == TypeIgnoredUserList
	}
	if err := rows.Close(); err != nil {
		return fmt.Errorf("account data changed elsewhere: %w", err)
	}
	if ignored {
		s.ignored.Invalidate()
	}
	s.positions[streamAccountData].Advance(to)
	for _, u := range changed {
		s.accountDataChanged(ctx, u)
	}
	return nil
}

// receiptsElsewhere wakes the rooms whose receipts another process changed
// in (from, to].
func (s *Service) receiptsElsewhere(ctx context.Context, from, to int64) error {
	rooms, err := database.Strings(ctx, s.db, `SELECT DISTINCT room_id FROM receipts
		WHERE stream_pos > $1 AND stream_pos <= $2`, from, to)
	if err != nil {
		return fmt.Errorf("receipts changed elsewhere: %w", err)
	}
	s.positions[streamReceipts].Advance(to)
	if s.hooks.ReceiptsChanged != nil {
		for _, roomID := range rooms {
			s.hooks.ReceiptsChanged(ctx, roomID)
		}
	}
	return nil
}

// presenceElsewhere wakes those who see the users whose presence another
// process published in (from, to].
func (s *Service) presenceElsewhere(ctx context.Context, from, to int64) error {
	changed, err := database.Strings(ctx, s.db, `SELECT user_id FROM presence
		WHERE stream_pos > $1 AND stream_pos <= $2`, from, to)
	if err != nil {
		return fmt.Errorf("presence changed elsewhere: %w", err)
	}
	s.positions[streamPresence].Advance(to)
	if s.hooks.PresenceChangedElsewhere != nil {
		for _, u := range changed {
			s.hooks.PresenceChangedElsewhere(ctx, u)
		}
	}
	return nil
}
