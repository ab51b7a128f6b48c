package roomserver

import "context"

// AliasQuery asks the application services about an unknown local alias:
// true when one has created it.
// https://spec.matrix.org/v1.19/application-service-api/#get_matrixappv1roomsroomalias
type AliasQuery func(ctx context.Context, alias string) (bool, error)

// SetAliasQuery makes ResolveAlias ask the application services about
// unknown local aliases, and look again after a yes. Set it before the
// server serves.
func (s *Service) SetAliasQuery(q AliasQuery) { s.aliasQuery = q }

func (s *Service) queryAlias(ctx context.Context, alias string) bool {
	if s.aliasQuery == nil || !s.isLocal(alias) {
		return false
	}
	ok, err := s.aliasQuery(ctx, alias)
	return err == nil && ok
}
