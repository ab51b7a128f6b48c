package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"time"
)

// usersScenario: C workers register N users in total, the burst that
// password hashing (Argon2id, bcrypt) makes the most memory-hungry thing a
// homeserver does. With -server-pid it also samples the server process's
// resident memory (Linux /proc), so the report shows what a burst costs.
type usersScenario struct {
	workers   int
	users     int
	serverPID int
	interval  time.Duration
}

func (s *usersScenario) addFlags(fs *flag.FlagSet) {
	fs.IntVar(&s.workers, "c", 16, "concurrent registrations")
	fs.IntVar(&s.users, "n", 200, "users to register in total")
	fs.IntVar(&s.serverPID, "server-pid", 0,
		"process ID of the server, to report its resident memory (Linux, same machine; 0: not measured)")
	fs.DurationVar(&s.interval, "rss-interval", 50*time.Millisecond, "how often the server's memory is sampled")
}

func (s *usersScenario) check() error {
	if s.workers < 1 || s.workers > 1000 {
		return errors.New("-c must be between 1 and 1000")
	}
	if s.users < 1 || s.users > 1_000_000 {
		return errors.New("-n must be between 1 and 1000000")
	}
	if s.serverPID < 0 || s.interval <= 0 {
		return errors.New("-server-pid must be 0 or a process ID, and -rss-interval positive")
	}
	if s.serverPID > 0 {
		if _, err := readRSS(s.serverPID); err != nil {
			return fmt.Errorf("-server-pid: %w", err)
		}
	}
	return nil
}

func (s *usersScenario) conns() int { return s.workers }

type usersReport struct {
	Scenario     string  `json:"scenario"`
	HS           string  `json:"hs"`
	Concurrency  int     `json:"concurrency"`
	Users        int     `json:"users"` // planned
	OK           int     `json:"ok"`
	Errors       int     `json:"errors"`
	Seconds      float64 `json:"seconds"`
	UsersPerSec  float64 `json:"users_per_sec"`
	latencyStats         // of the registrations that succeeded
	*rssStats            // with -server-pid
	FirstError   string  `json:"first_error,omitempty"`
}

// rssStats is the server's resident memory in MiB: before the burst, its
// median and peak during it, and a second after it.
type rssStats struct {
	BeforeMiB  float64 `json:"rss_before_mib"`
	MedianMiB  float64 `json:"rss_median_mib"`
	PeakMiB    float64 `json:"rss_peak_mib"`
	AfterMiB   float64 `json:"rss_after_mib"`
	RSSSamples int     `json:"rss_samples"`
}

func (r *usersReport) human() string {
	var b strings.Builder
	fmt.Fprintf(&b, "users: %d workers registering %d users\n", r.Concurrency, r.Users)
	fmt.Fprintf(&b, "  registered %d ok, %d errors in %s\n", r.OK, r.Errors, fmtSeconds(r.Seconds))
	fmt.Fprintf(&b, "  throughput %.1f users/s\n", r.UsersPerSec)
	fmt.Fprintf(&b, "  latency    %s\n", r.latencyStats)
	if m := r.rssStats; m != nil {
		fmt.Fprintf(&b, "  server RSS before %.1f MiB, during: median %.1f MiB, peak %.1f MiB (%d samples), 1 s after %.1f MiB\n",
			m.BeforeMiB, m.MedianMiB, m.PeakMiB, m.RSSSamples, m.AfterMiB)
	}
	if r.FirstError != "" {
		fmt.Fprintf(&b, "  first error: %s\n", r.FirstError)
	}
	return b.String()
}

func (s *usersScenario) run(ctx context.Context, e *env) (report, error) {
	var before int64
	if s.serverPID > 0 {
		var err error
		if before, err = readRSS(s.serverPID); err != nil {
			return nil, err
		}
	}
	var samples []int64
	stopSampling := func() {}
	if s.serverPID > 0 {
		done := make(chan struct{})
		stopped := make(chan struct{})
		go func() {
			defer close(stopped)
			t := time.NewTicker(s.interval)
			defer t.Stop()
			for {
				if rss, err := readRSS(s.serverPID); err == nil {
					samples = append(samples, rss)
				}
				select {
				case <-done:
					return
				case <-t.C:
				}
			}
		}()
		stopSampling = func() { close(done); <-stopped }
	}

	e.logf("measuring: %d workers registering %d users", s.workers, s.users)
	var next atomic.Int64
	tallies, elapsed, err := measure(ctx, s.workers, func(ctx context.Context, w int, t *tally) {
		for {
			k := int(next.Add(1) - 1)
			if k >= s.users {
				return
			}
			t0 := time.Now()
			_, err := e.users.register(ctx, fmt.Sprintf("%s-reg%d", e.runID, k))
			if !t.record(ctx, time.Since(t0), err) {
				return
			}
		}
	})
	stopSampling()
	if err != nil {
		return nil, fmt.Errorf("measured phase stopped: %w", err)
	}
	lat, nerr, firstErr := merge(tallies)
	rep := &usersReport{
		Scenario: "users", HS: e.hs, Concurrency: s.workers, Users: s.users,
		OK: len(lat), Errors: nerr, Seconds: seconds(elapsed), UsersPerSec: perSecond(len(lat), elapsed),
		latencyStats: summarize(lat),
	}
	if s.serverPID > 0 && len(samples) > 0 {
		select {
		case <-ctx.Done():
		case <-time.After(time.Second):
		}
		after, _ := readRSS(s.serverPID)
		slices.Sort(samples)
		rep.rssStats = &rssStats{
			BeforeMiB: mib(before), MedianMiB: mib(samples[len(samples)/2]), PeakMiB: mib(samples[len(samples)-1]),
			AfterMiB: mib(after), RSSSamples: len(samples),
		}
	}
	if firstErr != nil {
		rep.FirstError = firstErr.Error()
		return rep, fmt.Errorf("%d of %d registrations failed; the first: %w", nerr, s.users, firstErr)
	}
	return rep, nil
}

func mib(bytes int64) float64 { return round(float64(bytes)/(1<<20), 1) }

// readRSS is the resident set size of process pid in bytes, from the
// VmRSS line of /proc/PID/status.
func readRSS(pid int) (int64, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, fmt.Errorf("reading the memory of process %d: %w", pid, err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		rest, ok := strings.CutPrefix(sc.Text(), "VmRSS:")
		if !ok {
			continue
		}
		kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
		if err != nil {
			return 0, fmt.Errorf("process %d: bad VmRSS line %q", pid, sc.Text())
		}
		return kb << 10, nil
	}
	if err := sc.Err(); err != nil {
		return 0, err
	}
	return 0, fmt.Errorf("process %d: no VmRSS in /proc/%d/status", pid, pid)
}
