package clientapi

import (
	"context"
	"net/http"
	"strconv"

	"github.com/tessera-hs/tessera/internal/httpx"
	"github.com/tessera-hs/tessera/internal/mxerr"
	"github.com/tessera-hs/tessera/push"
	"github.com/tessera-hs/tessera/users"
)

// Push notifications: push rules, the notifications list and pushers.
// https://spec.matrix.org/v1.19/client-server-api/#push-notifications
//
// None is open to guests (the spec's guest list has none of them, and
// Synapse refuses guests on each).

// SetPush installs the push domain; call it before Register.
func (a *API) SetPush(p *push.Service) { a.push = p }

// pushService returns the push domain, or 404 M_UNRECOGNIZED if none was
// installed.
func (a *API) pushService() (*push.Service, error) {
	if a.push == nil {
		return nil, mxerr.Unrecognized("Push notifications are not available")
	}
	return a.push, nil
}

func (a *API) pushRoutes() []route {
	const get, post, put, del = http.MethodGet, http.MethodPost, http.MethodPut, http.MethodDelete
	return []route{
		{get, "/pushrules/", a.authed(a.getPushRules, noGuests)},
		{get, "/pushrules", a.authed(a.getPushRules, noGuests)},
		{get, "/pushrules/global/", a.authed(a.getGlobalPushRules, noGuests)},
		{get, "/pushrules/global", a.authed(a.getGlobalPushRules, noGuests)},
		{get, "/pushrules/global/{kind}/{ruleId}", a.authed(a.getPushRule, noGuests)},
		{put, "/pushrules/global/{kind}/{ruleId}", a.authed(a.putPushRule, noGuests)},
		{del, "/pushrules/global/{kind}/{ruleId}", a.authed(a.deletePushRule, noGuests)},
		{get, "/pushrules/global/{kind}/{ruleId}/enabled", a.authed(a.getPushRuleEnabled, noGuests)},
		{put, "/pushrules/global/{kind}/{ruleId}/enabled", a.authed(a.putPushRuleEnabled, noGuests)},
		{get, "/pushrules/global/{kind}/{ruleId}/actions", a.authed(a.getPushRuleActions, noGuests)},
		{put, "/pushrules/global/{kind}/{ruleId}/actions", a.authed(a.putPushRuleActions, noGuests)},

		{get, "/notifications", a.authed(a.getNotifications, noGuests)},

		{get, "/pushers", a.authed(a.getPushers, noGuests)},
		{post, "/pushers/set", a.authed(a.setPusher, noGuests)},
	}
}

// getPushRules: GET /pushrules/.
// https://spec.matrix.org/v1.19/client-server-api/#get_matrixclientv3pushrules
func (a *API) getPushRules(r *http.Request, who *users.Requester) (any, error) {
	p, err := a.pushService()
	if err != nil {
		return nil, err
	}
	rs, err := p.Rules(r.Context(), who.UserID)
	if err != nil {
		return nil, err
	}
	return map[string]any{"global": rs}, nil
}

// getGlobalPushRules: GET /pushrules/global/.
// https://spec.matrix.org/v1.19/client-server-api/#get_matrixclientv3pushrulesglobal
func (a *API) getGlobalPushRules(r *http.Request, who *users.Requester) (any, error) {
	p, err := a.pushService()
	if err != nil {
		return nil, err
	}
	return p.Rules(r.Context(), who.UserID)
}

// pushRule reads the rule the path names.
func (a *API) pushRule(r *http.Request, who *users.Requester) (*push.Rule, error) {
	p, err := a.pushService()
	if err != nil {
		return nil, err
	}
	return p.Rule(r.Context(), who.UserID, pathVar(r, "kind"), pathVar(r, "ruleId"))
}

// getPushRule: GET /pushrules/global/{kind}/{ruleId}.
// https://spec.matrix.org/v1.19/client-server-api/#get_matrixclientv3pushrulesglobalkindruleid
func (a *API) getPushRule(r *http.Request, who *users.Requester) (any, error) {
	return a.pushRule(r, who)
}

// putPushRule: PUT /pushrules/global/{kind}/{ruleId}?before=&after=.
// https://spec.matrix.org/v1.19/client-server-api/#put_matrixclientv3pushrulesglobalkindruleid
func (a *API) putPushRule(r *http.Request, who *users.Requester) (any, error) {
	p, err := a.pushService()
	if err != nil {
		return nil, err
	}
	body, err := httpx.ReadBody(r)
	if err != nil {
		return nil, err
	}
	q := r.URL.Query()
	err = p.PutRule(r.Context(), who.UserID, pathVar(r, "kind"), pathVar(r, "ruleId"), body, q.Get("before"), q.Get("after"))
	if err != nil {
		return nil, err
	}
	return struct{}{}, nil
}

// deletePushRule: DELETE /pushrules/global/{kind}/{ruleId}.
// https://spec.matrix.org/v1.19/client-server-api/#delete_matrixclientv3pushrulesglobalkindruleid
func (a *API) deletePushRule(r *http.Request, who *users.Requester) (any, error) {
	p, err := a.pushService()
	if err != nil {
		return nil, err
	}
	if err := p.DeleteRule(r.Context(), who.UserID, pathVar(r, "kind"), pathVar(r, "ruleId")); err != nil {
		return nil, err
	}
	return struct{}{}, nil
}

// getPushRuleEnabled: GET /pushrules/global/{kind}/{ruleId}/enabled.
// https://spec.matrix.org/v1.19/client-server-api/#get_matrixclientv3pushrulesglobalkindruleidenabled
func (a *API) getPushRuleEnabled(r *http.Request, who *users.Requester) (any, error) {
	rule, err := a.pushRule(r, who)
	if err != nil {
		return nil, err
	}
	return map[string]bool{"enabled": rule.Enabled}, nil
}

// putPushRuleEnabled: PUT /pushrules/global/{kind}/{ruleId}/enabled.
// https://spec.matrix.org/v1.19/client-server-api/#put_matrixclientv3pushrulesglobalkindruleidenabled
func (a *API) putPushRuleEnabled(r *http.Request, who *users.Requester) (any, error) {
	return a.putRuleAttr(r, who, (*push.Service).SetEnabled)
}

// getPushRuleActions: GET /pushrules/global/{kind}/{ruleId}/actions.
// https://spec.matrix.org/v1.19/client-server-api/#get_matrixclientv3pushrulesglobalkindruleidactions
func (a *API) getPushRuleActions(r *http.Request, who *users.Requester) (any, error) {
	rule, err := a.pushRule(r, who)
	if err != nil {
		return nil, err
	}
	return map[string]any{"actions": rule.Actions}, nil
}

// putPushRuleActions: PUT /pushrules/global/{kind}/{ruleId}/actions.
// https://spec.matrix.org/v1.19/client-server-api/#put_matrixclientv3pushrulesglobalkindruleidactions
func (a *API) putPushRuleActions(r *http.Request, who *users.Requester) (any, error) {
	return a.putRuleAttr(r, who, (*push.Service).SetActions)
}

// putRuleAttr runs a PUT of one attribute of a rule (enabled or actions):
// the body goes to the push domain, which validates it.
func (a *API) putRuleAttr(r *http.Request, who *users.Requester,
	set func(*push.Service, context.Context, string, string, string, []byte) error) (any, error) {
	p, err := a.pushService()
	if err != nil {
		return nil, err
	}
	body, err := httpx.ReadBody(r)
	if err != nil {
		return nil, err
	}
	if err := set(p, r.Context(), who.UserID, pathVar(r, "kind"), pathVar(r, "ruleId"), body); err != nil {
		return nil, err
	}
	return struct{}{}, nil
}

// getNotifications: GET /notifications?from=&limit=&only=.
// https://spec.matrix.org/v1.19/client-server-api/#get_matrixclientv3notifications
func (a *API) getNotifications(r *http.Request, who *users.Requester) (any, error) {
	p, err := a.pushService()
	if err != nil {
		return nil, err
	}
	q := r.URL.Query()
	limit := 0
	if s := q.Get("limit"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n <= 0 {
			return nil, mxerr.InvalidParam("limit must be a positive integer")
		}
		limit = n
	}
	// only accepts "highlight"; other values filter nothing, as in Synapse.
	return p.Notifications(r.Context(), who.UserID, q.Get("from"), limit, q.Get("only") == "highlight")
}

// getPushers: GET /pushers.
// https://spec.matrix.org/v1.19/client-server-api/#get_matrixclientv3pushers
func (a *API) getPushers(r *http.Request, who *users.Requester) (any, error) {
	p, err := a.pushService()
	if err != nil {
		return nil, err
	}
	list, err := p.Pushers(r.Context(), who.UserID)
	if err != nil {
		return nil, err
	}
	return map[string]any{"pushers": list}, nil
}

// setPusher: POST /pushers/set. Pushers are stored and listed; this
// server does not deliver to push gateways yet.
// https://spec.matrix.org/v1.19/client-server-api/#post_matrixclientv3pushersset
func (a *API) setPusher(r *http.Request, who *users.Requester) (any, error) {
	p, err := a.pushService()
	if err != nil {
		return nil, err
	}
	body, err := httpx.ReadBody(r)
	if err != nil {
		return nil, err
	}
	if err := p.SetPusher(r.Context(), who.UserID, who.DeviceID, body); err != nil {
		return nil, err
	}
	return struct{}{}, nil
}
