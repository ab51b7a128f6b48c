package roomserver

import (
	"slices"
	"testing"
)

func TestSearchTerms(t *testing.T) {
	tests := []struct {
		term string
		want []string
	}{
		{"Pineapple", []string{"pineapple"}},
		{`"quoted" OR NEAR(x*)`, []string{"quoted", "or", "near", "x"}},
		{"fish & chips, fish", []string{"fish", "chips"}},
		{"  ", []string{}},
		{"café 42", []string{"café", "42"}},
	}
	for _, tt := range tests {
		if got := searchTerms(tt.term); !slices.Equal(got, tt.want) {
			t.Errorf("searchTerms(%q) = %q, want %q", tt.term, got, tt.want)
		}
	}
}

func TestHighlightWords(t *testing.T) {
	got := highlightWords("Pineapples and PINE trees, apple", []string{"pine"})
	if want := []string{"pineapples", "pine"}; !slices.Equal(got, want) {
		t.Fatalf("highlightWords = %q, want %q", got, want)
	}
}
