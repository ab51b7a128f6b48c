package clientapi

import (
	"net/http"
	"strings"

	"github.com/tessera-hs/tessera/internal/httpx"
	"github.com/tessera-hs/tessera/internal/mxerr"
	"github.com/tessera-hs/tessera/users"
	"github.com/tessera-hs/tessera/webhooks"
)

// The built-in incoming webhooks (webhooks/; docs/webhooks.md): a hook's
// URL, which its secret authenticates, and the management API, which
// needs an access token and the power to send state in the room.

// SetWebhooks enables the webhooks endpoints.
func (a *API) SetWebhooks(w *webhooks.Service) { a.webhooks = w }

func (a *API) webhooksRoutes(add func(string, []route)) {
	if a.webhooks == nil {
		return
	}
	add("/_tessera/webhooks/v1", []route{
		{http.MethodPost, "/hook/{hookId}", a.receiveWebhook},
		{http.MethodPost, "/rooms/{roomId}/hooks", a.authed(a.createWebhook, noGuests)},
		{http.MethodGet, "/rooms/{roomId}/hooks", a.authed(a.listWebhooks, noGuests)},
		{http.MethodDelete, "/hooks/{hookId}", a.authed(a.deleteWebhook, noGuests)},
	})
}

// receiveWebhook: POST /_tessera/webhooks/v1/hook/{hookId}, no access
// token: GitHub's X-Hub-Signature-256, or a generic hook's secret as
// "Authorization: Bearer" or ?token=.
func (a *API) receiveWebhook(r *http.Request) (any, error) {
	token := r.URL.Query().Get("token")
	if v, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer "); ok {
		token = v
	}
	return a.webhooks.Receive(r.Context(), webhooks.Delivery{
		HookID:        pathVar(r, "hookId"),
		ContentLength: r.ContentLength,
		Body:          r.Body,
		Signature:     r.Header.Get("X-Hub-Signature-256"),
		Event:         r.Header.Get("X-GitHub-Event"),
		DeliveryID:    r.Header.Get("X-GitHub-Delivery"),
		Token:         token,
	})
}

// hookJSON is a hook in the management API; the secret only when created.
func (a *API) hookJSON(r *http.Request, h *webhooks.Hook, withSecret bool) map[string]any {
	out := map[string]any{
		"id": h.ID, "room_id": h.RoomID, "kind": h.Kind, "url": a.webhooks.URL(a.baseURL(r), h.ID),
		"created_by": h.CreatedBy, "created_ts": h.CreatedTS, "enabled": !h.Disabled,
	}
	if withSecret {
		out["secret"] = h.Secret
	}
	return out
}

// createWebhook: POST /_tessera/webhooks/v1/rooms/{roomId}/hooks {kind}.
func (a *API) createWebhook(r *http.Request, who *users.Requester) (any, error) {
	var req struct {
		Kind *string `json:"kind"`
	}
	if err := httpx.DecodeJSON(r, &req, false); err != nil {
		return nil, err
	}
	if req.Kind == nil {
		return nil, mxerr.MissingParam("kind is required")
	}
	h, err := a.webhooks.Create(r.Context(), who.UserID, pathVar(r, "roomId"), *req.Kind)
	if err != nil {
		return nil, err
	}
	return a.hookJSON(r, h, true), nil
}

// listWebhooks: GET /_tessera/webhooks/v1/rooms/{roomId}/hooks.
func (a *API) listWebhooks(r *http.Request, who *users.Requester) (any, error) {
	hooks, err := a.webhooks.List(r.Context(), who.UserID, pathVar(r, "roomId"))
	if err != nil {
		return nil, err
	}
	out := make([]map[string]any, 0, len(hooks))
	for i := range hooks {
		out = append(out, a.hookJSON(r, &hooks[i], false))
	}
	return map[string]any{"hooks": out}, nil
}

// deleteWebhook: DELETE /_tessera/webhooks/v1/hooks/{hookId}.
func (a *API) deleteWebhook(r *http.Request, who *users.Requester) (any, error) {
	if err := a.webhooks.Remove(r.Context(), who.UserID, pathVar(r, "hookId")); err != nil {
		return nil, err
	}
	return map[string]any{}, nil
}
