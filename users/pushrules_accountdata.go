package users

import (
	"context"
	"encoding/json"

	"github.com/tessera-hs/tessera/internal/database"
)

// SetPushRulesAccountData stores a user's m.push_rules global account
// data, which the push domain keeps equal to the user's push rules ("When
// a user changes their push rules a m.push_rules event is sent to all
// clients in the account_data section of their next /sync request"), and
// wakes the user's syncs. Clients cannot set it through the account data
// API (CheckClientSettable); this bypasses that check.
// https://spec.matrix.org/v1.19/client-server-api/#push-rules-events
func (s *Service) SetPushRulesAccountData(ctx context.Context, userID string, content json.RawMessage) error {
	err := s.db.WithTx(ctx, func(tx *database.Tx) error {
		return s.putAccountData(ctx, tx, userID, "", TypePushRules, content)
	})
	if err == nil {
		s.accountDataChanged(ctx, userID)
	}
	return err
}
