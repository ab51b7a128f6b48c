package oauth

import "testing"

func TestParseScope(t *testing.T) {
	newID := func() string { return "GENERATED0" }
	for _, tc := range []struct {
		name, scope    string
		wantErr        string
		device, string string
	}{
		{name: "stable", scope: "urn:matrix:client:api:* urn:matrix:client:device:ABCDEFGHIJ",
			device: "ABCDEFGHIJ", string: "urn:matrix:client:api:* urn:matrix:client:device:ABCDEFGHIJ"},
		{name: "unstable names", scope: "urn:matrix:org.matrix.msc2967.client:api:* urn:matrix:org.matrix.msc2967.client:device:abc-def_123",
			device: "abc-def_123", string: "urn:matrix:org.matrix.msc2967.client:api:* urn:matrix:org.matrix.msc2967.client:device:abc-def_123"},
		{name: "no device: one is made", scope: "openid urn:matrix:client:api:*",
			device: "GENERATED0", string: "urn:matrix:client:api:* urn:matrix:client:device:GENERATED0"},
		{name: "no api scope", scope: "urn:matrix:client:device:ABCDEFGHIJ", wantErr: "invalid_scope"},
		{name: "empty", scope: "", wantErr: "invalid_scope"},
		{name: "short device", scope: "urn:matrix:client:api:* urn:matrix:client:device:ABC", wantErr: "invalid_scope"},
		{name: "bad device chars", scope: "urn:matrix:client:api:* urn:matrix:client:device:ABCDEFGHIJ/x", wantErr: "invalid_scope"},
		{name: "two devices", scope: "urn:matrix:client:api:* urn:matrix:client:device:ABCDEFGHIJ urn:matrix:client:device:KLMNOPQRST", wantErr: "invalid_scope"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			g, err := parseScope(tc.scope, newID)
			if tc.wantErr != "" {
				if e, ok := err.(*Error); !ok || e.Code != tc.wantErr {
					t.Fatalf("err = %v, want %s", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if g.DeviceID != tc.device || g.String != tc.string {
				t.Errorf("got %+v, want device %q scope %q", g, tc.device, tc.string)
			}
		})
	}
}
