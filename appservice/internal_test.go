package appservice

import (
	"strings"
	"testing"
)

// TestInternal: an internal registration reserves exactly its user, and a
// file that claims the user stops the start.
func TestInternal(t *testing.T) {
	bot := Internal("tessera-webhooks", "webhooks", "example.org")
	set, err := NewSet("example.org", []*Registration{bot})
	if err != nil {
		t.Fatal(err)
	}
	if set.ExclusiveUserOwner("@webhooks:example.org") != bot {
		t.Error("the bot's user is not reserved")
	}
	for _, other := range []string{"@webhooks2:example.org", "@xwebhooks:example.org", "@webhooks:example.org.evil", "@alice:example.org"} {
		if set.ExclusiveUserOwner(other) != nil {
			t.Errorf("%s is reserved", other)
		}
	}
	if bot.URL != nil {
		t.Error("an internal service has a URL")
	}
	greedy, err := ParseRegistration([]byte(`id: bridge
url: null
as_token: a
hs_token: h
sender_localpart: bridge
namespaces:
  users:
    - exclusive: true
      regex: "@web.*:example.org"
`))
	if err != nil {
		t.Fatal(err)
	}
	greedy.Path = "bridge.yaml"
	if _, err := NewSet("example.org", []*Registration{greedy, bot}); err == nil || !strings.Contains(err.Error(), "webhooks") {
		t.Errorf("a registration claiming the bot: %v", err)
	}
}
