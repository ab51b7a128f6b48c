package appservice

import (
	"testing"

	"github.com/tessera-hs/tessera/internal/mxerr"
)

// TestAliasRules: exclusive alias namespaces are their service's, for its
// sender and the users of its namespaces; a service itself stays in its
// alias namespaces.
// https://spec.matrix.org/v1.19/application-service-api/#server-admin-style-permissions
func TestAliasRules(t *testing.T) {
	tg := reg(t, telegram)
	set, err := NewSet(serverName, []*Registration{tg})
	if err != nil {
		t.Fatal(err)
	}
	var none *Set
	code := func(err error) string {
		if err == nil {
			return ""
		}
		if e, ok := mxerr.As(err); ok && e.Status == 400 {
			return e.Code
		}
		return err.Error()
	}
	for _, c := range []struct {
		name string
		err  error
		want string
	}{
		{"ordinary user, reserved alias", set.CheckNewAlias("#telegram_x:hs.test", "@alice:hs.test"), "M_EXCLUSIVE"},
		{"ordinary user, free alias", set.CheckNewAlias("#x:hs.test", "@alice:hs.test"), ""},
		{"the sender", set.CheckNewAlias("#telegram_x:hs.test", "@telegrambot:hs.test"), ""},
		{"a puppet", set.CheckNewAlias("#telegram_x:hs.test", "@telegram_1:hs.test"), ""},
		{"no services", none.CheckNewAlias("#telegram_x:hs.test", "@alice:hs.test"), ""},
		{"the service, its alias", tg.CheckOwnAlias("#telegram_x:hs.test"), ""},
		{"the service, another alias", tg.CheckOwnAlias("#x:hs.test"), "M_EXCLUSIVE"},
	} {
		if got := code(c.err); got != c.want {
			t.Errorf("%s: %q, want %q", c.name, got, c.want)
		}
	}
	if got := set.ForProtocol("telegram"); len(got) != 0 {
		t.Errorf("ForProtocol without protocols = %v", got)
	}
	if InstanceID("telegram", "tg") != "telegram|tg" {
		t.Errorf("InstanceID = %q", InstanceID("telegram", "tg"))
	}
}
