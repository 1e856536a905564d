package testnet

import (
	"context"
	"os/exec"

	"github.com/weft-p2p/weft/node/api"
)

// cluster is what a scenario runs on: real daemons (*Testnet) or weft
// nodes in one process on simulated links (*simCluster, sim.go). The
// runner and the actions table see only this.
type cluster interface {
	state() *State
	Client(n *NodeState) *api.Client
	Start(ctx context.Context, names []string) error
	Stop(ctx context.Context, names []string) error
	Kill(ctx context.Context, names []string) error
	Restart(ctx context.Context, names []string) error
	Partition(ctx context.Context, groups [][]string) error
	Heal(ctx context.Context) error
	Shape(ctx context.Context, names []string, s Shape) error
	Down(ctx context.Context, removeDir bool) error
	// Command prepares a weft command run as the named node (attack).
	Command(name string, args []string) (*exec.Cmd, error)
	nodes(names []string) ([]*NodeState, error)
	parallel(nodes []*NodeState, conc int, fn func(*NodeState) error) error
	// isUp says whether a node runs.
	isUp(n *NodeState) bool
}

var _ cluster = (*Testnet)(nil)

func (t *Testnet) state() *State          { return t.st }
func (t *Testnet) isUp(n *NodeState) bool { return n.alive() }
