package clientapi

import (
	"context"
	"math/rand/v2"
	"time"

	"github.com/tessera-hs/tessera/users"
)

// restrict applies the requester's restrictions (a suspension, a shadow
// ban: users.Restrictions.Check) to an action of their request. done means
// the request ends here: with err, or, for a shadow-banned user, with the
// answer a success would have had (fake builds it; nil: {}), while nothing
// is done.
func (a *API) restrict(ctx context.Context, who *users.Requester, action users.Action, fake func(*users.ShadowBanError) any) (done bool, resp any, err error) {
	return a.shadowAnswer(ctx, who.Check(action), fake)
}

// shadowAnswer turns a restriction's error into the end of a request:
// a ShadowBanError becomes the answer fake builds, after the shadow ban
// delay (see shadowBanDelay).
func (a *API) shadowAnswer(ctx context.Context, err error, fake func(*users.ShadowBanError) any) (done bool, resp any, _ error) {
	if err == nil {
		return false, nil, nil
	}
	sb, ok := users.AsShadowBan(err)
	if !ok {
		return true, nil, err
	}
	if err := a.shadowBanWait(ctx); err != nil {
		return true, nil, err
	}
	if fake == nil {
		return true, struct{}{}, nil
	}
	return true, fake(sb), nil
}

// shadowBanWait waits the shadow ban delay, or until ctx ends.
func (a *API) shadowBanWait(ctx context.Context) error {
	m := a.cfg.Moderation
	d := shadowBanDelay(m.ShadowBanDelayMin.Std(), m.ShadowBanDelayMax.Std(), rand.N[time.Duration])
	if d > 0 && !sleepCtx(ctx, d) {
		return ctx.Err()
	}
	return nil
}

// shadowBanDelay is how long a shadow-banned user's dropped request waits
// before its answer: a random time in [lo, hi] (randN(n) picks in [0, n)),
// as Synapse sleeps a random 1 to 10 s, so that the answer does not come
// back faster than a real send's would and give the ban away.
func shadowBanDelay(lo, hi time.Duration, randN func(time.Duration) time.Duration) time.Duration {
	if hi <= lo {
		return lo
	}
	return lo + randN(hi-lo+1)
}

// fakeEventID answers a shadow-banned send or redaction with an event ID
// that names no event, as Synapse does.
func fakeEventID(sb *users.ShadowBanError) any { return map[string]string{"event_id": sb.FakeEventID} }
