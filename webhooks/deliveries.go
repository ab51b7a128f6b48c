package webhooks

import (
	"context"
	"errors"
	"time"

	"github.com/tessera-hs/tessera/internal/database"
)

// GitHub delivery IDs are written in groups, one transaction for whatever
// is waiting, as the room server commits events: a busy hook's deliveries
// then share one fsync instead of queueing for one each.

type deliveryReq struct {
	hookID, deliveryID string
	done               chan deliveryRes
}

type deliveryRes struct {
	fresh bool
	err   error
}

// maxDeliveryBatch bounds one transaction.
const maxDeliveryBatch = 256

var errClosed = errors.New("webhooks: shutting down")

// recordDelivery stores a GitHub delivery ID; false if it was seen before.
func (s *Service) recordDelivery(ctx context.Context, hookID, deliveryID string) (bool, error) {
	r := &deliveryReq{hookID: hookID, deliveryID: deliveryID, done: make(chan deliveryRes, 1)}
	select {
	case s.deliveries <- r:
	case <-ctx.Done():
		return false, ctx.Err()
	case <-s.stop:
		return false, errClosed
	}
	select {
	case res := <-r.done:
		return res.fresh, res.err
	case <-ctx.Done():
		return false, ctx.Err()
	}
}

// writeDeliveries is the goroutine that writes delivery IDs, and prunes
// those older than delivery_retention once an hour.
func (s *Service) writeDeliveries() {
	defer s.wg.Done()
	prune := time.NewTicker(time.Hour)
	defer prune.Stop()
	s.pruneDeliveries()
	for {
		select {
		case <-s.stop:
			return
		case <-prune.C:
			s.pruneDeliveries()
		case r := <-s.deliveries:
			batch := []*deliveryReq{r}
		drain:
			for len(batch) < maxDeliveryBatch {
				select {
				case r := <-s.deliveries:
					batch = append(batch, r)
				default:
					break drain
				}
			}
			s.writeBatch(batch)
		}
	}
}

func (s *Service) writeBatch(batch []*deliveryReq) {
	fresh := make([]bool, len(batch))
	now := time.Now().UnixMilli()
	err := s.db.WithTx(context.Background(), func(tx *database.Tx) error {
		for i, r := range batch {
			res, err := tx.ExecContext(context.Background(), `INSERT INTO webhook_deliveries (hook_id, delivery_id, received_ts)
				VALUES ($1, $2, $3) ON CONFLICT (hook_id, delivery_id) DO NOTHING`, r.hookID, r.deliveryID, now)
			if err != nil {
				return err
			}
			n, err := res.RowsAffected()
			if err != nil {
				return err
			}
			fresh[i] = n == 1
		}
		return nil
	})
	for i, r := range batch {
		r.done <- deliveryRes{fresh: fresh[i] && err == nil, err: err}
	}
}

func (s *Service) pruneDeliveries() {
	if _, err := s.db.ExecContext(context.Background(), `DELETE FROM webhook_deliveries WHERE received_ts < $1`,
		time.Now().Add(-s.cfg.DeliveryRetention.Std()).UnixMilli()); err != nil {
		s.log.WithError(err).Warn("webhooks: pruning delivery IDs")
	}
}
