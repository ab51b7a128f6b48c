package main

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"
)

var binary string

// TestMain builds the real binary once; the tests run it as operators do.
func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "tessera-bin")
	if err != nil {
		panic(err)
	}
	binary = filepath.Join(dir, "tessera")
	if out, err := exec.Command("go", "build", "-tags", "sqlite_fts5", "-o", binary, ".").CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "build: %v\n%s", err, out)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// tessera runs the binary to completion and returns its output and exit code.
func tessera(t *testing.T, dir string, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	cmd := exec.Command(binary, args...)
	cmd.Dir = dir
	var o, e bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &e
	err := cmd.Run()
	var ee *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &ee):
		code = ee.ExitCode()
	default:
		t.Fatalf("run tessera: %v", err)
	}
	return o.String(), e.String(), code
}

func generate(t *testing.T, dir string, extra ...string) string {
	t.Helper()
	path := filepath.Join(dir, "t.yaml")
	args := append([]string{"generate-config", "-server-name", "cli.test", "-data-dir", "data",
		"-listen", "127.0.0.1:0", "-o", path}, extra...)
	if _, stderr, code := tessera(t, dir, args...); code != 0 {
		t.Fatalf("generate-config exit %d: %s", code, stderr)
	}
	return path
}

func TestGenerateConfig(t *testing.T) {
	dir := t.TempDir()
	path := generate(t, dir, "-registration-shared-secret", "s3cret", "-open-registration")
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{`server_name: "cli.test"`, `shared_secret: "s3cret"`, "open: true", `listen: "127.0.0.1:0"`} {
		if !strings.Contains(string(raw), want) {
			t.Errorf("config lacks %q", want)
		}
	}
	key, err := os.ReadFile(filepath.Join(dir, "data", "signing.key"))
	if err != nil || !regexp.MustCompile(`^ed25519 a_\S+ \S{43}\n$`).Match(key) {
		t.Fatalf("signing key = %q, %v", key, err)
	}
	// Never overwrite: the file holds secrets and names the signing key.
	if _, stderr, code := tessera(t, dir, "generate-config", "-o", path); code != 2 || !strings.Contains(stderr, "already exists") {
		t.Fatalf("overwrite: exit %d, %s", code, stderr)
	}
}

func TestBadInvocationsExit2(t *testing.T) {
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.yaml")
	os.WriteFile(bad, []byte("server_name: x.test\nlogging:\n  level: loud\n"), 0o600)
	unknown := filepath.Join(dir, "unknown.yaml")
	os.WriteFile(unknown, []byte("server_name: x.test\nlisten_addr: 1\n"), 0o600)
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"missing config", []string{"run", "-config", filepath.Join(dir, "nope.yaml")}, "does not exist"},
		{"bad value", []string{"run", "-config", bad}, "logging.level: expected one of debug, info, warn, error"},
		{"unknown key", []string{"run", "-config", unknown}, `unknown key "listen_addr"`},
		{"unknown command", []string{"frobnicate"}, "unknown command"},
		{"unknown flag", []string{"run", "-nope"}, "flag provided but not defined"},
		{"register-user without password", []string{"register-user", "-config", bad, "-user", "a"}, "-user and -password are required"},
		{"generate-config without -o", []string{"generate-config"}, "-o FILE is required"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, stderr, code := tessera(t, dir, tt.args...)
			if code != 2 || !strings.Contains(stderr, tt.want) {
				t.Fatalf("exit %d, stderr %q; want 2 and %q", code, stderr, tt.want)
			}
		})
	}
}

func TestVersion(t *testing.T) {
	out, _, code := tessera(t, t.TempDir(), "version")
	if code != 0 || !strings.HasPrefix(out, "tessera ") {
		t.Fatalf("version: %q exit %d", out, code)
	}
}

// running is a tessera server process.
type running struct {
	cmd  *exec.Cmd
	addr string
	logs *bytes.Buffer
	done chan error
}

// start runs the binary and waits for its "listening" line.
func start(t *testing.T, dir string, args ...string) *running {
	t.Helper()
	cmd := exec.Command(binary, args...)
	cmd.Dir = dir
	stderr, _ := cmd.StderrPipe()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	r := &running{cmd: cmd, logs: &bytes.Buffer{}, done: make(chan error, 1)}
	addrc := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			line := sc.Text()
			r.logs.WriteString(line + "\n")
			if m := regexp.MustCompile(`Tessera is listening" address="?([0-9.:]+)`).FindStringSubmatch(line); m != nil {
				addrc <- m[1]
			}
		}
		r.done <- cmd.Wait()
	}()
	select {
	case r.addr = <-addrc:
	case err := <-r.done:
		t.Fatalf("server exited early: %v\n%s", err, r.logs)
	case <-time.After(20 * time.Second):
		cmd.Process.Kill()
		t.Fatalf("server did not start")
	}
	t.Cleanup(func() { cmd.Process.Kill() })
	return r
}

// stop sends SIGTERM and waits for a clean exit.
func (r *running) stop(t *testing.T) {
	t.Helper()
	r.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-r.done:
		if err != nil {
			t.Fatalf("exit after SIGTERM: %v\n%s", err, r.logs)
		}
	case <-time.After(20 * time.Second):
		t.Fatalf("server did not stop on SIGTERM")
	}
	if !strings.Contains(r.logs.String(), "shut down cleanly") {
		t.Fatalf("no clean shutdown in logs:\n%s", r.logs)
	}
}

func postJSON(t *testing.T, url string, body any) (int, map[string]any) {
	t.Helper()
	return authedJSON(t, http.MethodPost, url, "", body)
}

// TestRunRegisterUserLoginRestart is the operator's path: generate a config,
// create a user with register-user, start the server, log in, stop with
// SIGTERM, start again and log in with the same account.
func TestRunRegisterUserLoginRestart(t *testing.T) {
	dir := t.TempDir()
	path := generate(t, dir)
	out, stderr, code := tessera(t, dir, "register-user", "-config", path, "-user", "admin", "-password", "hunter2hunter2", "-admin")
	if code != 0 || !strings.Contains(out, "@admin:cli.test (admin)") {
		t.Fatalf("register-user: exit %d %q %q", code, out, stderr)
	}
	if _, stderr, code := tessera(t, dir, "register-user", "-config", path, "-user", "admin", "-password", "hunter2hunter2"); code != 1 || !strings.Contains(stderr, "M_USER_IN_USE") {
		t.Fatalf("duplicate register-user: exit %d %q", code, stderr)
	}
	login := map[string]any{"type": "m.login.password", "identifier": map[string]string{"type": "m.id.user", "user": "admin"}, "password": "hunter2hunter2"}
	for i := 0; i < 2; i++ {
		srv := start(t, dir, "run", "-config", path)
		logs := srv.logs.String()
		for _, want := range []string{"server_name=cli.test", "database=" + filepath.Join(dir, "data", "tessera.db")} {
			if !strings.Contains(logs, want) {
				t.Errorf("start-up line lacks %q:\n%s", want, logs)
			}
		}
		status, body := postJSON(t, "http://"+srv.addr+"/_matrix/client/v3/login", login)
		if status != 200 || body["user_id"] != "@admin:cli.test" {
			t.Fatalf("login after start %d: %d %v", i, status, body)
		}
		srv.stop(t)
		if strings.Contains(srv.logs.String(), "hunter2hunter2") || strings.Contains(srv.logs.String(), body["access_token"].(string)) {
			t.Fatal("a password or token appeared in the log")
		}
	}
}

// TestNoArgumentsCreatesConfig: `tessera` alone creates ./tessera.yaml with
// local defaults, says so, and serves on 127.0.0.1:8008.
func TestNoArgumentsCreatesConfig(t *testing.T) {
	dir := t.TempDir()
	srv := start(t, dir)
	if srv.addr != "127.0.0.1:8008" {
		t.Fatalf("listening on %s, want 127.0.0.1:8008", srv.addr)
	}
	if !strings.Contains(srv.logs.String(), "Created tessera.yaml") {
		t.Fatalf("did not say it created the config:\n%s", srv.logs)
	}
	resp, err := http.Get("http://127.0.0.1:8008/_matrix/client/versions")
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("versions: %v %v", resp, err)
	}
	resp.Body.Close()
	srv.stop(t)
	for _, f := range []string{"tessera.yaml", "data/signing.key", "data/tessera.db"} {
		if _, err := os.Stat(filepath.Join(dir, f)); err != nil {
			t.Errorf("%s: %v", f, err)
		}
	}
}

// TestRefusesSQLiteWithoutFTS5: a binary built without -tags sqlite_fts5
// has no full-text search and must not start, saying how to build it.
func TestRefusesSQLiteWithoutFTS5(t *testing.T) {
	dir := t.TempDir()
	plain := filepath.Join(dir, "tessera-nofts5")
	if out, err := exec.Command("go", "build", "-o", plain, ".").CombinedOutput(); err != nil {
		t.Fatalf("build without the tag: %v\n%s", err, out)
	}
	path := generate(t, dir)
	cmd := exec.Command(plain, "run", "-config", path)
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() == 0 {
		t.Fatalf("started without FTS5: %v\n%s", err, out)
	}
	if !strings.Contains(string(out), "-tags sqlite_fts5") {
		t.Fatalf("output does not say to build with -tags sqlite_fts5:\n%s", out)
	}
}
