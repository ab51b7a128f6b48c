//go:build race

package web_test

// raceEnabled: the race detector slows the server several times over, so
// timing targets meant for a real build are reported, not asserted.
const raceEnabled = true
