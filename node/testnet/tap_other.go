//go:build !linux

package testnet

import (
	"errors"
	"os"
)

func tapAvailable() string { return "not Linux" }

func openTAP(netns, dev string) (*os.File, error) {
	return nil, errors.New("TAP devices need Linux")
}
