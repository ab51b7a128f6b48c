package admin

import (
	"context"

	"github.com/tessera-hs/tessera/users"
)

// Registration tokens: the audit log names the action, never the token,
// which is a secret that lets anyone register.

// RegistrationTokens lists the tokens (valid nil: all).
func (s *Service) RegistrationTokens(ctx context.Context, valid *bool) ([]users.RegToken, error) {
	return s.users.RegistrationTokens(ctx, valid)
}

// RegistrationToken returns one token.
func (s *Service) RegistrationToken(ctx context.Context, token string) (*users.RegToken, error) {
	return s.users.RegistrationToken(ctx, token)
}

// CreateRegistrationToken makes a token.
func (s *Service) CreateRegistrationToken(ctx context.Context, actor string, nt users.NewRegToken) (*users.RegToken, error) {
	t, err := s.users.CreateRegistrationToken(ctx, nt)
	if err == nil {
		s.Audit(actor, "create_registration_token", "", nil)
	}
	return t, err
}

// UpdateRegistrationToken changes a token's limits.
func (s *Service) UpdateRegistrationToken(ctx context.Context, actor, token string, u users.TokenUpdate) (*users.RegToken, error) {
	t, err := s.users.UpdateRegistrationToken(ctx, token, u)
	if err == nil {
		s.Audit(actor, "update_registration_token", "", nil)
	}
	return t, err
}

// DeleteRegistrationToken deletes a token.
func (s *Service) DeleteRegistrationToken(ctx context.Context, actor, token string) error {
	err := s.users.DeleteRegistrationToken(ctx, token)
	if err == nil {
		s.Audit(actor, "delete_registration_token", "", nil)
	}
	return err
}
