package collection

import (
	"crypto/sha256"
	"encoding/binary"

	"github.com/ipfs/go-cid"
	"github.com/libp2p/go-libp2p/core/peer"
)

// Allocation uses rendezvous (highest random weight) hashing: the weight
// of member m for item i is the first 8 bytes, big-endian, of
//
//	sha256(sha256("weft/collection/hrw/item\n" || i) ||
//	       sha256("weft/collection/hrw/member\n" || m))
//
// and the holders of i are the R members of highest weight (ties, which
// need a hash collision, go to the smaller peer ID). Every member computes
// the same holders from the same member set, and adding or removing one
// member moves only the items for which it is, or was, among the top R:
// about R/N of them.

func itemDigest(c cid.Cid) [32]byte {
	h := sha256.New()
	h.Write([]byte("weft/collection/hrw/item\n"))
	h.Write([]byte(c.KeyString()))
	var out [32]byte
	h.Sum(out[:0])
	return out
}

func memberDigest(p peer.ID) [32]byte {
	h := sha256.New()
	h.Write([]byte("weft/collection/hrw/member\n"))
	h.Write([]byte(p))
	var out [32]byte
	h.Sum(out[:0])
	return out
}

func hrwWeight(item, member *[32]byte) uint64 {
	var buf [64]byte
	copy(buf[:32], item[:])
	copy(buf[32:], member[:])
	sum := sha256.Sum256(buf[:])
	return binary.BigEndian.Uint64(sum[:8])
}

// Holders returns the r members (all of them if there are fewer) that hold
// item, highest weight first. members should hold no duplicates.
func Holders(item cid.Cid, members []peer.ID, r int) []peer.ID {
	id := itemDigest(item)
	md := make([][32]byte, len(members))
	for i, m := range members {
		md[i] = memberDigest(m)
	}
	return topR(&id, members, md, r, nil)
}

// topR selects the r members of highest weight for an item digest, in
// order, appending to out.
func topR(item *[32]byte, members []peer.ID, md [][32]byte, r int, out []peer.ID) []peer.ID {
	if r > len(members) {
		r = len(members)
	}
	if r <= 0 {
		return out
	}
	type cand struct {
		w uint64
		i int
	}
	var stack [8]cand
	top := stack[:0]
	if r > len(stack) {
		top = make([]cand, 0, r)
	}
	better := func(a, b cand) bool {
		if a.w != b.w {
			return a.w > b.w
		}
		return members[a.i] < members[b.i]
	}
	for i := range members {
		c := cand{hrwWeight(item, &md[i]), i}
		if len(top) == r && !better(c, top[r-1]) {
			continue
		}
		if len(top) < r {
			top = append(top, c)
		} else {
			top[r-1] = c
		}
		for j := len(top) - 1; j > 0 && better(top[j], top[j-1]); j-- {
			top[j], top[j-1] = top[j-1], top[j]
		}
	}
	for _, c := range top {
		out = append(out, members[c.i])
	}
	return out
}
