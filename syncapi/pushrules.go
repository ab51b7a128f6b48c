package syncapi

import "context"

// PushRulesAccountData keeps a user's m.push_rules account data written;
// *push.Service satisfies it.
type PushRulesAccountData interface {
	EnsureAccountData(ctx context.Context, userID string) error
}

// SetPushRules installs it; call it once, before serving requests.
func (s *Service) SetPushRules(p PushRulesAccountData) { s.pushRules = p }

// ensurePushRules makes sure an initial sync carries m.push_rules (the
// server-default rules merged with the user's): a client needs the rules
// from its first sync, and a user who never changed a rule has no stored
// account data until something writes it. It is cheap when the account
// data is current.
// https://spec.matrix.org/v1.19/client-server-api/#push-rules-events
func (s *Service) ensurePushRules(ctx context.Context, userID string) error {
	if s.pushRules == nil {
		return nil
	}
	return s.pushRules.EnsureAccountData(ctx, userID)
}
