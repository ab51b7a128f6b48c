package cluster_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"sync"
	"testing"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/id"

	"github.com/tessera-hs/tessera/internal/cluster"
	"github.com/tessera-hs/tessera/internal/testserver"
)

// scaleOut is the set-up the scale-out tests share: three instances on
// one PostgreSQL database, two users and one room owned by each instance.
type scaleOut struct {
	names []string // "a", "b", "c"
	srv   map[string]*testserver.Server
	m     *cluster.Map // as every instance computes it
	// alice is registered through a, bob through c.
	alice, bob *mautrix.Client
	// rooms has a public room per instance, owned by it: created by alice
	// through that instance, with bob invited (not joined).
	rooms map[string]id.RoomID
}

// startScaleOut starts the shared set-up (it skips or fails without
// PostgreSQL, see testserver.MissingPostgres); opts apply to every
// instance.
func startScaleOut(t *testing.T, opts ...testserver.Option) *scaleOut {
	t.Helper()
	c := &scaleOut{names: []string{"a", "b", "c"}}
	c.srv = testserver.StartCluster(t, c.names, opts...)
	var err error
	if c.m, err = cluster.New(c.srv["a"].Config); err != nil {
		t.Fatal(err)
	}
	c.alice = c.srv["a"].Register("alice", "password-alice")
	c.bob = c.srv["c"].Register("bob", "password-bob")
	c.rooms = map[string]id.RoomID{}
	for _, name := range c.names {
		c.rooms[name] = c.createRoom(t, name, &mautrix.ReqCreateRoom{Preset: "public_chat", Invite: []id.UserID{c.bob.UserID}})
	}
	return c
}

// createRoom creates a room as alice through instance via, and checks
// that via owns it: a room is created by its owner.
func (c *scaleOut) createRoom(t *testing.T, via string, req *mautrix.ReqCreateRoom) id.RoomID {
	t.Helper()
	resp, err := as(c.srv[via], c.alice).CreateRoom(context.Background(), req)
	if err != nil {
		t.Fatalf("create room through %s: %v", via, err)
	}
	if o := c.m.Owner(resp.RoomID.String()); o != via {
		t.Fatalf("room %s created through %s is owned by %s", resp.RoomID, via, o)
	}
	return resp.RoomID
}

// joinAll makes u join every room of the set-up (through u's instance,
// forwarded to the owners).
func (c *scaleOut) joinAll(t *testing.T, u *mautrix.Client) {
	t.Helper()
	for _, roomID := range c.rooms {
		if _, err := u.JoinRoomByID(context.Background(), roomID); err != nil {
			t.Fatalf("%s joins %s: %v", u.UserID, roomID, err)
		}
	}
}

// as returns a client of srv logged in with c's credentials (the same
// device: tokens live in the shared database).
func as(srv *testserver.Server, c *mautrix.Client) *mautrix.Client {
	cc := srv.Client(c.UserID, c.AccessToken)
	cc.DeviceID = c.DeviceID
	return cc
}

// isBadGateway reports whether err is the 502 M_UNKNOWN a write to a room
// whose owner is down gets.
func isBadGateway(err error) bool {
	var he mautrix.HTTPError
	return errors.As(err, &he) && he.Response != nil && he.Response.StatusCode == http.StatusBadGateway &&
		he.RespError != nil && he.RespError.ErrCode == "M_UNKNOWN"
}

// sendFromAll has alice send perWriter messages into every room of the
// set-up through every instance at once (a writer per instance and room),
// and returns the IDs of the events sent.
func (c *scaleOut) sendFromAll(t *testing.T, perWriter int) []string {
	t.Helper()
	var (
		mu   sync.Mutex
		sent []string
		wg   sync.WaitGroup
	)
	for _, via := range c.names {
		for owner, roomID := range c.rooms {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := range perWriter {
					resp, err := as(c.srv[via], c.alice).SendText(context.Background(), roomID, fmt.Sprintf("%s %s %d", via, owner, i))
					if err != nil {
						t.Errorf("send through %s: %v", via, err)
						return
					}
					mu.Lock()
					sent = append(sent, resp.EventID.String())
					mu.Unlock()
				}
			}()
		}
	}
	wg.Wait()
	return sent
}
