//go:build !goolm

package e2eetest

import "testing"

// Without the goolm tag mautrix-go's crypto package links libolm through
// cgo, which needs libolm's headers; the test is built only with the tag.
// The README's test command and CI set it.
func TestEncryptionNeedsGoolmTag(t *testing.T) {
	t.Skip("the end-to-end encryption test runs with -tags goolm: go test -race -tags goolm ./...")
}
