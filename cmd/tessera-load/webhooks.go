package main

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// webhooksScenario: Tessera's built-in incoming webhooks (webhooks.enabled).
// A room admin attaches a GitHub hook to a room through
// /_tessera/webhooks/v1; then C senders at once each POST M GitHub push
// deliveries (three commits, signed with X-Hub-Signature-256, each with its
// own X-GitHub-Delivery), as GitHub delivers to a busy repository's hook.
// A 200 means the notice is committed in the room, so the POST's latency is
// the time from POST to the event being in the room.
type webhooksScenario struct {
	senders   int
	perSender int
	verify    bool
}

func (s *webhooksScenario) addFlags(fs *flag.FlagSet) {
	fs.IntVar(&s.senders, "c", 8, "concurrent senders (connections) posting to the one hook")
	fs.IntVar(&s.perSender, "m", 250, "deliveries each sender posts, one after another")
	fs.BoolVar(&s.verify, "verify", false,
		"afterwards page /messages backwards and check that every notice is there exactly once")
}

func (s *webhooksScenario) check() error {
	if s.senders < 1 || s.senders > 1000 {
		return errors.New("-c must be between 1 and 1000")
	}
	if s.perSender < 1 || s.perSender > 1_000_000 {
		return errors.New("-m must be between 1 and 1000000")
	}
	return nil
}

func (s *webhooksScenario) conns() int { return s.senders }

type webhooksReport struct {
	Scenario       string        `json:"scenario"`
	HS             string        `json:"hs"`
	Concurrency    int           `json:"concurrency"`
	Deliveries     int           `json:"deliveries"` // planned: concurrency × deliveries per sender
	OK             int           `json:"ok"`         // accepted, and posted: each 200 carries the notice's event_id
	Errors         int           `json:"errors"`
	Seconds        float64       `json:"seconds"`
	WebhooksPerSec float64       `json:"webhooks_per_sec"`
	latencyStats                 // POST to the notice committed in the room
	FirstError     string        `json:"first_error,omitempty"`
	Verify         *verifyResult `json:"verify,omitempty"`
}

func (r *webhooksReport) human() string {
	var b strings.Builder
	fmt.Fprintf(&b, "webhooks: %d senders × %d GitHub push deliveries = %d into one hook\n",
		r.Concurrency, r.Deliveries/max(r.Concurrency, 1), r.Deliveries)
	fmt.Fprintf(&b, "  posted     %d ok, %d errors in %s\n", r.OK, r.Errors, fmtSeconds(r.Seconds))
	fmt.Fprintf(&b, "  throughput %.1f webhooks/s\n", r.WebhooksPerSec)
	fmt.Fprintf(&b, "  latency    %s (POST to the notice in the room)\n", r.latencyStats)
	if r.FirstError != "" {
		fmt.Fprintf(&b, "  first error: %s\n", r.FirstError)
	}
	if v := r.Verify; v != nil {
		verdict := "ok"
		if !v.OK {
			verdict = "FAILED"
		}
		fmt.Fprintf(&b, "  verify     %s: %d pages, %d missing, %d duplicates\n", verdict, v.Pages, v.Missing, v.Duplicates)
	}
	return b.String()
}

func (s *webhooksScenario) run(ctx context.Context, e *env) (report, error) {
	e.logf("setup: registering the room admin")
	users, err := e.users.registerAll(ctx, []string{"hookadmin"})
	if err != nil {
		return nil, fmt.Errorf("setup: %w", err)
	}
	admin := users[0]
	var roomID string
	err = e.c.retry429(ctx, "createRoom", func() (err error) {
		roomID, err = createRoom(ctx, e.c, admin.AccessToken, map[string]any{
			"preset": "private_chat", "name": "tessera-load webhooks " + e.runID,
		})
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("setup: %w", err)
	}
	var hook struct {
		URL    string `json:"url"`
		Secret string `json:"secret"`
	}
	if err := e.c.do(ctx, http.MethodPost, "/_tessera/webhooks/v1/rooms/"+url.PathEscape(roomID)+"/hooks", nil,
		admin.AccessToken, map[string]string{"kind": "github"}, &hook); err != nil {
		return nil, fmt.Errorf("setup: create a GitHub hook (is webhooks.enabled on?): %w", err)
	}
	u, err := url.Parse(hook.URL)
	if err != nil || hook.Secret == "" {
		return nil, fmt.Errorf("setup: the hook's answer has no usable url and secret: %q", hook.URL)
	}
	path := u.Path // posted to -hs, whatever public_baseurl says
	body := pushPayload(e.runID)
	sig := "sha256=" + hmacHex(hook.Secret, body)

	e.logf("measuring: %d senders × %d deliveries to %s", s.senders, s.perSender, path)
	ids := make([][]string, s.senders)
	tallies, elapsed, err := measure(ctx, s.senders, func(ctx context.Context, w int, t *tally) {
		for j := range s.perSender {
			t0 := time.Now()
			id, err := postDelivery(ctx, e.c, path, sig, fmt.Sprintf("%s.%d.%d", e.runID, w, j), body)
			if !t.record(ctx, time.Since(t0), err) {
				return
			}
			if err == nil {
				ids[w] = append(ids[w], id)
			}
		}
	})
	if err != nil {
		return nil, fmt.Errorf("measured phase stopped: %w", err)
	}
	lat, nerr, firstErr := merge(tallies)
	rep := &webhooksReport{
		Scenario: "webhooks", HS: e.hs, Concurrency: s.senders, Deliveries: s.senders * s.perSender,
		OK: len(lat), Errors: nerr, Seconds: seconds(elapsed), WebhooksPerSec: perSecond(len(lat), elapsed),
		latencyStats: summarize(lat),
	}
	var failed error
	if firstErr != nil {
		rep.FirstError = firstErr.Error()
		failed = fmt.Errorf("%d of %d deliveries failed; the first: %w", nerr, rep.Deliveries, firstErr)
	}
	if s.verify {
		e.logf("verifying: paging /messages backwards")
		v, err := verifySent(ctx, e, admin, roomID, ids)
		if err != nil {
			return rep, errors.Join(failed, fmt.Errorf("verify: %w", err))
		}
		rep.Verify = v
		if !v.OK {
			failed = errors.Join(failed, fmt.Errorf("verify: %d notices missing from /messages, %d duplicates",
				v.Missing, v.Duplicates))
		}
	}
	return rep, failed
}

// postDelivery POSTs one signed GitHub push delivery and returns the
// notice's event ID.
func postDelivery(ctx context.Context, c *client, path, sig, deliveryID string, body []byte) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.base+path, bytes.NewReader(body))
	if err != nil {
		return "", err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "GitHub-Hookshot/tessera-load")
	req.Header.Set("X-GitHub-Event", "push")
	req.Header.Set("X-GitHub-Delivery", deliveryID)
	req.Header.Set("X-Hub-Signature-256", sig)
	resp, err := c.hc.Do(req)
	if err != nil {
		return "", fmt.Errorf("POST %s: %w", path, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, maxResponseBytes))
	if err != nil {
		return "", fmt.Errorf("POST %s: reading response: %w", path, err)
	}
	if resp.StatusCode != http.StatusOK {
		me := &matrixError{Method: http.MethodPost, Path: path, Status: resp.StatusCode, Body: data}
		_ = json.Unmarshal(data, me)
		return "", me
	}
	var out struct {
		EventID string `json:"event_id"`
	}
	if err := json.Unmarshal(data, &out); err != nil || out.EventID == "" {
		return "", fmt.Errorf("POST %s: no event_id in %s", path, data)
	}
	return out.EventID, nil
}

func hmacHex(secret string, body []byte) string {
	m := hmac.New(sha256.New, []byte(secret))
	m.Write(body)
	return hex.EncodeToString(m.Sum(nil))
}

// pushPayload is a GitHub push of three commits in GitHub's shape (the
// fields a real delivery carries, about 4 KB).
func pushPayload(runID string) []byte {
	repo := map[string]any{
		"id": 186853002, "name": "Hello-World", "full_name": "Codertocat/Hello-World", "private": false,
		"html_url": "https://github.com/Codertocat/Hello-World", "description": "A test repository",
		"owner":          map[string]any{"login": "Codertocat", "id": 21031067, "html_url": "https://github.com/Codertocat"},
		"default_branch": "main", "stargazers_count": 42, "watchers_count": 42, "language": "Go",
	}
	var commits []map[string]any
	for i := range 3 {
		sha := fmt.Sprintf("%040x", i+1)
		commits = append(commits, map[string]any{
			"id": sha, "tree_id": sha, "distinct": true,
			"message":   fmt.Sprintf("Change %d of run %s\n\nA longer description of what changed and why.", i, runID),
			"timestamp": "2026-12-06T23:00:00Z", "url": "https://github.com/Codertocat/Hello-World/commit/" + sha,
			"author":    map[string]any{"name": "Codertocat", "email": "21031067+Codertocat@users.noreply.github.com", "username": "Codertocat"},
			"committer": map[string]any{"name": "GitHub", "email": "noreply@github.com", "username": "web-flow"},
			"added":     []string{}, "removed": []string{}, "modified": []string{"README.md", "main.go"},
		})
	}
	b, _ := json.Marshal(map[string]any{
		"ref": "refs/heads/main", "before": fmt.Sprintf("%040x", 0), "after": fmt.Sprintf("%040x", 3),
		"created": false, "deleted": false, "forced": false,
		"compare": "https://github.com/Codertocat/Hello-World/compare/000000000000...000000000003",
		"commits": commits, "head_commit": commits[2], "repository": repo,
		"pusher": map[string]any{"name": "Codertocat", "email": "21031067+Codertocat@users.noreply.github.com"},
		"sender": map[string]any{"login": "Codertocat", "id": 21031067, "html_url": "https://github.com/Codertocat"},
	})
	return b
}
