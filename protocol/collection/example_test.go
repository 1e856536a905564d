package collection_test

import (
	"crypto/rand"
	"fmt"
	"time"

	"github.com/ipfs/go-cid"
	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"
	mh "github.com/multiformats/go-multihash"

	"github.com/weft-p2p/weft/protocol/collection"
)

// Example shows the life of a collection without any network: the creator
// makes it and grants a second member the right to write; each member
// keeps its own replica; the blocks one replica writes are handed to the
// other (node/ does this over gossipsub and the block exchange), and both
// end with the same items.
func Example() {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	aliceKey, _, _ := crypto.GenerateEd25519Key(rand.Reader)
	bobKey, _, _ := crypto.GenerateEd25519Key(rand.Reader)
	bob, _ := peer.IDFromPrivateKey(bobKey)

	desc, err := collection.NewDescriptor("photos", aliceKey.GetPublic(), 2)
	if err != nil {
		panic(err)
	}
	cfg := collection.DefaultConfig()
	alice, _ := collection.New(desc, aliceKey, cfg, now)
	bobs, _ := collection.New(desc, bobKey, cfg, now)

	// Alice grants Bob and adds an item; every change is a signed delta
	// block. Bob applies them in any order: a delta waits for its parents.
	grant, _ := alice.Grant(bob)
	added, err := alice.Add(collection.AddItem{Cid: item("holiday.jpg"), Label: "holiday"})
	if err != nil {
		panic(err)
	}
	for _, b := range append(added, grant...) {
		if _, err := bobs.AddBlock(b); err != nil {
			panic(err)
		}
	}
	// Bob may now write too; Alice applies his delta the same way.
	fromBob, _ := bobs.Add(collection.AddItem{Cid: item("beach.jpg"), Label: "beach", Replication: 3})
	for _, b := range fromBob {
		alice.AddBlock(b)
	}

	fmt.Println("Bob can write:", bobs.CanWrite())
	// Items come in CID order, the same on every replica.
	for _, c := range []*collection.Collection{alice, bobs} {
		fmt.Print(c.Len(), " items:")
		for _, it := range c.Items() {
			fmt.Printf(" %s (R=%d)", it.Label, it.Effective)
		}
		fmt.Println()
	}
	// Output:
	// Bob can write: true
	// 2 items: holiday (R=2) beach (R=3)
	// 2 items: holiday (R=2) beach (R=3)
}

// ExampleHolders shows allocation: which members pin an item is a
// deterministic function of the item and the live members (rendezvous
// hashing), so every member computes the same holders without talking, and
// a member leaving moves only the items it held.
func ExampleHolders() {
	var members []peer.ID
	for range 5 {
		k, _, _ := crypto.GenerateEd25519Key(rand.Reader)
		id, _ := peer.IDFromPrivateKey(k)
		members = append(members, id)
	}
	it := item("report.pdf")
	holders := collection.Holders(it, members, 3)
	again := collection.Holders(it, []peer.ID{members[4], members[3], members[2], members[1], members[0]}, 3)
	fmt.Println(len(holders), "holders; same on every member:", fmt.Sprint(holders) == fmt.Sprint(again))

	// One member that is not a holder leaves: the holders stay.
	var rest []peer.ID
	for _, m := range members {
		if m != notIn(members, holders) {
			rest = append(rest, m)
		}
	}
	fmt.Println("unchanged after a non-holder leaves:", fmt.Sprint(collection.Holders(it, rest, 3)) == fmt.Sprint(holders))
	// Output:
	// 3 holders; same on every member: true
	// unchanged after a non-holder leaves: true
}

// item makes an item CID from a name, as a file's dag-pb CID would be.
func item(name string) cid.Cid {
	h, _ := mh.Sum([]byte(name), mh.SHA2_256, -1)
	return cid.NewCidV0(h)
}

// notIn returns the first of all that is not in some.
func notIn(all, some []peer.ID) peer.ID {
	for _, a := range all {
		found := false
		for _, s := range some {
			found = found || a == s
		}
		if !found {
			return a
		}
	}
	return ""
}
