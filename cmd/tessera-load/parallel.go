package main

import (
	"context"
	"sync"
	"sync/atomic"
	"time"
)

// forEach calls fn for each i in [0, n), at most par calls at once. It
// returns the first error and cancels the calls still to come. For setup.
func forEach(ctx context.Context, n, par int, fn func(ctx context.Context, i int) error) error {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	var next atomic.Int64
	var wg sync.WaitGroup
	for range min(n, max(par, 1)) {
		wg.Go(func() {
			for {
				i := int(next.Add(1) - 1)
				if i >= n || ctx.Err() != nil {
					return
				}
				if err := fn(ctx, i); err != nil {
					cancel(err)
					return
				}
			}
		})
	}
	wg.Wait()
	return context.Cause(ctx)
}

// tally is one worker's results in a measured phase. Each worker owns its
// own, so recording a request takes no lock.
type tally struct {
	lat      []time.Duration // of the requests that succeeded
	errors   int
	firstErr error
	fatal    error // why the worker stopped early
}

// record notes one request's outcome and reports whether the worker should
// carry on.
func (t *tally) record(ctx context.Context, d time.Duration, err error) bool {
	if err == nil {
		t.lat = append(t.lat, d)
		return true
	}
	if ctx.Err() != nil {
		// The run was stopped (deadline, signal, another worker's fatal
		// error); this request is not to blame for it.
		t.fatal = context.Cause(ctx)
		return false
	}
	t.errors++
	if t.firstErr == nil {
		t.firstErr = err
	}
	if isFatal(err) {
		t.fatal = err
		return false
	}
	return true
}

// measure runs work in n workers, releases them all at once and returns
// their tallies and the wall time from the release until the last one
// finished, so that starting goroutines is not measured. It returns an error
// if a worker stopped early on a fatal error or the run was stopped.
func measure(ctx context.Context, n int, work func(ctx context.Context, w int, t *tally)) ([]tally, time.Duration, error) {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	tallies := make([]tally, n)
	start := make(chan struct{})
	var wg sync.WaitGroup
	for w := range n {
		wg.Go(func() {
			<-start
			work(ctx, w, &tallies[w])
			if err := tallies[w].fatal; err != nil {
				cancel(err)
			}
		})
	}
	t0 := time.Now()
	close(start)
	wg.Wait()
	elapsed := time.Since(t0)
	return tallies, elapsed, context.Cause(ctx)
}

// merge combines the workers' tallies.
func merge(tallies []tally) (lat []time.Duration, errors int, firstErr error) {
	for _, t := range tallies {
		lat = append(lat, t.lat...)
		errors += t.errors
		if firstErr == nil {
			firstErr = t.firstErr
		}
	}
	return lat, errors, firstErr
}
