package oauth

import (
	"crypto/subtle"
	"regexp"

	"golang.org/x/oauth2"
)

// pkceValue is RFC 7636's grammar for code_verifier and (with S256, whose
// challenge is 43 base64url characters) code_challenge: 43 to 128
// unreserved characters.
var pkceValue = regexp.MustCompile(`^[A-Za-z0-9\-._~]{43,128}$`)

// verifyS256 checks a PKCE code_verifier against the S256 code_challenge
// stored with the code (RFC 7636 section 4.6). The transformation is
// golang.org/x/oauth2's; the compare is constant-time.
func verifyS256(verifier, challenge string) bool {
	if !pkceValue.MatchString(verifier) {
		return false
	}
	got := oauth2.S256ChallengeFromVerifier(verifier)
	return subtle.ConstantTimeCompare([]byte(got), []byte(challenge)) == 1
}
