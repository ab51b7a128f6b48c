package clientapi

import "github.com/tessera-hs/tessera/users"

// restrict applies the requester's restrictions (a suspension, a shadow
// ban: users.Restrictions.Check) to an action of their request. done means
// the request ends here: with err, or, for a shadow-banned user, with the
// answer a success would have had (fake builds it; nil: {}), while nothing
// is done.
func restrict(who *users.Requester, action users.Action, fake func(*users.ShadowBanError) any) (done bool, resp any, err error) {
	return shadowAnswer(who.Check(action), fake)
}

// shadowAnswer turns a restriction's error into the end of a request:
// a ShadowBanError becomes the answer fake builds.
func shadowAnswer(err error, fake func(*users.ShadowBanError) any) (done bool, resp any, _ error) {
	if err == nil {
		return false, nil, nil
	}
	if sb, ok := users.AsShadowBan(err); ok {
		if fake == nil {
			return true, struct{}{}, nil
		}
		return true, fake(sb), nil
	}
	return true, nil, err
}

// fakeEventID answers a shadow-banned send or redaction with an event ID
// that names no event, as Synapse does.
func fakeEventID(sb *users.ShadowBanError) any { return map[string]string{"event_id": sb.FakeEventID} }
