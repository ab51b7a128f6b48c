package users

import (
	"context"
	"encoding/json"
	"fmt"
	"sort"
	"strings"
	"unicode"

	"github.com/tessera-hs/tessera/internal/mxerr"
)

// The user directory: finding users by user ID or display name.
// https://spec.matrix.org/v1.19/client-server-api/#user-directory

// DirectoryRooms is what the user directory needs from the room server;
// *roomserver.Service satisfies it.
type DirectoryRooms interface {
	// VisibleUsers lists the users searcher may find: those sharing a
	// room with them and the members of public or world-readable rooms.
	VisibleUsers(ctx context.Context, searcher string) ([]string, error)
}

// DirectorySearch is the body of POST /user_directory/search.
type DirectorySearch struct {
	SearchTerm *string `json:"search_term"`
	Limit      *int    `json:"limit"`
}

// DirectoryUser is one search result.
type DirectoryUser struct {
	UserID      string `json:"user_id"`
	DisplayName string `json:"display_name,omitempty"`
	AvatarURL   string `json:"avatar_url,omitempty"`
}

// DirectoryResults is the search response.
type DirectoryResults struct {
	Results []DirectoryUser `json:"results"`
	Limited bool            `json:"limited"`
}

// The spec's default limit, and Synapse's cap on it (a client asking for
// more gets 50 and limited: true).
const (
	defaultDirectoryLimit = 10
	maxDirectoryLimit     = 50
)

// SearchUserDirectory finds the users searcher may see (rooms.VisibleUsers)
// whose user ID or display name matches the search term. Like Synapse's
// full-text search, the term is split into words and every word must be
// the start of a word of the user ID or display name, ignoring case:
// "ali smi" finds "Alice Smith" and "@alice.smith:example.org". Deactivated
// accounts are never found.
//
// Results are ranked: an exact match of the whole display name, user ID or
// localpart first, then more whole-word matches, then (as the spec orders
// them) users with profile information first, then by user ID.
// https://spec.matrix.org/v1.19/client-server-api/#post_matrixclientv3user_directorysearch
func (s *Service) SearchUserDirectory(ctx context.Context, rooms DirectoryRooms, searcher string, req DirectorySearch) (*DirectoryResults, error) {
	if req.SearchTerm == nil {
		return nil, mxerr.MissingParam("search_term is required")
	}
	limit := defaultDirectoryLimit
	if req.Limit != nil {
		limit = *req.Limit
	}
	if limit < 0 {
		return nil, mxerr.InvalidParam("limit must not be negative")
	}
	limit = min(limit, maxDirectoryLimit)
	res := &DirectoryResults{Results: []DirectoryUser{}}
	term := strings.ToLower(strings.TrimSpace(*req.SearchTerm))
	termWords := searchWords(term)
	if len(termWords) == 0 {
		return res, nil
	}

	candidates, err := rooms.VisibleUsers(ctx, searcher)
	if err != nil {
		return nil, err
	}
	profiles, err := s.directoryProfiles(ctx, candidates)
	if err != nil {
		return nil, err
	}

	type hit struct {
		user       DirectoryUser
		exact      bool
		wholeWords int
	}
	var hits []hit
	for _, u := range profiles {
		idWords := searchWords(u.UserID)
		nameWords := searchWords(u.DisplayName)
		whole := 0
		matched := true
		for _, tw := range termWords {
			w := matchWord(tw, idWords)
			if n := matchWord(tw, nameWords); n > w {
				w = n
			}
			if w == 0 {
				matched = false
				break
			}
			if w == 2 {
				whole++
			}
		}
		if !matched {
			continue
		}
		localpart, _, _ := strings.Cut(strings.TrimPrefix(u.UserID, "@"), ":")
		exact := term == strings.ToLower(u.DisplayName) || term == strings.ToLower(u.UserID) ||
			term == strings.ToLower(localpart)
		hits = append(hits, hit{u, exact, whole})
	}
	sort.Slice(hits, func(i, j int) bool {
		a, b := hits[i], hits[j]
		switch {
		case a.exact != b.exact:
			return a.exact
		case a.wholeWords != b.wholeWords:
			return a.wholeWords > b.wholeWords
		case (a.user.DisplayName != "") != (b.user.DisplayName != ""):
			return a.user.DisplayName != ""
		case (a.user.AvatarURL != "") != (b.user.AvatarURL != ""):
			return a.user.AvatarURL != ""
		}
		return a.user.UserID < b.user.UserID
	})
	for i, h := range hits {
		if i == limit {
			res.Limited = true
			break
		}
		res.Results = append(res.Results, h.user)
	}
	return res, nil
}

// searchWords splits s into lowercase words of letters and digits, the way
// the search term and the searched fields are compared.
func searchWords(s string) []string {
	return strings.FieldsFunc(strings.ToLower(s), func(r rune) bool {
		return !unicode.IsLetter(r) && !unicode.IsDigit(r)
	})
}

// matchWord reports how term matches words: 2 if it is one of them, 1 if
// it starts one of them, 0 if neither.
func matchWord(term string, words []string) int {
	best := 0
	for _, w := range words {
		if w == term {
			return 2
		}
		if strings.HasPrefix(w, term) {
			best = 1
		}
	}
	return best
}

// directoryProfiles looks up the public profile (global display name and
// avatar) of each candidate. Deactivated accounts are dropped, and so are
// local user IDs without an account. Users of other servers have no
// profile here and are searched by user ID only.
func (s *Service) directoryProfiles(ctx context.Context, userIDs []string) ([]DirectoryUser, error) {
	type account struct {
		deactivated bool
		user        DirectoryUser
	}
	found := map[string]*account{}
	for start := 0; start < len(userIDs); start += maxInArgs {
		chunk := userIDs[start:min(start+maxInArgs, len(userIDs))]
		args := make([]any, len(chunk))
		ph := make([]string, len(chunk))
		for i, id := range chunk {
			args[i] = id
			ph[i] = fmt.Sprintf("$%d", i+1)
		}
		rows, err := s.db.QueryContext(ctx, `SELECT a.user_id, a.deactivated, p.field, p.value_json FROM accounts a
			LEFT JOIN profile_fields p ON p.user_id = a.user_id AND p.field IN ('displayname', 'avatar_url')
			WHERE a.user_id IN (`+strings.Join(ph, ",")+`)`, args...)
		if err != nil {
			return nil, fmt.Errorf("directory profiles: %w", err)
		}
		for rows.Next() {
			var id string
			var deactivated bool
			var field, value *string
			if err := rows.Scan(&id, &deactivated, &field, &value); err != nil {
				rows.Close()
				return nil, fmt.Errorf("directory profiles: %w", err)
			}
			a := found[id]
			if a == nil {
				a = &account{deactivated: deactivated, user: DirectoryUser{UserID: id}}
				found[id] = a
			}
			if field == nil || value == nil {
				continue
			}
			var str string
			if json.Unmarshal([]byte(*value), &str) != nil {
				continue
			}
			switch *field {
			case "displayname":
				a.user.DisplayName = str
			case "avatar_url":
				a.user.AvatarURL = str
			}
		}
		if err := rows.Close(); err != nil {
			return nil, err
		}
	}
	local := ":" + string(s.cfg.ServerName)
	out := make([]DirectoryUser, 0, len(userIDs))
	for _, id := range userIDs {
		a, ok := found[id]
		switch {
		case ok && !a.deactivated:
			out = append(out, a.user)
		case !ok && !strings.HasSuffix(id, local):
			out = append(out, DirectoryUser{UserID: id})
		}
	}
	return out, nil
}
