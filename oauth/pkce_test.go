package oauth

import (
	"testing"

	"golang.org/x/oauth2"
)

func TestVerifyS256(t *testing.T) {
	// RFC 7636 appendix B.
	const verifier = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"
	const challenge = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
	for _, tc := range []struct {
		name, verifier, challenge string
		want                      bool
	}{
		{"rfc7636 vector", verifier, challenge, true},
		{"wrong verifier", verifier[:42] + "X", challenge, false},
		{"plain (verifier as challenge)", verifier, verifier, false},
		{"too short", "abc", oauth2.S256ChallengeFromVerifier("abc"), false},
		{"bad characters", verifier[:40] + "!!!!", challenge, false},
		{"empty", "", challenge, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := verifyS256(tc.verifier, tc.challenge); got != tc.want {
				t.Errorf("verifyS256(%q, %q) = %v, want %v", tc.verifier, tc.challenge, got, tc.want)
			}
		})
	}
}
