package clientapi_test

import (
	"context"
	"fmt"
	"testing"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/synapseadmin"

	"github.com/tessera-hs/tessera/internal/testserver"
)

// BenchmarkAdminListRooms lists 300 rooms, 100 a page, ordered by joined
// members: what synapse-admin's room list asks for. The list is built in
// memory from a few grouped queries on each request, so one op (a page)
// costs about the same whatever the page.
func BenchmarkAdminListRooms(b *testing.B) {
	srv := testserver.Start(b)
	bg := context.Background()
	root, err := (&synapseadmin.Client{Client: srv.Client("", "")}).SharedSecretRegister(bg, testserver.SharedSecret,
		synapseadmin.ReqSharedSecretRegister{Username: "root", Password: "root-password", Admin: true})
	if err != nil {
		b.Fatal(err)
	}
	owner := srv.Register("owner", "benchmark password")
	for i := range 300 {
		if _, err := owner.CreateRoom(bg, &mautrix.ReqCreateRoom{Preset: "public_chat", Name: fmt.Sprintf("room %d", i)}); err != nil {
			b.Fatal(err)
		}
	}
	ac := &synapseadmin.Client{Client: srv.Client(root.UserID, root.AccessToken)}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		list, err := ac.ListRooms(bg, synapseadmin.ReqListRoom{OrderBy: "joined_members", From: 100 * (i % 3), Limit: 100})
		if err != nil || list.TotalRooms != 300 || len(list.Rooms) != 100 {
			b.Fatalf("list rooms: %v %d %d", err, list.TotalRooms, len(list.Rooms))
		}
	}
}
