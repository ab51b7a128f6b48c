package main

import (
	"bytes"
	"context"
	"math"
	"strconv"
	"strings"
	"testing"

	"github.com/tessera-hs/tessera/internal/testserver"
)

// Two federating Tesseras: the sender on A, the receivers on B, every
// message crossing the federation link.
func TestFederationAgainstTessera(t *testing.T) {
	t.Parallel()
	a := testserver.Start(t, testserver.Federation("127.0.0.1"))
	b := testserver.Start(t, testserver.Federation("127.0.0.2"))

	for _, tt := range []struct {
		name      string
		receivers int
		interval  string
		wantMS    float64
	}{
		{"paced", 2, "5ms", 5},
		{"flat out", 1, "0", 0},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var out, errOut bytes.Buffer
			code := run(context.Background(), []string{"-hs", a.URL, "-hs2", b.URL,
				"-shared-secret", testserver.SharedSecret, "federation",
				"-s", strconv.Itoa(tt.receivers), "-n", "20", "-interval", tt.interval, "-drain", "15s"}, &out, &errOut)
			if code != exitOK {
				t.Fatalf("exit %d\nstdout:\n%s\nstderr:\n%s", code, out.String(), errOut.String())
			}
			t.Logf("stdout:\n%s", out.String())
			res := lastJSON(t, out.String())
			if res == nil {
				t.Fatalf("no JSON line:\n%s", out.String())
			}
			for k, want := range map[string]string{
				"scenario": "federation", "hs": a.URL, "hs2": b.URL,
				"server_name": a.Config.ServerName, "server_name2": b.Config.ServerName,
			} {
				if res[k] != want {
					t.Errorf("%s = %v, want %q", k, res[k], want)
				}
			}
			s := float64(tt.receivers)
			wantFields(t, res, map[string]float64{
				"receivers": s, "messages": 20, "interval_ms": tt.wantMS, "sent": 20, "send_errors": 0,
				"expected": 20 * s, "deliveries": 20 * s, "delivered": 20,
				"missing": 0, "duplicates": 0, "unexpected": 0, "poll_errors": 0,
			})
			num := func(k string) float64 {
				v, ok := res[k].(float64)
				if !ok {
					t.Errorf("%s = %v, want a number", k, res[k])
				}
				return v
			}
			p50, p90, p99, mx := num("p50_ms"), num("p90_ms"), num("p99_ms"), num("max_ms")
			if !(p50 > 0 && p50 <= p90 && p90 <= p99 && p99 <= mx) {
				t.Errorf("latencies p50 %v, p90 %v, p99 %v, max %v: want 0 < p50 <= p90 <= p99 <= max", p50, p90, p99, mx)
			}
			// Throughput is the 20 messages over first send to last
			// delivery, which is at least the slowest delivery.
			secs, eps := num("seconds"), num("events_per_sec")
			if secs <= 0 || secs*1000 < mx-1 || math.Abs(eps*secs-20) > 0.5 {
				t.Errorf("seconds %v, events_per_sec %v, max_ms %v: want events_per_sec × seconds = 20", secs, eps, mx)
			}
			if num("send_events_per_sec") <= 0 || num("polls") < s {
				t.Errorf("send_events_per_sec %v, polls %v", res["send_events_per_sec"], res["polls"])
			}
			for _, k := range []string{"all_receivers", "send"} {
				m, _ := res[k].(map[string]any)
				if v, ok := m["p99_ms"].(float64); !ok || v <= 0 {
					t.Errorf("%s.p99_ms = %v, want > 0", k, m["p99_ms"])
				}
			}
			if !strings.Contains(out.String(), "delivered  "+strconv.Itoa(20*tt.receivers)+" of "+strconv.Itoa(20*tt.receivers)) ||
				!strings.Contains(out.String(), "throughput 20 messages reached "+b.Config.ServerName) {
				t.Errorf("summary:\n%s", out.String())
			}
		})
	}
}

func TestFederationUsage(t *testing.T) {
	t.Parallel()
	tests := []struct {
		args []string
		want string
	}{
		{[]string{"-hs", "http://127.0.0.1:1", "-shared-secret", "s", "federation"}, "-hs2 is required"},
		{[]string{"-hs", "http://127.0.0.1:1", "-hs2", "http://127.0.0.1:1/", "-shared-secret", "s", "federation"},
			"two different servers"},
		{[]string{"-hs", "http://127.0.0.1:1", "-hs2", "ftp://x", "-shared-secret", "s", "federation"},
			`-hs2 "ftp://x": want an http:// or https:// URL`},
		{[]string{"-hs", "http://127.0.0.1:1", "-hs2", "http://127.0.0.2:1", "-shared-secret", "s", "federation",
			"-interval", "-1ms"}, "-interval must be"},
	}
	for _, tt := range tests {
		var out, errOut bytes.Buffer
		if code := run(context.Background(), tt.args, &out, &errOut); code != exitUsage {
			t.Errorf("%v: exit %d, want %d", tt.args, code, exitUsage)
		}
		if !strings.Contains(errOut.String(), tt.want) {
			t.Errorf("%v: stderr lacks %q:\n%s", tt.args, tt.want, errOut.String())
		}
	}
}
