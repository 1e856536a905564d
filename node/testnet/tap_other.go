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

func inNetns(netns string, fn func() error) error {
	if netns == "" {
		return fn()
	}
	return errors.New("network namespaces need Linux")
}
