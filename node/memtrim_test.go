package node

import (
	"testing"
	"time"
)

func TestShouldTrim(t *testing.T) {
	const mib = 1 << 20
	for _, tc := range []struct {
		name      string
		prev, cur memStats
		want      bool
	}{
		{"quiet with garbage", memStats{allocs: 100 * mib}, memStats{allocs: 105 * mib, objects: 20 * mib, live: 8 * mib}, true},
		{"quiet with free pages", memStats{allocs: 100 * mib}, memStats{allocs: 101 * mib, objects: 8 * mib, live: 8 * mib, free: 6 * mib}, true},
		{"quiet and tidy", memStats{allocs: 100 * mib}, memStats{allocs: 101 * mib, objects: 9 * mib, live: 8 * mib, free: mib / 2}, false},
		{"busy", memStats{allocs: 100 * mib}, memStats{allocs: 400 * mib, objects: 60 * mib, live: 8 * mib}, false},
		{"busy outside the heap", memStats{allocs: 100 * mib, cpu: time.Second}, memStats{allocs: 101 * mib, cpu: 3 * time.Second, objects: 20 * mib, live: 8 * mib}, false},
		{"live above objects (collection in flight)", memStats{}, memStats{allocs: mib, objects: 8 * mib, live: 9 * mib}, false},
	} {
		if got := shouldTrim(tc.prev, tc.cur); got != tc.want {
			t.Errorf("%s: shouldTrim = %v, want %v", tc.name, got, tc.want)
		}
	}
}
