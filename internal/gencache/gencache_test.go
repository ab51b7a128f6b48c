package gencache

import "testing"

func TestCache(t *testing.T) {
	c := New[string, int](2)
	tests := []struct {
		name string
		do   func()
		key  string
		want int
		ok   bool
	}{
		{"empty", func() {}, "a", 0, false},
		{"put then get", func() { c.Put("a", c.Generation(), 1) }, "a", 1, true},
		{"invalidated", func() { c.Invalidate() }, "a", 0, false},
		{"read before an invalidation is not stored", func() {
			gen := c.Generation()
			c.Invalidate()
			c.Put("a", gen, 2)
		}, "a", 0, false},
		{"bounded: full starts again empty", func() {
			g := c.Generation()
			c.Put("a", g, 1)
			c.Put("b", g, 2)
			c.Put("c", g, 3)
		}, "a", 0, false},
		{"the newest entry survives the reset", func() {}, "c", 3, true},
	}
	for _, tt := range tests {
		tt.do()
		if v, ok := c.Get(tt.key); v != tt.want || ok != tt.ok {
			t.Errorf("%s: Get(%q) = %d, %v; want %d, %v", tt.name, tt.key, v, ok, tt.want, tt.ok)
		}
	}
}
