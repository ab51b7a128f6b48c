package roomserver

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"regexp"
	"strings"
	"sync"

	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/tessera-hs/tessera/internal/mxerr"
)

// serverACL is a room's m.room.server_acl, compiled.
// https://spec.matrix.org/v1.19/client-server-api/#mroomserver_acl
type serverACL struct {
	allowIPLiterals bool
	allow, deny     []*regexp.Regexp
}

// aclCache keeps compiled ACLs by the ID of their event (an event never
// changes, so entries never go stale).
type aclCache struct {
	mu sync.Mutex
	m  map[string]*serverACL
}

const maxACLCache = 1024

func compileACL(content []byte) *serverACL {
	var c struct {
		Allow           []any `json:"allow"`
		Deny            []any `json:"deny"`
		AllowIPLiterals any   `json:"allow_ip_literals"`
	}
	acl := &serverACL{allowIPLiterals: true}
	if json.Unmarshal(content, &c) != nil {
		return acl // unreadable: no entries, so everything is denied
	}
	if b, ok := c.AllowIPLiterals.(bool); ok {
		acl.allowIPLiterals = b
	}
	globs := func(in []any) []*regexp.Regexp {
		var out []*regexp.Regexp
		for _, g := range in {
			if s, ok := g.(string); ok {
				out = append(out, globRegexp(s))
			}
		}
		return out
	}
	acl.allow, acl.deny = globs(c.Allow), globs(c.Deny)
	return acl
}

// globRegexp compiles a glob ('*' any run, '?' one character), matched
// without regard to case as host names are.
// https://spec.matrix.org/v1.19/appendices/#glob-style-matching
func globRegexp(g string) *regexp.Regexp {
	var b strings.Builder
	b.WriteString("(?i)^")
	for _, r := range g {
		switch r {
		case '*':
			b.WriteString(".*")
		case '?':
			b.WriteString(".")
		default:
			b.WriteString(regexp.QuoteMeta(string(r)))
		}
	}
	b.WriteString("$")
	return regexp.MustCompile(b.String())
}

// allows applies the spec's order: IP literals, deny, allow, else deny.
// The port is not part of the comparison.
func (a *serverACL) allows(server spec.ServerName) bool {
	host := string(server)
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	host = strings.TrimSuffix(strings.TrimPrefix(host, "["), "]")
	if !a.allowIPLiterals && net.ParseIP(host) != nil {
		return false
	}
	for _, re := range a.deny {
		if re.MatchString(host) {
			return false
		}
	}
	for _, re := range a.allow {
		if re.MatchString(host) {
			return true
		}
	}
	return false
}

// CheckServerACL refuses (403 M_FORBIDDEN) a server the room's server ACL
// denies; a room without one, or unknown here, allows every server.
func (s *Service) CheckServerACL(ctx context.Context, roomID string, server spec.ServerName) error {
	var id string
	err := s.db.QueryRowContext(ctx, `SELECT event_id FROM current_state WHERE room_id = $1 AND type = 'm.room.server_acl' AND state_key = ''`,
		roomID).Scan(&id)
	if isNoRows(err) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("server ACL: %w", err)
	}
	s.acls.mu.Lock()
	acl := s.acls.m[id]
	s.acls.mu.Unlock()
	if acl == nil {
		ev, err := s.event(ctx, id)
		if err != nil {
			return err
		}
		acl = compileACL(ev.Content())
		s.acls.mu.Lock()
		if s.acls.m == nil || len(s.acls.m) >= maxACLCache {
			s.acls.m = map[string]*serverACL{}
		}
		s.acls.m[id] = acl
		s.acls.mu.Unlock()
	}
	if !acl.allows(server) {
		return mxerr.Forbidden("Server %s is denied by the room's server ACL", server)
	}
	return nil
}
