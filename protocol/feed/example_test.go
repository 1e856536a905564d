package feed_test

import (
	"crypto/rand"
	"errors"
	"fmt"
	"time"

	"github.com/ipfs/boxo/path"
	"github.com/ipfs/go-cid"
	"github.com/libp2p/go-libp2p/core/crypto"
	mh "github.com/multiformats/go-multihash"

	"github.com/weft-p2p/weft/protocol/feed"
)

// Example shows what a feed is on the wire: the owner signs IPNS records
// for its name, each pointing at content with a higher sequence number; a
// follower checks every record it receives against the name before it
// believes it, and a record signed by anyone else is refused. The Manager
// does the rest (gossip, catch-up, DHT, fetch and pin) around these two
// calls.
func Example() {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	owner, _, _ := crypto.GenerateEd25519Key(rand.Reader)
	name, _ := feed.NameFromKey(owner.GetPublic())
	fmt.Println("topic is per name:", feed.Topic(name) == feed.TopicPrefix+name.String())

	for seq, content := range []string{"first edition", "second edition"} {
		raw, err := feed.NewRecord(owner, contentPath(content), uint64(seq+1), 24*time.Hour, now)
		if err != nil {
			panic(err)
		}
		rec, err := feed.Validate(name, raw, now) // what a follower does
		if err != nil {
			panic(err)
		}
		fmt.Printf("seq %d -> %s: %v\n", rec.Seq, content, rec.Value.RootCid() == contentCID(content))
	}

	// Someone else signs a record and sends it under the owner's name.
	forger, _, _ := crypto.GenerateEd25519Key(rand.Reader)
	forged, _ := feed.NewRecord(forger, contentPath("spam"), 99, 24*time.Hour, now)
	_, err := feed.Validate(name, forged, now)
	fmt.Println("forged record refused:", errors.Is(err, feed.ErrBadSignature))
	// Output:
	// topic is per name: true
	// seq 1 -> first edition: true
	// seq 2 -> second edition: true
	// forged record refused: true
}

func contentCID(s string) cid.Cid {
	h, _ := mh.Sum([]byte(s), mh.SHA2_256, -1)
	return cid.NewCidV1(cid.Raw, h)
}

func contentPath(s string) path.Path { return path.FromCid(contentCID(s)) }
