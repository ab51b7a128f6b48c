package clientapi

import (
	"net/http"

	"strings"

	"github.com/tessera-hs/tessera/internal/roomversions"
	"github.com/tessera-hs/tessera/users"
)

// supportedVersions are the spec versions whose client API we serve.
// v1.11 brought authenticated media (clients that see it download through
// /_matrix/client/v1/media), MSC4115's unsigned.membership and cross-signing
// keys' first upload without UIA; v1.12 `via` on join and knock, account
// locking and guests' authenticated downloads. v1.13 and later are not
// listed until their changes are checked against what we serve.
var supportedVersions = []string{
	"v1.1", "v1.2", "v1.3", "v1.4", "v1.5", "v1.6", "v1.7", "v1.8", "v1.9", "v1.10", "v1.11", "v1.12",
}

// versions: GET /_matrix/client/versions.
// https://spec.matrix.org/v1.19/client-server-api/#get_matrixclientversions
func (a *API) versions(r *http.Request) (any, error) {
	return map[string]any{
		"versions": supportedVersions,
		"unstable_features": map[string]bool{
			"org.matrix.msc3814": true, "org.matrix.msc3916.stable": true,
			"org.matrix.msc4140": a.delayedEnabled(),
			// Simplified sliding sync (MSC4186), which Element X needs.
			"org.matrix.simplified_msc3575": a.sliding != nil,
			// The OAuth 2.0 API's discovery (MSC2965, in the spec since
			// v1.15): /auth_metadata answers when it is on.
			"org.matrix.msc2965": a.oauth != nil,
		},
	}, nil
}

// baseURL is the public URL of this server.
func (a *API) baseURL(r *http.Request) string {
	if a.cfg.PublicBaseURL != "" {
		return strings.TrimRight(a.cfg.PublicBaseURL, "/")
	}
	scheme := "http"
	if r.TLS != nil {
		scheme = "https"
	}
	return scheme + "://" + r.Host
}

// wellKnown: GET /.well-known/matrix/client.
// https://spec.matrix.org/v1.19/client-server-api/#getwell-knownmatrixclient
func (a *API) wellKnown(r *http.Request) (any, error) {
	out := map[string]any{
		"m.homeserver": map[string]string{"base_url": a.baseURL(r) + "/"},
	}
	if a.calls != nil {
		out["org.matrix.msc4143.rtc_foci"] = a.rtcTransports(r)
	}
	return out, nil
}

// capabilities: GET /_matrix/client/v3/capabilities.
// https://spec.matrix.org/v1.19/client-server-api/#get_matrixclientv3capabilities
func (a *API) capabilities(r *http.Request, who *users.Requester) (any, error) {
	enabled := func(b bool) map[string]bool { return map[string]bool{"enabled": b} }
	available := map[string]string{}
	for v, stability := range roomversions.Available() {
		available[string(v)] = string(stability)
	}
	return map[string]any{
		"capabilities": map[string]any{
			"m.room_versions": map[string]any{
				"default":   string(a.rooms.DefaultRoomVersion()),
				"available": available,
			},
			"m.change_password": enabled(!who.IsGuest),
			"m.set_displayname": enabled(true),
			"m.set_avatar_url":  enabled(true),
			"m.3pid_changes":    enabled(false),
			"m.get_login_token": enabled(false),
			"m.profile_fields":  enabled(true),
			// m.account_moderation is left out: the spec says to omit it
			// when both lock and suspend would be false.
		},
	}, nil
}
