package node

import "testing"

// TestLowPeersZeroIsOff: dht.low_peers = 0 reaches p2p as "never" (a
// negative LowPeers), not as p2p's default of 4; other values pass as they
// are, and a negative one is refused.
func TestLowPeersZeroIsOff(t *testing.T) {
	tests := []struct{ cfg, p2p int }{{0, -1}, {1, 1}, {4, 4}}
	for _, tt := range tests {
		if got := lowPeers(tt.cfg); got != tt.p2p {
			t.Errorf("lowPeers(%d) = %d, want %d", tt.cfg, got, tt.p2p)
		}
	}
	c, err := DefaultConfig(ProfileLocal)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Set("dht.low_peers", "0"); err != nil {
		t.Fatalf("low_peers 0: %v", err)
	}
	if err := c.Set("dht.low_peers", "-1"); err == nil {
		t.Fatal("low_peers -1 accepted")
	}
}
