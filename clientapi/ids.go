package clientapi

import (
	"strings"
	"unicode"

	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/tessera-hs/tessera/internal/mxerr"
)

// Identifier checks for request parameters. A malformed ID is the
// client's mistake, 400 M_INVALID_PARAM, and is refused before any lookup
// could turn it into a 403 or 404, or, worse, into state about a user who
// cannot exist.
// https://spec.matrix.org/v1.19/appendices/#identifier-grammar

// checkUserID validates a user ID. Historical user IDs (the wider
// character set of older servers, and the odd ones some servers let in)
// are accepted: they exist in rooms. An empty localpart, whitespace or
// control characters never are.
func checkUserID(raw, what string) (string, error) {
	uid, err := spec.NewUserID(raw, true)
	if err != nil || uid.Local() == "" || strings.IndexFunc(uid.Local(), func(r rune) bool {
		return r <= 0x20 || r == 0x7F || unicode.IsSpace(r) || unicode.IsControl(r)
	}) >= 0 {
		return "", mxerr.InvalidParam("Invalid user ID in %s: %q", what, raw)
	}
	return uid.String(), nil
}

// checkRoomID validates a room ID: "!" and an opaque part, with a server
// name before room version 12 and without one from it on.
func checkRoomID(raw, what string) (string, error) {
	if len(raw) < 2 || raw[0] != '!' || len(raw) > 255 || strings.ContainsAny(raw, " \x00") {
		return "", mxerr.InvalidParam("Invalid room ID in %s: %q", what, raw)
	}
	if _, server, ok := strings.Cut(raw, ":"); ok {
		if _, _, valid := spec.ParseAndValidateServerName(spec.ServerName(server)); !valid {
			return "", mxerr.InvalidParam("Invalid room ID in %s: %q", what, raw)
		}
	}
	return raw, nil
}

// checkAlias validates a room alias: "#localpart:server".
func checkAlias(raw, what string) (string, error) {
	local, server, ok := strings.Cut(strings.TrimPrefix(raw, "#"), ":")
	if !strings.HasPrefix(raw, "#") || !ok || local == "" || len(raw) > 255 {
		return "", mxerr.InvalidParam("Invalid room alias in %s: %q", what, raw)
	}
	if _, _, valid := spec.ParseAndValidateServerName(spec.ServerName(server)); !valid {
		return "", mxerr.InvalidParam("Invalid room alias in %s: %q", what, raw)
	}
	return raw, nil
}

// checkRoomIDOrAlias validates a {roomIdOrAlias} parameter.
func checkRoomIDOrAlias(raw, what string) (string, error) {
	if strings.HasPrefix(raw, "#") {
		return checkAlias(raw, what)
	}
	if strings.HasPrefix(raw, "!") {
		return checkRoomID(raw, what)
	}
	return "", mxerr.InvalidParam("Invalid room ID or alias in %s: %q (must start with ! or #)", what, raw)
}
