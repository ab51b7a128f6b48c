package appservice

import (
	"context"
	"net/http"
	"net/url"
	"time"
)

// User and room alias queries: when a client touches a user or an alias
// the server does not know, in a service's namespace, the service is
// asked; it may create it (register the user, create the room) and say so
// with a 200, and the server looks again.
// https://spec.matrix.org/v1.19/application-service-api/#querying

// queryTimeout bounds one query: a client is waiting.
const queryTimeout = 10 * time.Second

// QueryUser asks the services whose user namespaces hold userID whether
// it exists; true when one answered 200 (it has created the user).
func (s *Service) QueryUser(ctx context.Context, userID string) (bool, error) {
	if s == nil {
		return false, nil
	}
	for _, r := range s.set.All() {
		if r.URL == nil || *r.URL == "" || !matchAny(r.Namespaces.Users, userID, false) {
			continue
		}
		if s.query(ctx, r, "/_matrix/app/v1/users/"+url.PathEscape(userID)) {
			return true, nil
		}
	}
	return false, nil
}

// QueryAlias is QueryUser for room aliases: true when a service answered
// 200 (it has created a room with the alias).
func (s *Service) QueryAlias(ctx context.Context, alias string) (bool, error) {
	if s == nil {
		return false, nil
	}
	for _, r := range s.set.All() {
		if r.URL == nil || *r.URL == "" || !r.InterestedInAlias(alias) {
			continue
		}
		if s.query(ctx, r, "/_matrix/app/v1/rooms/"+url.PathEscape(alias)) {
			return true, nil
		}
	}
	return false, nil
}

func (s *Service) query(ctx context.Context, r *Registration, path string) bool {
	ctx, cancel := context.WithTimeout(ctx, queryTimeout)
	defer cancel()
	status, _, err := s.client.Do(ctx, r, http.MethodGet, path, nil, nil)
	if err != nil {
		s.log.WithError(err).WithField("appservice", r.ID).Warn("appservice: query failed")
		return false
	}
	return status == http.StatusOK
}
