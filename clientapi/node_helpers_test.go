package clientapi_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"os"
	"os/exec"
	"testing"
	"time"
)

// nodeRun is one run of a Node test script (testdata/*/*.mjs): its output
// and its exit error.
type nodeRun struct {
	stdout, stderr bytes.Buffer
	err            error
}

// runNode runs script in dir, with env added to this process's, for at most
// timeout. echoStderr also copies the script's stderr to this process's as
// it runs (for watching a long script).
func runNode(node, dir, script string, timeout time.Duration, echoStderr bool, env ...string) *nodeRun {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, node, script)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), env...)
	r := &nodeRun{}
	cmd.Stdout, cmd.Stderr = &r.stdout, &r.stderr
	if echoStderr {
		cmd.Stderr = io.MultiWriter(&r.stderr, os.Stderr)
	}
	r.err = cmd.Run()
	return r
}

// result decodes the script's result, the JSON after the last
// "TESSERA_RESULT " on stdout, into v; without one the test fails.
func (r *nodeRun) result(t testing.TB, v any) {
	t.Helper()
	line := r.stdout.Bytes()
	if i := bytes.LastIndex(line, []byte("TESSERA_RESULT ")); i >= 0 {
		line = line[i+len("TESSERA_RESULT "):]
	}
	if err := json.Unmarshal(bytes.TrimSpace(line), v); err != nil {
		t.Fatalf("node: %v; no result (%v)\nstdout: %s\nstderr: %s", r.err, err, tail(r.stdout.String(), 8000), tail(r.stderr.String(), 8000))
	}
}
