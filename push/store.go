package push

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"strings"

	"github.com/tessera-hs/tessera/internal/database"
	"github.com/tessera-hs/tessera/internal/httpx"
	"github.com/tessera-hs/tessera/internal/mxerr"
)

// Changes to push rules. Each one commits, drops the cached ruleset and
// rewrites the m.push_rules account data, which wakes the user's syncs.
// https://spec.matrix.org/v1.19/client-server-api/#push-rules-api

// PutRule adds or replaces a user-defined rule (PUT
// /pushrules/global/{kind}/{ruleId}). body is the request body; before and
// after are the query parameters ("" when absent). If both are given,
// before wins, as the spec says.
// https://spec.matrix.org/v1.19/client-server-api/#put_matrixclientv3pushrulesglobalkindruleid
func (s *Service) PutRule(ctx context.Context, userID, kind, ruleID string, body []byte, before, after string) error {
	if err := checkKind(kind); err != nil {
		return err
	}
	if isDefaultID(ruleID) {
		return mxerr.InvalidParam("Rule IDs starting with '.' are reserved for server-default rules")
	}
	if ruleID == "" || strings.ContainsAny(ruleID, `/\`) {
		return mxerr.InvalidParam("A rule ID must not be empty or contain '/' or '\\'")
	}
	var b map[string]json.RawMessage
	if err := httpx.Unmarshal(body, &b); err != nil {
		return err
	}
	actions, err := parseActions(b["actions"])
	if err != nil {
		return err
	}
	jr := jsonRule{Actions: actions}
	switch kind {
	case KindOverride, KindPostContent, KindUnderride:
		if jr.Conditions, err = parseConditions(b["conditions"]); err != nil {
			return err
		}
	case KindContent:
		raw, ok := b["pattern"]
		if !ok || string(raw) == "null" {
			return mxerr.MissingParam("Content rules must have a 'pattern'")
		}
		var p string
		if json.Unmarshal(raw, &p) != nil {
			return mxerr.BadJSON("'pattern' must be a string")
		}
		jr.Pattern = &p
	}
	ruleJSON, err := json.Marshal(jr)
	if err != nil {
		return err
	}
	anchor, place := before, 0
	if anchor == "" && after != "" {
		anchor, place = after, 1
	}
	if anchor != "" && isDefaultID(anchor) {
		return mxerr.Unknown(400, "Cannot add a rule relative to a server-default rule: %s", anchor)
	}

	s.writeMu.Lock()
	defer s.writeMu.Unlock()
	err = s.db.WithTx(ctx, func(tx *database.Tx) error {
		ids, enabled, err := userRuleOrder(ctx, tx, userID, kind)
		if err != nil {
			return err
		}
		pos, isEnabled := -1, true
		for i, id := range ids {
			if id == ruleID {
				pos, isEnabled = i, enabled[i]
				ids = append(ids[:i:i], ids[i+1:]...)
				break
			}
		}
		switch {
		case anchor != "":
			at := -1
			for i, id := range ids {
				if id == anchor {
					at = i
				}
			}
			if at < 0 {
				return mxerr.Unknown(400, "before/after rule not found: %s", anchor)
			}
			pos = at + place
		case pos < 0:
			pos = 0 // a new rule is the most important of its kind
		}
		ids = append(ids[:pos:pos], append([]string{ruleID}, ids[pos:]...)...)
		// An updated rule keeps its enabled state; a new one is enabled
		// ("When creating push rules, they MUST be enabled by default").
		if _, err := tx.ExecContext(ctx, `INSERT INTO push_rules (user_id, kind, rule_id, position, rule_json, enabled)
			VALUES ($1, $2, $3, $4, $5, $6)
			ON CONFLICT (user_id, kind, rule_id) DO UPDATE SET rule_json = excluded.rule_json`,
			userID, kind, ruleID, pos, string(ruleJSON), isEnabled); err != nil {
			return err
		}
		for i, id := range ids {
			if _, err := tx.ExecContext(ctx, `UPDATE push_rules SET position = $1
				WHERE user_id = $2 AND kind = $3 AND rule_id = $4`, i, userID, kind, id); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	return s.changed(ctx, userID)
}

// userRuleOrder lists the IDs of a user's rules of one kind, most
// important first, with whether each is enabled.
func userRuleOrder(ctx context.Context, q database.Querier, userID, kind string) ([]string, []bool, error) {
	rows, err := q.QueryContext(ctx, `SELECT rule_id, enabled FROM push_rules WHERE user_id = $1 AND kind = $2
		ORDER BY position, rule_id`, userID, kind)
	if err != nil {
		return nil, nil, err
	}
	defer rows.Close()
	var ids []string
	var enabled []bool
	for rows.Next() {
		var id string
		var e bool
		if err := rows.Scan(&id, &e); err != nil {
			return nil, nil, err
		}
		ids, enabled = append(ids, id), append(enabled, e)
	}
	return ids, enabled, rows.Err()
}

// DeleteRule removes a user-defined rule. Server-default rules cannot be
// deleted (400 M_INVALID_PARAM); a missing rule is 404 M_NOT_FOUND.
// https://spec.matrix.org/v1.19/client-server-api/#delete_matrixclientv3pushrulesglobalkindruleid
func (s *Service) DeleteRule(ctx context.Context, userID, kind, ruleID string) error {
	if err := checkKind(kind); err != nil {
		return err
	}
	if isDefaultID(ruleID) {
		if findDefault(userID, kind, ruleID) == nil {
			return errRuleNotFound()
		}
		return mxerr.InvalidParam("Server-default rules cannot be deleted; disable them instead")
	}
	s.writeMu.Lock()
	defer s.writeMu.Unlock()
	res, err := s.db.ExecContext(ctx, `DELETE FROM push_rules WHERE user_id = $1 AND kind = $2 AND rule_id = $3`,
		userID, kind, ruleID)
	if err != nil {
		return err
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return errRuleNotFound()
	}
	return s.changed(ctx, userID)
}

// findDefault returns the server-default rule of that kind and ID, or nil.
func findDefault(userID, kind, ruleID string) *Rule {
	for _, r := range DefaultRules(userID)[kind] {
		if r.RuleID == ruleID {
			return r
		}
	}
	return nil
}

// SetEnabled enables or disables a rule, user-defined or server-default,
// from the body {"enabled": bool}.
// https://spec.matrix.org/v1.19/client-server-api/#put_matrixclientv3pushrulesglobalkindruleidenabled
func (s *Service) SetEnabled(ctx context.Context, userID, kind, ruleID string, body []byte) error {
	if err := checkKind(kind); err != nil {
		return err
	}
	var b map[string]json.RawMessage
	if err := httpx.Unmarshal(body, &b); err != nil {
		return err
	}
	raw, ok := b["enabled"]
	if !ok {
		return mxerr.MissingParam("Missing 'enabled'")
	}
	var enabled bool
	if json.Unmarshal(raw, &enabled) != nil || string(raw) == "null" {
		return mxerr.BadJSON("'enabled' must be a boolean")
	}
	return s.update(ctx, userID, kind, ruleID,
		`INSERT INTO push_rule_defaults (user_id, kind, rule_id, enabled) VALUES ($1, $2, $3, $4)
		ON CONFLICT (user_id, kind, rule_id) DO UPDATE SET enabled = excluded.enabled`,
		func(tx *database.Tx) (bool, error) {
			res, err := tx.ExecContext(ctx, `UPDATE push_rules SET enabled = $1 WHERE user_id = $2 AND kind = $3 AND rule_id = $4`,
				enabled, userID, kind, ruleID)
			if err != nil {
				return false, err
			}
			n, err := res.RowsAffected()
			return n > 0, err
		}, enabled)
}

// SetActions replaces a rule's actions, user-defined or server-default,
// from the body {"actions": [...]}.
// https://spec.matrix.org/v1.19/client-server-api/#put_matrixclientv3pushrulesglobalkindruleidactions
func (s *Service) SetActions(ctx context.Context, userID, kind, ruleID string, body []byte) error {
	if err := checkKind(kind); err != nil {
		return err
	}
	var b map[string]json.RawMessage
	if err := httpx.Unmarshal(body, &b); err != nil {
		return err
	}
	actions, err := parseActions(b["actions"])
	if err != nil {
		return err
	}
	actionsJSON, err := json.Marshal(actions)
	if err != nil {
		return err
	}
	return s.update(ctx, userID, kind, ruleID,
		`INSERT INTO push_rule_defaults (user_id, kind, rule_id, actions) VALUES ($1, $2, $3, $4)
		ON CONFLICT (user_id, kind, rule_id) DO UPDATE SET actions = excluded.actions`,
		func(tx *database.Tx) (bool, error) {
			var raw string
			err := tx.QueryRowContext(ctx, `SELECT rule_json FROM push_rules WHERE user_id = $1 AND kind = $2 AND rule_id = $3`,
				userID, kind, ruleID).Scan(&raw)
			if errors.Is(err, sql.ErrNoRows) {
				return false, nil
			}
			if err != nil {
				return false, err
			}
			var jr jsonRule
			if err := json.Unmarshal([]byte(raw), &jr); err != nil {
				return false, err
			}
			jr.Actions = actions
			updated, err := json.Marshal(jr)
			if err != nil {
				return false, err
			}
			_, err = tx.ExecContext(ctx, `UPDATE push_rules SET rule_json = $1 WHERE user_id = $2 AND kind = $3 AND rule_id = $4`,
				string(updated), userID, kind, ruleID)
			return true, err
		}, string(actionsJSON))
}

// update changes one property of a rule: for a server-default rule by
// upserting defaultSQL ($1 user, $2 kind, $3 rule, $4 value) into the
// user's changes to defaults, for a user rule with userUpdate, which reports whether the rule exists. A rule that
// does not exist is 404 M_NOT_FOUND.
func (s *Service) update(ctx context.Context, userID, kind, ruleID, defaultSQL string,
	userUpdate func(tx *database.Tx) (bool, error), value any) error {
	s.writeMu.Lock()
	defer s.writeMu.Unlock()
	if isDefaultID(ruleID) {
		if findDefault(userID, kind, ruleID) == nil {
			return errRuleNotFound()
		}
		if _, err := s.db.ExecContext(ctx, defaultSQL, userID, kind, ruleID, value); err != nil {
			return err
		}
		return s.changed(ctx, userID)
	}
	err := s.db.WithTx(ctx, func(tx *database.Tx) error {
		found, err := userUpdate(tx)
		if err != nil {
			return err
		}
		if !found {
			return errRuleNotFound()
		}
		return nil
	})
	if err != nil {
		return err
	}
	return s.changed(ctx, userID)
}

// changed follows a committed change: the cached ruleset goes and the
// account data is rewritten. The caller holds writeMu.
func (s *Service) changed(ctx context.Context, userID string) error {
	s.invalidate(userID)
	if s.rulesChanged != nil {
		s.rulesChanged(userID)
	}
	return s.writeAccountData(ctx, userID, true)
}
