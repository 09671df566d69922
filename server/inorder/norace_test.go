//go:build !race

package inorder

const raceEnabled = false
