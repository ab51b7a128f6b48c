// Package appservice is the Application Service API: bridges and bots
// registered with the server by a registration file, which act as users
// in their namespaces and receive the events they are interested in.
// https://spec.matrix.org/v1.19/application-service-api/
package appservice

import (
	"bytes"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"regexp"
	"regexp/syntax"
	"strings"

	"gopkg.in/yaml.v3"

	"github.com/tessera-hs/tessera/internal/mxerr"
)

// Registration is one application service's registration file, in the
// standard YAML format Synapse and the bridges use.
// https://spec.matrix.org/v1.19/application-service-api/#registration
type Registration struct {
	// Path is the file the registration was read from.
	Path string `yaml:"-"`

	ID string `yaml:"id"`
	// URL is where the server pushes transactions; nil (null in the
	// file) for a service that only uses the client API.
	URL             *string    `yaml:"url"`
	ASToken         string     `yaml:"as_token"`
	HSToken         string     `yaml:"hs_token"`
	SenderLocalpart string     `yaml:"sender_localpart"`
	Namespaces      Namespaces `yaml:"namespaces"`
	// RateLimited: nil means true.
	RateLimited *bool    `yaml:"rate_limited"`
	Protocols   []string `yaml:"protocols"`
	// ReceiveEphemeral asks for typing, receipts and presence (MSC2409),
	// under either name.
	ReceiveEphemeral         bool `yaml:"receive_ephemeral"`
	ReceiveEphemeralUnstable bool `yaml:"de.sorunome.msc2409.push_ephemeral"`
	// MSC3202 asks for device list changes and one-time key counts of
	// the service's users, and their to-device messages: what
	// end-to-bridge encryption needs.
	MSC3202 bool `yaml:"org.matrix.msc3202"`
	// MSC4190 lets the service manage its users' devices without login.
	MSC4190 bool `yaml:"io.element.msc4190"`

	// A bridge's registration often carries keys of its own; they are
	// accepted (not refused as unknown).
	Extra map[string]any `yaml:",inline"`
}

// Namespaces are the users, room aliases and room IDs a service is
// interested in.
type Namespaces struct {
	Users   []Namespace `yaml:"users"`
	Aliases []Namespace `yaml:"aliases"`
	Rooms   []Namespace `yaml:"rooms"`
}

// Namespace is one regular expression; exclusive reserves what it matches
// to the service.
type Namespace struct {
	Exclusive bool   `yaml:"exclusive"`
	Regex     string `yaml:"regex"`
	re        *regexp.Regexp
}

// match reports whether the whole of s matches the namespace (Synapse
// anchors at the start and lets the pattern end where it says; the
// bridges write patterns like "@_telegram_.*:example.org").
func (n *Namespace) match(s string) bool { return n.re.MatchString(s) }

// Ephemeral reports whether the service asked for ephemeral events.
func (r *Registration) Ephemeral() bool { return r.ReceiveEphemeral || r.ReceiveEphemeralUnstable }

// IsRateLimited reports whether the service's requests are rate limited.
func (r *Registration) IsRateLimited() bool { return r.RateLimited == nil || *r.RateLimited }

// SenderUserID is the service's own user.
func (r *Registration) SenderUserID(serverName string) string {
	return "@" + r.SenderLocalpart + ":" + serverName
}

func matchAny(ns []Namespace, s string, exclusiveOnly bool) bool {
	for i := range ns {
		if (!exclusiveOnly || ns[i].Exclusive) && ns[i].match(s) {
			return true
		}
	}
	return false
}

// InterestedInUser reports whether the user is in the service's user
// namespaces (or is its sender).
func (r *Registration) InterestedInUser(userID, serverName string) bool {
	return userID == r.SenderUserID(serverName) || matchAny(r.Namespaces.Users, userID, false)
}

// OwnsUser reports whether the service may act as the user: its sender or
// a user in its user namespaces.
func (r *Registration) OwnsUser(userID, serverName string) bool {
	return r.InterestedInUser(userID, serverName)
}

// ExclusiveUser reports whether an exclusive namespace reserves the user.
func (r *Registration) ExclusiveUser(userID string) bool {
	return matchAny(r.Namespaces.Users, userID, true)
}

// InterestedInAlias and ExclusiveAlias are the same for room aliases.
func (r *Registration) InterestedInAlias(alias string) bool {
	return matchAny(r.Namespaces.Aliases, alias, false)
}

func (r *Registration) ExclusiveAlias(alias string) bool {
	return matchAny(r.Namespaces.Aliases, alias, true)
}

// InterestedInRoom reports whether a room ID is in the rooms namespaces.
func (r *Registration) InterestedInRoom(roomID string) bool {
	return matchAny(r.Namespaces.Rooms, roomID, false)
}

// Set is the registered services.
type Set struct {
	serverName string
	regs       []*Registration
	// byToken maps the SHA-256 of each as_token to its service; the
	// token itself is then compared in constant time.
	byToken map[[32]byte]*Registration
}

// NewSet checks the registrations together: distinct IDs, tokens and
// sender users, and exclusive namespaces that do not overlap.
func NewSet(serverName string, regs []*Registration) (*Set, error) {
	s := &Set{serverName: serverName, regs: regs, byToken: map[[32]byte]*Registration{}}
	ids, hsTokens, senders := map[string]string{}, map[string]string{}, map[string]string{}
	for _, r := range regs {
		if other, ok := ids[r.ID]; ok {
			return nil, fmt.Errorf("application service %s: id: %q is also the id of %s", r.Path, r.ID, other)
		}
		ids[r.ID] = r.Path
		h := sha256.Sum256([]byte(r.ASToken))
		if other, ok := s.byToken[h]; ok {
			return nil, fmt.Errorf("application service %s: as_token: the same token as %s", r.Path, other.Path)
		}
		s.byToken[h] = r
		if other, ok := hsTokens[r.HSToken]; ok {
			return nil, fmt.Errorf("application service %s: hs_token: the same token as %s", r.Path, other)
		}
		hsTokens[r.HSToken] = r.Path
		if r.HSToken == r.ASToken {
			return nil, fmt.Errorf("application service %s: hs_token: must differ from as_token", r.Path)
		}
		sender := r.SenderUserID(serverName)
		if other, ok := senders[sender]; ok {
			return nil, fmt.Errorf("application service %s: sender_localpart: %q is also the sender of %s", r.Path, r.SenderLocalpart, other)
		}
		senders[sender] = r.Path
	}
	for i, a := range regs {
		for _, b := range regs[i+1:] {
			for _, kind := range []struct {
				name string
				a, b []Namespace
			}{{"users", a.Namespaces.Users, b.Namespaces.Users}, {"aliases", a.Namespaces.Aliases, b.Namespaces.Aliases},
				{"rooms", a.Namespaces.Rooms, b.Namespaces.Rooms}} {
				if x, y, ok := overlap(kind.a, kind.b); ok {
					return nil, fmt.Errorf("application service %s: namespaces.%s: exclusive regex %q overlaps %q of %s",
						b.Path, kind.name, y, x, a.Path)
				}
			}
			// One service's sender must not sit in another's exclusive
			// user namespace.
			for _, pair := range [][2]*Registration{{a, b}, {b, a}} {
				if pair[0].ExclusiveUser(pair[1].SenderUserID(serverName)) {
					return nil, fmt.Errorf("application service %s: sender_localpart: %s is in an exclusive user namespace of %s",
						pair[1].Path, pair[1].SenderUserID(serverName), pair[0].Path)
				}
			}
		}
	}
	return s, nil
}

// All lists the services.
func (s *Set) All() []*Registration {
	if s == nil {
		return nil
	}
	return s.regs
}

// ByASToken finds the service an access token is the as_token of.
func (s *Set) ByASToken(token string) *Registration {
	if s == nil {
		return nil
	}
	r := s.byToken[sha256.Sum256([]byte(token))]
	if r == nil || subtle.ConstantTimeCompare([]byte(r.ASToken), []byte(token)) != 1 {
		return nil
	}
	return r
}

// ByID finds a service by its id.
func (s *Set) ByID(id string) *Registration {
	for _, r := range s.All() {
		if r.ID == id {
			return r
		}
	}
	return nil
}

// ExclusiveUserOwner is the service whose exclusive namespace (or sender)
// reserves the user, nil for none.
func (s *Set) ExclusiveUserOwner(userID string) *Registration {
	for _, r := range s.All() {
		if r.ExclusiveUser(userID) || userID == r.SenderUserID(s.serverName) {
			return r
		}
	}
	return nil
}

// ExclusiveAliasOwner is the same for room aliases.
func (s *Set) ExclusiveAliasOwner(alias string) *Registration {
	for _, r := range s.All() {
		if r.ExclusiveAlias(alias) {
			return r
		}
	}
	return nil
}

// ServerName is the server the services are registered with.
func (s *Set) ServerName() string { return s.serverName }

// LoadRegistrations reads registration files. An error names the file and
// the field, on one line.
func LoadRegistrations(paths []string) ([]*Registration, error) {
	out := make([]*Registration, 0, len(paths))
	for _, p := range paths {
		raw, err := os.ReadFile(p)
		if err != nil {
			return nil, fmt.Errorf("application service %s: %w", p, err)
		}
		r, err := ParseRegistration(raw)
		if err != nil {
			return nil, fmt.Errorf("application service %s: %w", p, err)
		}
		r.Path = p
		out = append(out, r)
	}
	return out, nil
}

// ParseRegistration reads and checks one registration file.
func ParseRegistration(raw []byte) (*Registration, error) {
	var r Registration
	dec := yaml.NewDecoder(bytes.NewReader(raw))
	if err := dec.Decode(&r); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, errors.New("the file is empty")
		}
		return nil, errors.New(strings.ReplaceAll(err.Error(), "\n", " "))
	}
	required := []struct{ field, v string }{
		{"id", r.ID}, {"as_token", r.ASToken}, {"hs_token", r.HSToken}, {"sender_localpart", r.SenderLocalpart},
	}
	for _, f := range required {
		if strings.TrimSpace(f.v) == "" {
			return nil, fmt.Errorf("%s: missing", f.field)
		}
	}
	if r.URL != nil && *r.URL != "" {
		u, err := url.Parse(*r.URL)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return nil, fmt.Errorf("url: %q is not an http(s) URL", *r.URL)
		}
	}
	if strings.ContainsAny(r.SenderLocalpart, ":@ ") || strings.ToLower(r.SenderLocalpart) != r.SenderLocalpart {
		return nil, fmt.Errorf("sender_localpart: %q is not a valid localpart", r.SenderLocalpart)
	}
	for _, kind := range []struct {
		name string
		ns   []Namespace
	}{{"users", r.Namespaces.Users}, {"aliases", r.Namespaces.Aliases}, {"rooms", r.Namespaces.Rooms}} {
		for i := range kind.ns {
			n := &kind.ns[i]
			if n.Regex == "" {
				return nil, fmt.Errorf("namespaces.%s[%d].regex: missing", kind.name, i)
			}
			// Anchored at the start, as Synapse matches.
			re, err := regexp.Compile(`^(?:` + n.Regex + `)`)
			if err != nil {
				return nil, fmt.Errorf("namespaces.%s[%d].regex: %q: %v", kind.name, i, n.Regex, err)
			}
			n.re = re
		}
	}
	return &r, nil
}

// overlap reports an exclusive namespace of a and one of b that can match
// the same string. Whether two regular expressions intersect is costly to
// decide in general; this tries a shortest string each matches against
// the other, which finds the overlaps of real registrations (the same
// pattern, or one prefix inside another's).
func overlap(a, b []Namespace) (string, string, bool) {
	for i := range a {
		if !a[i].Exclusive {
			continue
		}
		for j := range b {
			if !b[j].Exclusive {
				continue
			}
			if a[i].Regex == b[j].Regex {
				return a[i].Regex, b[j].Regex, true
			}
			for _, s := range samples(a[i].Regex) {
				if b[j].match(s) {
					return a[i].Regex, b[j].Regex, true
				}
			}
			for _, s := range samples(b[j].Regex) {
				if a[i].match(s) {
					return a[i].Regex, b[j].Regex, true
				}
			}
		}
	}
	return "", "", false
}

// samples are a few strings the regular expression matches: repetitions
// taken zero and one times, the first choice of each alternation and class.
func samples(expr string) []string {
	re, err := syntax.Parse(expr, syntax.Perl)
	if err != nil {
		return nil
	}
	re = re.Simplify()
	var out []string
	for _, once := range []bool{false, true} {
		var b strings.Builder
		sample(&b, re, once)
		out = append(out, b.String())
	}
	return out
}

func sample(b *strings.Builder, re *syntax.Regexp, once bool) {
	switch re.Op {
	case syntax.OpLiteral:
		b.WriteString(string(re.Rune))
	case syntax.OpCharClass:
		if len(re.Rune) > 0 {
			b.WriteRune(re.Rune[0])
		}
	case syntax.OpAnyChar, syntax.OpAnyCharNotNL:
		b.WriteByte('x')
	case syntax.OpCapture, syntax.OpPlus:
		for _, s := range re.Sub {
			sample(b, s, once)
		}
	case syntax.OpStar, syntax.OpQuest:
		if once {
			for _, s := range re.Sub {
				sample(b, s, once)
			}
		}
	case syntax.OpRepeat:
		n := re.Min
		if n == 0 && once {
			n = 1
		}
		for i := 0; i < n; i++ {
			for _, s := range re.Sub {
				sample(b, s, once)
			}
		}
	case syntax.OpConcat:
		for _, s := range re.Sub {
			sample(b, s, once)
		}
	case syntax.OpAlternate:
		if len(re.Sub) > 0 {
			sample(b, re.Sub[0], once)
		}
	}
}

// CheckNewAlias refuses a user a new alias in an application service's
// exclusive alias namespace, unless the user is that service's (its sender
// or in its user namespaces), as Synapse decides: 400 M_EXCLUSIVE.
// https://spec.matrix.org/v1.19/application-service-api/#server-admin-style-permissions
func (s *Set) CheckNewAlias(alias, userID string) error {
	owner := s.ExclusiveAliasOwner(alias)
	if owner == nil || owner.InterestedInUser(userID, s.serverName) {
		return nil
	}
	return &mxerr.Error{Status: http.StatusBadRequest, Code: "M_EXCLUSIVE",
		Message: fmt.Sprintf("Room alias %s is reserved by an application service", alias)}
}

// CheckOwnAlias refuses the service (acting by its as_token) a new alias
// outside its alias namespaces: 400 M_EXCLUSIVE, as the spec and Synapse
// answer.
// https://spec.matrix.org/v1.19/application-service-api/#server-admin-style-permissions
func (r *Registration) CheckOwnAlias(alias string) error {
	if r.InterestedInAlias(alias) {
		return nil
	}
	return &mxerr.Error{Status: http.StatusBadRequest, Code: "M_EXCLUSIVE",
		Message: fmt.Sprintf("Room alias %s is not in the application service's namespaces", alias)}
}
