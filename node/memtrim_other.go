//go:build !linux

package node

import "time"

// releaseBinaryPages does nothing off Linux.
func releaseBinaryPages() (int64, error) { return 0, nil }

// processCPU is unknown off Linux: the trimmer goes by allocations alone.
func processCPU() time.Duration { return 0 }
