package adversary

import (
	"sync"
	"time"

	pubsub "github.com/libp2p/go-libp2p-pubsub"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"
)

// sendCounter is a gossipsub tracer counting, per peer, the published
// messages sent and the ones dropped from a full queue.
type sendCounter struct {
	mu      sync.Mutex
	sent    map[peer.ID]int
	dropped map[peer.ID]int
}

func newSendCounter() *sendCounter {
	return &sendCounter{sent: map[peer.ID]int{}, dropped: map[peer.ID]int{}}
}

func (c *sendCounter) get(p peer.ID) (sent, dropped int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.sent[p], c.dropped[p]
}

func (c *sendCounter) SendRPC(rpc *pubsub.RPC, p peer.ID) {
	c.mu.Lock()
	c.sent[p] += len(rpc.GetPublish())
	c.mu.Unlock()
}

func (c *sendCounter) DropRPC(rpc *pubsub.RPC, p peer.ID) {
	c.mu.Lock()
	c.dropped[p] += len(rpc.GetPublish())
	c.mu.Unlock()
}

func (c *sendCounter) OnNewOutboundStream(peer.ID, protocol.ID)             {}
func (c *sendCounter) OnClosedOutboundStream(peer.ID)                       {}
func (c *sendCounter) Join(string)                                          {}
func (c *sendCounter) Leave(string)                                         {}
func (c *sendCounter) Graft(peer.ID, string)                                {}
func (c *sendCounter) Prune(peer.ID, string)                                {}
func (c *sendCounter) ValidateMessage(*pubsub.Message)                      {}
func (c *sendCounter) DeliverMessage(*pubsub.Message)                       {}
func (c *sendCounter) RejectMessage(*pubsub.Message, string)                {}
func (c *sendCounter) DuplicateMessage(*pubsub.Message)                     {}
func (c *sendCounter) ThrottlePeer(peer.ID)                                 {}
func (c *sendCounter) RecvRPC(*pubsub.RPC)                                  {}
func (c *sendCounter) UndeliverableMessage(*pubsub.Message)                 {}
func (c *sendCounter) SendRPCCompleted(*pubsub.RPC, peer.ID, time.Duration) {}
