package clientapi

import (
	"testing"
	"time"

	"github.com/tessera-hs/tessera/internal/config"
)

// TestShadowBanDelay: the delay is drawn from [min, max], both ends
// included; equal bounds (or none) are a fixed delay; the default is
// Synapse's 1 to 10 s.
func TestShadowBanDelay(t *testing.T) {
	lowest := func(n time.Duration) time.Duration { return 0 }
	highest := func(n time.Duration) time.Duration { return n - 1 }
	for _, tc := range []struct {
		name   string
		lo, hi time.Duration
		randN  func(time.Duration) time.Duration
		want   time.Duration
	}{
		{"lowest draw", time.Second, 10 * time.Second, lowest, time.Second},
		{"highest draw", time.Second, 10 * time.Second, highest, 10 * time.Second},
		{"fixed", 300 * time.Millisecond, 300 * time.Millisecond, highest, 300 * time.Millisecond},
		{"none", 0, 0, highest, 0},
	} {
		if got := shadowBanDelay(tc.lo, tc.hi, tc.randN); got != tc.want {
			t.Errorf("%s: %v, want %v", tc.name, got, tc.want)
		}
	}
	m := config.Default().Moderation
	if m.ShadowBanDelayMin.Std() != time.Second || m.ShadowBanDelayMax.Std() != 10*time.Second {
		t.Errorf("default delay %v..%v, want Synapse's 1s..10s", m.ShadowBanDelayMin, m.ShadowBanDelayMax)
	}
}
