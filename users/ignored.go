package users

import (
	"context"
	"encoding/json"
	"strings"
	"sync"
	"sync/atomic"
)

// Ignoring users: a user's m.ignored_user_list account data names users
// whose events (except state events) and invites they do not want. Sync
// and push read the list on every response and every event, so it is
// cached; a change to the list drops the user's entry once it commits.
// https://spec.matrix.org/v1.19/client-server-api/#ignoring-users

// TypeIgnoredUserList is the account data type of the ignore list.
const TypeIgnoredUserList = "m.ignored_user_list"

type ignoreCache struct {
	gen atomic.Uint64
	mu  sync.Mutex
	m   map[string]ignoreEntry
}

type ignoreEntry struct {
	gen   uint64
	users map[string]bool
}

// maxIgnoreEntries bounds the cache; when full it starts again empty.
const maxIgnoreEntries = 50000

// IgnoredUsers returns the set of users the user ignores (nil when none).
// The caller must not change it.
func (s *Service) IgnoredUsers(ctx context.Context, userID string) (map[string]bool, error) {
	c := &s.ignored
	c.mu.Lock()
	e, ok := c.m[userID]
	c.mu.Unlock()
	gen := c.gen.Load()
	if ok && e.gen == gen {
		return e.users, nil
	}
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
	c.mu.Lock()
	if gen == c.gen.Load() {
		if c.m == nil || len(c.m) >= maxIgnoreEntries {
			c.m = map[string]ignoreEntry{}
		}
		c.m[userID] = ignoreEntry{gen: gen, users: set}
	}
	c.mu.Unlock()
	return set, nil
}

// invalidate drops every cached list: called after a commit that changed
// someone's ignore list (rare next to reads).
func (c *ignoreCache) invalidate() {
	c.gen.Add(1)
	c.mu.Lock()
	c.m = nil
	c.mu.Unlock()
}
