package p2p

import (
	"testing"

	lp2pconnmgr "github.com/libp2p/go-libp2p/core/connmgr"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/p2p/net/connmgr"
)

func TestDHTUnprotected(t *testing.T) {
	cm, err := connmgr.NewConnManager(1, 2)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cm.Close() })
	const p = peer.ID("peer")
	for _, tc := range []struct {
		unprotect bool
		protected bool // after the DHT protects p
		value     int  // p's tag value; 0: not tagged
	}{
		{unprotect: false, protected: true, value: 0},
		{unprotect: true, protected: false, value: kbucketValue},
	} {
		m := hostConnManager(cm, tc.unprotect)
		m.Protect(p, kbucketTag)
		if got := m.IsProtected(p, ""); got != tc.protected {
			t.Errorf("unprotect %v: DHT-protected peer protected = %v, want %v", tc.unprotect, got, tc.protected)
		}
		value := 0
		if info := m.GetTagInfo(p); info != nil {
			value = info.Value
		}
		if value != tc.value {
			t.Errorf("unprotect %v: tag value %d, want %d", tc.unprotect, value, tc.value)
		}
		// Any other protection stays, and survives the DHT's unprotect.
		m.Protect(p, "pubsub:topic")
		if !m.Unprotect(p, kbucketTag) {
			t.Errorf("unprotect %v: a mesh peer lost its protection with the DHT's", tc.unprotect)
		}
		if m.Unprotect(p, "pubsub:topic") {
			t.Errorf("unprotect %v: still protected after every tag's unprotect", tc.unprotect)
		}
		m.UntagPeer(p, kbucketTag)
		if _, ok := lp2pconnmgr.SupportsDecay(m); !ok {
			t.Errorf("unprotect %v: no Decayer (gossipsub's delivery tags need it)", tc.unprotect)
		}
	}
}
