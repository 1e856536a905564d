//go:build !linux

package proc

import "time"

// SelfCPU is unknown off Linux: 0.
func SelfCPU() time.Duration { return 0 }
