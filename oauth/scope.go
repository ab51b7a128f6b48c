package oauth

import (
	"regexp"
	"strings"
)

// The Matrix scopes, stable and as MSC2967 named them before they were
// released (clients still send those).
// https://spec.matrix.org/v1.19/client-server-api/#scope
const (
	scopeAPI                  = "urn:matrix:client:api:*"
	scopeAPIUnstable          = "urn:matrix:org.matrix.msc2967.client:api:*"
	scopeDevicePrefix         = "urn:matrix:client:device:"
	scopeDeviceUnstablePrefix = "urn:matrix:org.matrix.msc2967.client:device:"
)

// deviceIDInScope is the spec's grammar for a device ID a client asks for
// in a scope: at least 10 unreserved characters.
var deviceIDInScope = regexp.MustCompile(`^[A-Za-z0-9\-._~]{10,}$`)

// grantScope is a parsed, granted scope.
type grantScope struct {
	// DeviceID is the device the tokens are for: the one the client asked
	// for, or a new one.
	DeviceID string
	// String is the scope as granted: the API scope and the device scope,
	// in the naming (stable or unstable) the client used. Scopes we do not
	// know are left out, as RFC 6749 section 3.3 allows.
	String string
}

func invalidScope(format string, a ...any) *Error {
	return oauthErr(400, "invalid_scope", format, a...)
}

// parseScope checks a requested scope. Full API access is required: it is
// the only access level Matrix defines, and a token without it could do
// nothing. newDeviceID makes a device ID when the client asked for none.
func parseScope(raw string, newDeviceID func() string) (*grantScope, error) {
	var api, device string
	for _, tok := range strings.Fields(raw) {
		switch {
		case tok == scopeAPI || tok == scopeAPIUnstable:
			api = tok
		case strings.HasPrefix(tok, scopeDevicePrefix), strings.HasPrefix(tok, scopeDeviceUnstablePrefix):
			if device != "" {
				return nil, invalidScope("only one device scope may be requested")
			}
			device = tok
		}
	}
	if api == "" {
		return nil, invalidScope("the scope must include %s", scopeAPI)
	}
	g := &grantScope{}
	if device != "" {
		g.DeviceID = strings.TrimPrefix(strings.TrimPrefix(device, scopeDevicePrefix), scopeDeviceUnstablePrefix)
		if !deviceIDInScope.MatchString(g.DeviceID) {
			return nil, invalidScope("a device ID in the scope must be at least 10 unreserved characters")
		}
	} else {
		g.DeviceID = newDeviceID()
		prefix := scopeDevicePrefix
		if api == scopeAPIUnstable {
			prefix = scopeDeviceUnstablePrefix
		}
		device = prefix + g.DeviceID
	}
	g.String = api + " " + device
	return g, nil
}
