package appservice

import (
	"strings"
	"testing"
)

const serverName = "hs.test"

func reg(t *testing.T, yml string) *Registration {
	t.Helper()
	r, err := ParseRegistration([]byte(yml))
	if err != nil {
		t.Fatalf("parse: %v", err)
	}
	r.Path = r.ID + ".yaml"
	return r
}

const telegram = `
id: telegram
url: http://localhost:29317
as_token: as-telegram
hs_token: hs-telegram
sender_localpart: telegrambot
rate_limited: false
de.sorunome.msc2409.push_ephemeral: true
org.matrix.msc3202: true
io.element.msc4190: true
namespaces:
  users:
    - exclusive: true
      regex: '@telegram_.*:hs\.test'
  aliases:
    - exclusive: true
      regex: '#telegram_.*:hs\.test'
`

func TestParseRegistration(t *testing.T) {
	r := reg(t, telegram)
	if r.IsRateLimited() || !r.Ephemeral() || !r.MSC3202 || !r.MSC4190 {
		t.Fatalf("flags: %+v", r)
	}
	for _, c := range []struct {
		user      string
		interest  bool
		exclusive bool
	}{
		{"@telegram_123:hs.test", true, true},
		{"@telegrambot:hs.test", true, false},
		{"@alice:hs.test", false, false},
		{"@telegram_1:other.test", false, false},
	} {
		if got := r.InterestedInUser(c.user, serverName); got != c.interest {
			t.Errorf("InterestedInUser(%s) = %v", c.user, got)
		}
		if got := r.ExclusiveUser(c.user); got != c.exclusive {
			t.Errorf("ExclusiveUser(%s) = %v", c.user, got)
		}
	}
	if !r.ExclusiveAlias("#telegram_chat:hs.test") || r.ExclusiveAlias("#chat:hs.test") {
		t.Error("alias namespace")
	}
}

func TestParseRegistrationErrors(t *testing.T) {
	for _, c := range []struct{ yml, want string }{
		{``, "empty"},
		{`id: x`, "as_token: missing"},
		{"id: x\nas_token: a\nhs_token: h\n", "sender_localpart: missing"},
		{"id: x\nas_token: a\nhs_token: h\nsender_localpart: bot\nurl: ftp://x\n", "url:"},
		{"id: x\nas_token: a\nhs_token: h\nsender_localpart: bot\nnamespaces:\n  users:\n    - regex: '@a(:hs'\n", "namespaces.users[0].regex"},
		{"id: [x\n", "yaml"},
	} {
		_, err := ParseRegistration([]byte(c.yml))
		if err == nil || !strings.Contains(err.Error(), c.want) || strings.Contains(err.Error(), "\n") {
			t.Errorf("%q: error %v, want one line with %q", c.yml, err, c.want)
		}
	}
}

func TestNewSet(t *testing.T) {
	a := reg(t, telegram)
	other := func(id, regex string, exclusive bool) *Registration {
		ex := "false"
		if exclusive {
			ex = "true"
		}
		return reg(t, "id: "+id+"\nas_token: as-"+id+"\nhs_token: hs-"+id+"\nsender_localpart: "+id+"bot\n"+
			"namespaces:\n  users:\n    - exclusive: "+ex+"\n      regex: '"+regex+"'\n")
	}
	if _, err := NewSet(serverName, []*Registration{a, other("whatsapp", `@whatsapp_.*:hs\.test`, true)}); err != nil {
		t.Fatalf("distinct services refused: %v", err)
	}
	for _, c := range []struct {
		name string
		b    *Registration
		want string
	}{
		{"same id", other("telegram", `@x_.*`, true), "id:"},
		{"overlapping exclusive", other("tg2", `@telegram_1.*:hs\.test`, true), "overlaps"},
		{"same regex", other("tg3", `@telegram_.*:hs\.test`, true), "overlaps"},
		{"sender in exclusive namespace", other("telegram_x", `@nothing`, true), "sender_localpart"},
	} {
		if _, err := NewSet(serverName, []*Registration{a, c.b}); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: error %v, want %q", c.name, err, c.want)
		}
	}
	// A non-exclusive namespace may overlap.
	if _, err := NewSet(serverName, []*Registration{a, other("watcher", `@telegram_.*:hs\.test`, false)}); err != nil {
		t.Fatalf("non-exclusive overlap refused: %v", err)
	}
	set, _ := NewSet(serverName, []*Registration{a})
	if set.ByASToken("as-telegram") != a || set.ByASToken("as-telegramX") != nil || set.ByASToken("") != nil {
		t.Fatal("ByASToken")
	}
	if set.ExclusiveUserOwner("@telegram_5:hs.test") != a || set.ExclusiveUserOwner("@telegrambot:hs.test") != a ||
		set.ExclusiveUserOwner("@bob:hs.test") != nil {
		t.Fatal("ExclusiveUserOwner")
	}
}
