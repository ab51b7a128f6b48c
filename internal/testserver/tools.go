package testserver

import (
	"os"
	"testing"
)

// MissingTool is how a test reacts to a missing external tool (Node, npm
// packages, Chromium): a skip on a developer's machine, a failure where
// TESSERA_REQUIRE_BROWSER is set (.ci/run installs them all), so that CI
// cannot pass by skipping.
func MissingTool(t testing.TB) func(format string, args ...any) {
	if os.Getenv("TESSERA_REQUIRE_BROWSER") != "" {
		return t.Fatalf
	}
	return t.Skipf
}
