package roomserver

import (
	"testing"

	"github.com/tessera-hs/tessera/internal/mxerr"
)

func TestParseToken(t *testing.T) {
	for _, tt := range []struct {
		in   string
		want Token
	}{
		{"t5_12", Token{Depth: 5, Stream: 12}},
		{"t0_0", Token{}},
		{"t3_-1", Token{Depth: 3, Stream: -1}}, // before(ev) of a stream-less event
		{"s42", Token{Stream: 42, Live: true}},
		{"s42_1_0_1796588640578_2_0_3", Token{Stream: 42, Live: true}}, // a /sync next_batch
		{"s0_0_0_0_0_0_0", Token{Stream: 0, Live: true}},
	} {
		got, err := ParseToken(tt.in)
		if err != nil || got != tt.want {
			t.Errorf("ParseToken(%q) = %+v, %v; want %+v", tt.in, got, err, tt.want)
		}
		if back, err := ParseToken(got.String()); err != nil || back != got {
			t.Errorf("ParseToken(%q.String() = %q) = %+v, %v; want it back", tt.in, got.String(), back, err)
		}
	}
	for _, in := range []string{"", "x", "t", "t1", "t1_", "tx_1", "t1_x", "s", "sx", "s1_x", "s-1", "s1__2", "S1"} {
		_, err := ParseToken(in)
		if me, ok := mxerr.As(err); !ok || me.Status != 400 || me.Code != "M_INVALID_PARAM" {
			t.Errorf("ParseToken(%q) error = %v, want 400 M_INVALID_PARAM", in, err)
		}
	}
}
