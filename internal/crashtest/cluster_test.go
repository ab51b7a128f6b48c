package crashtest

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/tessera-hs/tessera/internal/cluster"
	"github.com/tessera-hs/tessera/internal/config"
	"github.com/tessera-hs/tessera/internal/database/dbtest"
	"github.com/tessera-hs/tessera/internal/testserver"
)

// loadReport is the part of tessera-load send's JSON line the test reads.
type loadReport struct {
	OK             int     `json:"ok"`
	Errors         int     `json:"errors"`
	Retries        int     `json:"retries"`
	Unacknowledged int     `json:"unacknowledged"`
	Seconds        float64 `json:"seconds"`
	EventsPerSec   float64 `json:"events_per_sec"`
	P50            float64 `json:"p50_ms"`
	Verify         *struct {
		OK                  bool `json:"ok"`
		Missing             int  `json:"missing"`
		Duplicates          int  `json:"duplicates"`
		WrongID             int  `json:"wrong_id"`
		UnacknowledgedFound int  `json:"unacknowledged_found"`
	} `json:"verify"`
	Entries []struct {
		URL       string `json:"url"`
		Answered  int    `json:"answered"`
		Failovers int    `json:"failovers"`
	} `json:"entries"`
	PerRoom []struct {
		RoomID         string         `json:"room_id"`
		Acknowledged   int            `json:"acknowledged"`
		Errors         map[string]int `json:"errors"`
		Retries        int            `json:"retries"`
		Unacknowledged int            `json:"unacknowledged"`
		LongestGapMS   float64        `json:"longest_gap_ms"`
		GapFrom        int64          `json:"gap_from_unix_ms"`
		GapTo          int64          `json:"gap_to_unix_ms"`
		Lost           int            `json:"lost"`
		Duplicated     int            `json:"duplicated"`
	} `json:"per_room"`
}

// TestKillNineInCluster is docs/scaling.md's failure test: three real
// tessera processes (tessera run -config cluster.yaml -instance a|b|c) on
// one PostgreSQL database, tessera-load send over 30 rooms whose owners
// are all three, through all three, each send retried with its
// transaction ID as a client does; b is killed with SIGKILL mid-run and
// started again a few seconds later. No acknowledged event may be lost or
// doubled, the rooms of a and c must see no error at all, and b's rooms
// must take writes again within 5 s of b listening again.
func TestKillNineInCluster(t *testing.T) {
	testserver.MissingPostgres(t)
	const (
		secret    = "crash-test-registration-secret"
		killAfter = 6 * time.Second // of sending
		downFor   = 3 * time.Second
		sendFor   = 25 * time.Second
	)
	dir := t.TempDir()
	cfgPath := filepath.Join(dir, "cluster.yaml")
	out, err := exec.Command(binary, "generate-config", "-server-name", "cluster.test", "-data-dir", filepath.Join(dir, "data"),
		"-listen", "127.0.0.1:0", "-registration-shared-secret", secret, "-o", cfgPath).CombinedOutput()
	if err != nil {
		t.Fatalf("generate-config: %v\n%s", err, out)
	}
	raw, err := os.ReadFile(cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	dsn := dbtest.CreatePostgres(t)
	names := []string{"a", "b", "c"}
	urls := map[string]string{}
	var instances strings.Builder
	instances.WriteString("instances:\n")
	for _, name := range names {
		// A free port, given back for the process to bind: the map must
		// name each process's address before it starts.
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr := l.Addr().String()
		l.Close()
		urls[name] = "http://" + addr
		fmt.Fprintf(&instances, "  %s: {internal_url: %q, listen: %q}\n", name, urls[name], addr)
	}
	cfg := string(raw)
	for _, edit := range []struct{ re, repl string }{
		// No rate limits: the senders send as fast as they can.
		{`(?m)^(rate_limits:\n(?:\s*#.*\n)*)  enabled: true$`, "${1}  enabled: false"},
		// Cheap password hashing: registration is not what is tested.
		{`(?m)^  hash_memory_kib: \d+$`, "  hash_memory_kib: 1024"},
		{`(?m)^  hash_iterations: \d+$`, "  hash_iterations: 1"},
		{`(?m)^  engine: sqlite$`, "  engine: postgres"},
		{`(?m)^  dsn: ""$`, "  dsn: " + fmt.Sprintf("%q", dsn)},
		{`(?m)^instances: \{\}\n`, instances.String()},
		{`(?m)^instance_secret: ""$`, `instance_secret: "` + testserver.ClusterSecret + `"`},
	} {
		re := regexp.MustCompile(edit.re)
		if !re.MatchString(cfg) {
			t.Fatalf("generated config does not match %q:\n%s", edit.re, cfg)
		}
		cfg = re.ReplaceAllString(cfg, edit.repl)
	}
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}

	procs := map[string]*server{}
	for _, name := range names {
		procs[name] = start(t, cfgPath, "-instance", name)
		if procs[name].url != urls[name] {
			t.Fatalf("instance %s listens on %s, want %s", name, procs[name].url, urls[name])
		}
	}

	load := exec.Command(loadBinary, "-hs", urls["a"], "-shared-secret", secret, "-timeout", "10s", "-deadline", "3m",
		"send", "-c", "60", "-m", "100000", "-rooms", "30", "-via", urls["b"]+","+urls["c"],
		"-retry-for", "60s", "-retry-wait", "100ms", "-duration", sendFor.String(), "-verify")
	var stdout bytes.Buffer
	load.Stdout = &stdout
	stderr, err := load.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := load.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if load.ProcessState == nil {
			_ = load.Process.Kill()
		}
	})
	measuring := make(chan struct{})
	loadLog := &syncBuffer{}
	loadDone := make(chan error, 1)
	go func() {
		sc := bufio.NewScanner(stderr)
		once := false
		for sc.Scan() {
			loadLog.WriteString(sc.Text() + "\n")
			if !once && strings.HasPrefix(sc.Text(), "measuring:") {
				once = true
				close(measuring)
			}
		}
		loadDone <- load.Wait()
	}()
	select {
	case <-measuring:
	case err := <-loadDone:
		t.Fatalf("tessera-load ended before sending: %v\n%s", err, loadLog)
	case <-time.After(90 * time.Second):
		t.Fatalf("tessera-load's setup did not finish:\n%s", loadLog)
	}

	time.Sleep(killAfter)
	killed := time.Now()
	procs["b"].kill(t)
	time.Sleep(downFor)
	procs["b"] = start(t, cfgPath, "-instance", "b")
	back := time.Now() // b listens again
	t.Logf("b killed at %s, listening again at %s (%.1f s later)", killed.Format("15:04:05.000"),
		back.Format("15:04:05.000"), back.Sub(killed).Seconds())

	var loadErr error
	select {
	case loadErr = <-loadDone:
	case <-time.After(2 * time.Minute):
		t.Fatalf("tessera-load did not finish:\n%s", loadLog)
	}
	lines := strings.Split(strings.TrimSpace(stdout.String()), "\n")
	var rep loadReport
	if err := json.Unmarshal([]byte(lines[len(lines)-1]), &rep); err != nil {
		t.Fatalf("tessera-load (%v) printed no report: %v\nstdout:\n%s\nstderr:\n%s", loadErr, err, stdout.String(), loadLog)
	}
	t.Logf("tessera-load: %d acknowledged in %.1f s (%.1f events/s, p50 %.1f ms), %d failed attempts, %d retries, %d given up",
		rep.OK, rep.Seconds, rep.EventsPerSec, rep.P50, rep.Errors, rep.Retries, rep.Unacknowledged)
	for _, en := range rep.Entries {
		t.Logf("entry %s: %d answered, %d failed over", en.URL, en.Answered, en.Failovers)
	}
	if loadErr != nil {
		t.Errorf("tessera-load: %v\n%s", loadErr, loadLog)
	}
	if v := rep.Verify; v == nil || !v.OK || v.Missing != 0 || v.Duplicates != 0 || v.WrongID != 0 {
		t.Errorf("verify = %+v: want every acknowledged event there once", rep.Verify)
	}
	if len(rep.PerRoom) != 30 {
		t.Fatalf("%d rooms in the report, want 30", len(rep.PerRoom))
	}

	m, err := cluster.New(&config.Config{Instance: "a", InstanceSecret: testserver.ClusterSecret,
		Instances: map[string]config.Instance{"a": {InternalURL: urls["a"]}, "b": {InternalURL: urls["b"]}, "c": {InternalURL: urls["c"]}}})
	if err != nil {
		t.Fatal(err)
	}
	owned := map[string]int{}
	var worstOther float64
	for _, r := range rep.PerRoom {
		owner := m.Owner(r.RoomID)
		owned[owner]++
		errs := 0
		for _, n := range r.Errors {
			errs += n
		}
		if r.Lost != 0 || r.Duplicated != 0 || r.Unacknowledged != 0 {
			t.Errorf("room %s (%s's): %d lost, %d duplicated, %d given up", r.RoomID, owner, r.Lost, r.Duplicated, r.Unacknowledged)
		}
		if r.Acknowledged == 0 {
			t.Errorf("room %s (%s's) acknowledged nothing", r.RoomID, owner)
		}
		if owner != "b" {
			worstOther = max(worstOther, r.LongestGapMS)
			if errs != 0 {
				t.Errorf("room %s of %s, which stayed up: errors %v, want none", r.RoomID, owner, r.Errors)
			}
			continue
		}
		from, to := time.UnixMilli(r.GapFrom), time.UnixMilli(r.GapTo)
		t.Logf("room %s of b: %d acknowledged, errors %v, longest without a write %.0f ms (%s to %s), writes again %.0f ms after b listened",
			r.RoomID, r.Acknowledged, r.Errors, r.LongestGapMS, from.Format("15:04:05.000"), to.Format("15:04:05.000"),
			float64(to.Sub(back).Milliseconds()))
		// The outage spans the kill and the restart: nothing was
		// acknowledged while b was gone. The slack is for answers b wrote
		// just before it died that the loaded client read a little after,
		// and for b listening a little before the test saw its log line.
		if from.After(killed.Add(2*time.Second)) || to.Before(back.Add(-time.Second)) {
			t.Errorf("room %s of b: longest gap %s to %s does not span the kill at %s", r.RoomID, from, to, killed)
		}
		if d := to.Sub(back); d > 5*time.Second {
			t.Errorf("room %s of b took its first write %v after b listened again, want within 5 s", r.RoomID, d)
		}
	}
	t.Logf("rooms per owner %v; the longest time a room of a or c went without a write: %.0f ms", owned, worstOther)
	if owned["a"] == 0 || owned["b"] == 0 || owned["c"] == 0 {
		t.Errorf("rooms per owner %v: want rooms of every instance", owned)
	}

	// Each room is still one linear chain: the kill forked nothing.
	tdb := testDatabase{dsn: dsn}
	for _, r := range rep.PerRoom {
		checkLinearDAG(t, tdb, r.RoomID)
	}
	for _, name := range names {
		procs[name].stop(t)
	}
}
