package users

import (
	"context"
	"encoding/json"
	"strings"
)

// Ignoring users: a user's m.ignored_user_list account data names users
// whose events (except state events) and invites they do not want. Sync
// and push read the list on every response and every event, so it is
// cached; a change to the list drops the user's entry once it commits.
// https://spec.matrix.org/v1.19/client-server-api/#ignoring-users

// TypeIgnoredUserList is the account data type of the ignore list.
const TypeIgnoredUserList = "m.ignored_user_list"

// IgnoredUsers returns the set of users the user ignores (nil when none).
// The caller must not change it.
func (s *Service) IgnoredUsers(ctx context.Context, userID string) (map[string]bool, error) {
	if set, ok := s.ignored.Get(userID); ok {
		return set, nil
	}
	gen := s.ignored.Generation()
	raw, err := getAccountData(ctx, s.db, userID, "", TypeIgnoredUserList)
	if err != nil {
		return nil, err
	}
	var content struct {
		IgnoredUsers map[string]json.RawMessage `json:"ignored_users"`
	}
	var set map[string]bool
	if raw != nil && json.Unmarshal(raw, &content) == nil {
		for u := range content.IgnoredUsers {
			if strings.HasPrefix(u, "@") && u != userID {
				if set == nil {
					set = map[string]bool{}
				}
				set[u] = true
			}
		}
	}
	s.ignored.Put(userID, gen, set)
	return set, nil
}
