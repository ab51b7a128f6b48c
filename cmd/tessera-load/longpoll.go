package main

import (
	"context"
	"errors"
	"net/http"
	"net/url"
	"strconv"
	"time"
)

// What the fanout, initialsync and idle scenarios need of /sync.

// maxPollTimeout bounds the long-poll timeout a scenario may ask for.
const maxPollTimeout = 5 * time.Minute

// syncParallel is how many initial syncs run at once during setup.
const syncParallel = 16

// syncResponse is the part of a /sync response the scenarios look at.
// https://spec.matrix.org/v1.19/client-server-api/#get_matrixclientv3sync
type syncResponse struct {
	NextBatch string `json:"next_batch"`
	Rooms     struct {
		Join map[string]syncJoinedRoom `json:"join"`
	} `json:"rooms"`
}

type syncJoinedRoom struct {
	Timeline struct {
		Events  []syncEvent `json:"events"`
		Limited bool        `json:"limited"`
	} `json:"timeline"`
	State struct {
		Events []syncEvent `json:"events"`
	} `json:"state"`
}

type syncEvent struct {
	EventID string `json:"event_id"`
	Type    string `json:"type"`
	Sender  string `json:"sender"`
}

// syncOnce makes one GET /sync with the default filter: an initial sync when
// since is empty, else an incremental one that the server may hold open for
// up to timeout (the long-poll) until something happens. out receives the
// decoded response (a *syncResponse, or a *json.RawMessage to keep the
// bytes).
func syncOnce(ctx context.Context, c *client, token, since string, timeout time.Duration, out any) error {
	q := url.Values{}
	if since != "" {
		q.Set("since", since)
	}
	if timeout > 0 {
		q.Set("timeout", strconv.FormatInt(timeout.Milliseconds(), 10))
	}
	// The request must outlive the long-poll it asks for: a copy of the
	// client (sharing its connections) with the poll's timeout added to the
	// per-request one.
	lc := *c
	lc.timeout = c.timeout + timeout
	return lc.do(ctx, http.MethodGet, clientV3+"/sync", q, token, nil, out)
}

// syncFiltered is syncOnce's incremental long-poll with an inline filter
// (none when filter is empty).
func syncFiltered(ctx context.Context, c *client, token, since, filter string, timeout time.Duration, out any) error {
	q := url.Values{"since": {since}, "timeout": {strconv.FormatInt(timeout.Milliseconds(), 10)}}
	if filter != "" {
		q.Set("filter", filter)
	}
	lc := *c
	lc.timeout = c.timeout + timeout
	return lc.do(ctx, http.MethodGet, clientV3+"/sync", q, token, nil, out)
}

// initialSyncs makes an initial sync for each user (setup, not measured) and
// returns each one's next_batch. check, if not nil, is called on each
// response.
func initialSyncs(ctx context.Context, c *client, users []user, check func(i int, r *syncResponse) error) ([]string, error) {
	since := make([]string, len(users))
	err := forEach(ctx, len(users), syncParallel, func(ctx context.Context, i int) error {
		var resp syncResponse
		err := c.retry429(ctx, "initial sync", func() error {
			return syncOnce(ctx, c, users[i].AccessToken, "", 0, &resp)
		})
		if err != nil {
			return err
		}
		if resp.NextBatch == "" {
			return errors.New("GET /sync: response has no next_batch")
		}
		since[i] = resp.NextBatch
		if check != nil {
			return check(i, &resp)
		}
		return nil
	})
	return since, err
}

// durationFlag is a duration flag that also takes a bare number of seconds:
// "-d 20" is 20s, "-d 500ms" half a second.
type durationFlag struct{ d *time.Duration }

func (f durationFlag) String() string {
	if f.d == nil {
		return ""
	}
	return f.d.String()
}

func (f durationFlag) Set(s string) error {
	if n, err := strconv.ParseFloat(s, 64); err == nil {
		*f.d = time.Duration(n * float64(time.Second))
		return nil
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		return errors.New("want a number of seconds or a duration such as 20s or 500ms")
	}
	*f.d = d
	return nil
}

// sleepCtx waits d or until ctx is done, and reports whether d passed.
func sleepCtx(ctx context.Context, d time.Duration) bool {
	if d <= 0 {
		return ctx.Err() == nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}
