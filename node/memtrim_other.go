//go:build !linux

package node

// releaseBinaryPages does nothing off Linux.
func releaseBinaryPages() (int64, error) { return 0, nil }
