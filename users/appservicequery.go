package users

import "context"

// SetUnknownUserQuery installs f, asked about a local user that does not
// exist when a profile is read or the user is invited: the application
// service whose namespace holds the user may create it then (true), and
// the lookup is made again.
// https://spec.matrix.org/v1.19/application-service-api/#get_matrixappv1usersuserid
func (s *Service) SetUnknownUserQuery(f func(ctx context.Context, userID string) (bool, error)) {
	s.askUnknown = f
}

// queryUnknown asks about an unknown local user; true if it may exist now.
func (s *Service) queryUnknown(ctx context.Context, userID string) bool {
	if s.askUnknown == nil {
		return false
	}
	ok, err := s.askUnknown(ctx, userID)
	return err == nil && ok
}
