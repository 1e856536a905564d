package p2p

import "testing"

// TestLowPeersDefaults: 0 takes the default of 4, a negative LowPeers
// stays negative (no peer count is below it: the redial never fires).
func TestLowPeersDefaults(t *testing.T) {
	for _, tt := range []struct{ in, want int }{{0, 4}, {-1, -1}, {2, 2}} {
		c := Config{LowPeers: tt.in}
		c.setDefaults()
		if c.LowPeers != tt.want {
			t.Errorf("LowPeers %d became %d, want %d", tt.in, c.LowPeers, tt.want)
		}
	}
}
