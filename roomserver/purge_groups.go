package roomserver

import (
	"context"
	"fmt"
	"strconv"
	"strings"

	"github.com/tessera-hs/tessera/internal/database"
)

// stateGroupChunk bounds the group IDs of one DELETE.
const stateGroupChunk = 500

// pruneStateGroups deletes the room's state groups that nothing needs
// any more: no event is at them, the room's current state is not, and no
// group kept builds on them (prev_group). A history purge leaves such
// groups behind: the state at a purged event that was its own group (a
// remote event where branches merged), or a resolved state superseded
// since. It runs in one write transaction, so no event commits between the
// reading of what is in use and the deletion.
func (s *Service) pruneStateGroups(ctx context.Context, roomID string) (int, error) {
	var n int
	err := s.db.WithTx(ctx, func(tx *database.Tx) error {
		n = 0
		rows, err := tx.QueryContext(ctx, `SELECT group_id, COALESCE(prev_group, 0) FROM state_groups WHERE room_id = $1`, roomID)
		if err != nil {
			return err
		}
		prev := map[int64]int64{}
		for rows.Next() {
			var g, p int64
			if err := rows.Scan(&g, &p); err != nil {
				rows.Close()
				return err
			}
			prev[g] = p
		}
		if err := rows.Close(); err != nil {
			return err
		}
		used, err := database.Int64s(ctx, tx, `SELECT DISTINCT state_group FROM events WHERE room_id = $1 AND state_group != 0
			UNION SELECT state_group FROM rooms WHERE room_id = $1`, roomID)
		if err != nil {
			return err
		}
		keep := make(map[int64]bool, len(used))
		for _, g := range used {
			// A group and the chain of deltas it is read through.
			for ; g != 0 && !keep[g]; g = prev[g] {
				keep[g] = true
			}
		}
		var dead []any
		for g := range prev {
			if !keep[g] {
				dead = append(dead, g)
			}
		}
		for len(dead) > 0 {
			args := dead[:min(len(dead), stateGroupChunk)]
			dead = dead[len(args):]
			ph := make([]string, len(args))
			for i := range args {
				ph[i] = "$" + strconv.Itoa(i+1)
			}
			for _, q := range []string{
				`DELETE FROM state_group_entries WHERE group_id IN (` + strings.Join(ph, ", ") + `)`,
				`DELETE FROM state_groups WHERE group_id IN (` + strings.Join(ph, ", ") + `)`,
			} {
				if _, err := tx.ExecContext(ctx, q, args...); err != nil {
					return err
				}
			}
			n += len(args)
		}
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("prune the state groups of %s: %w", roomID, err)
	}
	return n, nil
}
