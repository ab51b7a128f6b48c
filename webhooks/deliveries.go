package webhooks

import (
	"context"
	"time"

	"github.com/tessera-hs/tessera/internal/database"
)

// GitHub delivery IDs are written in groups (database.GroupWriter), one
// transaction for whatever is waiting, as the room server commits events:
// a busy hook's deliveries then share one fsync instead of queueing for
// one each.

// maxDeliveryBatch bounds one transaction.
const maxDeliveryBatch = 256

// recordDelivery stores a GitHub delivery ID; false if it was seen before.
func (s *Service) recordDelivery(ctx context.Context, hookID, deliveryID string) (bool, error) {
	var fresh bool
	err := s.deliveries.Do(ctx, func(tx *database.Tx) error {
		res, err := tx.ExecContext(context.Background(), `INSERT INTO webhook_deliveries (hook_id, delivery_id, received_ts)
			VALUES ($1, $2, $3) ON CONFLICT (hook_id, delivery_id) DO NOTHING`, hookID, deliveryID, time.Now().UnixMilli())
		if err != nil {
			return err
		}
		n, err := res.RowsAffected()
		if err != nil {
			return err
		}
		fresh = n == 1
		return nil
	})
	return fresh && err == nil, err
}

// pruneDeliveries is the goroutine that deletes the delivery IDs older
// than delivery_retention, at start and once an hour.
func (s *Service) pruneDeliveries() {
	defer s.wg.Done()
	prune := time.NewTicker(time.Hour)
	defer prune.Stop()
	for {
		if _, err := s.db.ExecContext(context.Background(), `DELETE FROM webhook_deliveries WHERE received_ts < $1`,
			time.Now().Add(-s.cfg.DeliveryRetention.Std()).UnixMilli()); err != nil {
			s.log.WithError(err).Warn("webhooks: pruning delivery IDs")
		}
		select {
		case <-s.stop:
			return
		case <-prune.C:
		}
	}
}
