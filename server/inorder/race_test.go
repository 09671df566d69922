//go:build race

package inorder

// raceEnabled: the race detector's scheduler puts a woken goroutine in the
// scheduler's next slot only half the time, on purpose, so no run order
// holds under it.
const raceEnabled = true
