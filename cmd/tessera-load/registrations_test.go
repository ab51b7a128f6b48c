package main

import (
	"os"
	"testing"
)

// TestReadRSS: the resident memory of this very process is read from
// /proc, and a process that does not exist is an error.
func TestReadRSS(t *testing.T) {
	if _, err := os.Stat("/proc/self/status"); err != nil {
		t.Skip("no /proc on this system")
	}
	rss, err := readRSS(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	if rss < 1<<20 || rss > 1<<40 {
		t.Fatalf("RSS %d bytes, want something a Go test process plausibly holds", rss)
	}
	if _, err := readRSS(1 << 30); err == nil {
		t.Fatal("no error for a process that does not exist")
	}
}
