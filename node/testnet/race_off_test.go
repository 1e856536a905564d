//go:build !race

package testnet

// raceDetector says whether the tests run under the race detector.
const raceDetector = false
