package server

import (
	"context"
	"encoding/json"
	"time"

	"github.com/tessera-hs/tessera/appservice"
	"github.com/tessera-hs/tessera/syncapi"
	"github.com/tessera-hs/tessera/users"
)

// initAppServices starts pushing to the registered application services:
// committed room events, typing, receipts, presence, to-device messages
// and device list changes (appservice.Service), each told here by the
// domain that has it. The senders start in startAppServices, once the
// server is wired.
func (s *Server) initAppServices(ctx context.Context) error {
	td := s.Sync.ToDevice()
	svc, err := appservice.New(ctx, s.db, s.appServices, s.Rooms, toDeviceReader{td}, receiptsReader{s.Users}, s.Keys,
		s.appServiceConfig(), s.log.WithField("component", "appservice"))
	if err != nil {
		return err
	}
	s.asPush = svc
	s.Users.SetUnknownUserQuery(svc.QueryUser)
	s.Rooms.SetAliasQuery(svc.QueryAlias)
	if s.cluster != nil {
		// The process that pushes to a service reads every event from
		// the database, whoever committed it, and must be woken by all.
		s.Rooms.SubscribeAll(svc.OnEvents)
	} else {
		s.Rooms.Subscribe(svc.OnEvents)
	}
	s.Sync.Typing().SetChangeHook(svc.Typing)
	td.SetDeliveredHook(svc.ToDeviceDelivered)
	// Federation replaces this hook with one that calls presenceToAppServices too.
	s.Sync.Presence().SetPublishHook(func(_ context.Context, userID string) { s.presenceToAppServices(userID) })
	return nil
}

// appServiceConfig is the application services' config: in a cluster,
// each service is pushed to by one process, its ID's owner.
func (s *Server) appServiceConfig() appservice.Config {
	if s.cluster == nil {
		return appservice.Config{}
	}
	return appservice.Config{Owns: func(asID string) bool { return s.cluster.Owns("appservice " + asID) }}
}

// presenceToAppServices hands a published presence change to the services.
func (s *Server) presenceToAppServices(userID string) {
	if s.asPush == nil || !s.asPush.WantsEphemeral() {
		return
	}
	st, err := s.Users.Presence(context.Background(), userID)
	if err != nil || st == nil {
		return
	}
	c := map[string]any{"presence": st.Presence, "currently_active": st.CurrentlyActive}
	if st.LastActiveTS > 0 {
		c["last_active_ago"] = max(time.Now().UnixMilli()-st.LastActiveTS, 0)
	}
	if st.StatusMsg != "" {
		c["status_msg"] = st.StatusMsg
	}
	s.asPush.Presence(userID, c)
}

// toDeviceReader adapts the to-device queue to what the senders read.
type toDeviceReader struct{ t *syncapi.ToDevice }

func (r toDeviceReader) Pos() int64 { return r.t.Pos() }

func (r toDeviceReader) MessagesAfter(ctx context.Context, from int64, limit int) ([]appservice.ToDeviceMessage, error) {
	msgs, err := r.t.MessagesAfter(ctx, from, limit)
	if err != nil {
		return nil, err
	}
	out := make([]appservice.ToDeviceMessage, len(msgs))
	for i, m := range msgs {
		out[i] = appservice.ToDeviceMessage(m)
	}
	return out, nil
}

func (r toDeviceReader) AckDevice(ctx context.Context, userID, deviceID string, pos int64) error {
	return r.t.AckDevice(ctx, userID, deviceID, pos)
}

// receiptsReader adapts the receipts to what the senders read.
type receiptsReader struct{ us *users.Service }

func (r receiptsReader) Pos(ctx context.Context) (int64, error) { return r.us.ReceiptsPos(ctx) }

func (r receiptsReader) Since(ctx context.Context, roomID string, since int64) (json.RawMessage, int64, error) {
	// No viewer: nobody's private receipts.
	rs, err := r.us.ReceiptsSince(ctx, "", []string{roomID}, since)
	if err != nil {
		return nil, since, err
	}
	pos := since
	for _, rc := range rs {
		pos = max(pos, rc.StreamPos)
	}
	if len(rs) == 0 {
		return nil, pos, nil
	}
	raw, err := json.Marshal(users.ReceiptContent(rs))
	return raw, pos, err
}
