package appservice

import (
	"crypto/rand"
	"encoding/hex"
	"regexp"
)

// Internal is the registration of a service built into the server, such
// as the webhooks bot: no URL (nothing is pushed to it), random tokens no
// one is told, and an exclusive namespace holding only its own user, so
// that nobody can register that user or claim it in another registration.
func Internal(id, senderLocalpart, serverName string) *Registration {
	token := func() string {
		b := make([]byte, 32)
		_, _ = rand.Read(b)
		return hex.EncodeToString(b)
	}
	userID := "@" + senderLocalpart + ":" + serverName
	expr := regexp.QuoteMeta(userID)
	return &Registration{
		Path:            "(internal: " + id + ")",
		ID:              id,
		ASToken:         token(),
		HSToken:         token(),
		SenderLocalpart: senderLocalpart,
		Namespaces: Namespaces{Users: []Namespace{{
			Exclusive: true,
			Regex:     expr,
			re:        regexp.MustCompile(`^(?:` + expr + `)$`),
		}}},
	}
}
