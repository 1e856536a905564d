package testnet

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/weft-p2p/weft/node/proc"
)

// StateFile is the file in a testnet's directory that lists everything the
// testnet made: processes, namespaces, links. `weft testnet down` reads it,
// so it works after the command that made the testnet crashed. It is
// rewritten (atomically) before each thing is made, not after.
const StateFile = "testnet.json"

// ErrNoTestnet says a directory holds no testnet state.
var ErrNoTestnet = errors.New("no testnet here")

// Modes of a testnet's network.
const (
	ModeNetns    = "netns"    // a network namespace per node on a private bridge
	ModeLoopback = "loopback" // every node on 127.0.0.1
)

// State is what a testnet made and how it is set up.
type State struct {
	ID       string    `json:"id"`   // 6 hex digits; prefixes every namespace and link
	Mode     string    `json:"mode"` // netns or loopback
	Why      string    `json:"why,omitempty"`
	Dir      string    `json:"dir"`
	Bin      string    `json:"bin"` // the weft binary the daemons run
	Created  time.Time `json:"created"`
	Scenario string    `json:"scenario"`
	Seed     int64     `json:"seed"`
	Topology string    `json:"topology"`

	// netns mode
	Subnet     string     `json:"subnet,omitempty"`     // 10.77.K.0/24 (a /23 or /22 past 253 nodes)
	HostIP     string     `json:"host_ip,omitempty"`    // this machine's address on the testnet's bridge
	Switch     string     `json:"switch_ns,omitempty"`  // namespace holding the bridge
	HostLink   string     `json:"host_link,omitempty"`  // veth from this machine to the bridge
	Namespaces []string   `json:"namespaces,omitempty"` // every namespace made, switch included
	Shaping    string     `json:"shaping,omitempty"`    // the mechanism that shapes links: netem, delayline, bandwidth-only or none
	Partition  [][]string `json:"partition,omitempty"`  // groups of the current partition
	NeighOld   []int      `json:"neigh_old,omitempty"`  // ARP table limits (gc_thresh1-3) before this testnet raised them
	NeighSet   []int      `json:"neigh_set,omitempty"`  // and what it raised them to
	// Internet is set when groups sit behind NATs: Subnet is then a
	// public-looking 11.77.K.0/24 that exists only inside the namespaces,
	// this machine has no link into them (no HostIP, no HostLink), and the
	// orchestrator reaches each API on its namespace's loopback.
	Internet bool `json:"internet,omitempty"`

	// delayline shaping: the `weft testnet shaper` process and its socket
	ShaperPID   int    `json:"shaper_pid,omitempty"`
	ShaperStart uint64 `json:"shaper_start,omitempty"` // its start time in clock ticks, so a reused PID is never signalled
	ShaperSock  string `json:"shaper_socket,omitempty"`

	Nodes []*NodeState `json:"nodes"`
}

// NodeState is one node of a testnet.
type NodeState struct {
	Name     string `json:"name"`
	Group    string `json:"group"`
	Repo     string `json:"repo"`
	Log      string `json:"log"`
	NS       string `json:"ns,omitempty"`
	IP       string `json:"ip"`
	PeerID   string `json:"peer_id"`
	Swarm    string `json:"swarm"` // listen multiaddr with /p2p/ID
	API      string `json:"api"`   // host:port
	PID      int    `json:"pid,omitempty"`
	PIDStart uint64 `json:"pid_start,omitempty"` // the process's start time in clock ticks, so a reused PID is never signalled
	Starts   int    `json:"starts"`
	Shape    Shape  `json:"shape"`
	Token    string `json:"-"`
	// Behind a NAT: the kind, the router's namespace and its address on
	// the internet (IP is then the node's address on its router's LAN).
	NAT      string `json:"nat,omitempty"`
	Router   string `json:"router_ns,omitempty"`
	PublicIP string `json:"public_ip,omitempty"`

	mu sync.Mutex // guards PID, PIDStart and Starts against readers outside Testnet.mu
}

// proc returns the node's recorded process.
func (n *NodeState) proc() (pid int, start uint64) {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.PID, n.PIDStart
}

func newID() string {
	b := make([]byte, 3)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// save writes the state atomically.
func (s *State) save() error {
	b, err := json.MarshalIndent(s, "", "  ")
	if err != nil {
		return err
	}
	p := filepath.Join(s.Dir, StateFile)
	tmp := p + ".tmp"
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		return fmt.Errorf("write testnet state: %w", err)
	}
	if err := os.Rename(tmp, p); err != nil {
		return fmt.Errorf("write testnet state: %w", err)
	}
	return nil
}

// LoadState reads a testnet's state from dir.
func LoadState(dir string) (*State, error) {
	b, err := os.ReadFile(filepath.Join(dir, StateFile))
	if errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("%w: %s has no %s (start one with 'weft testnet up --dir %s')", ErrNoTestnet, dir, StateFile, dir)
	}
	if err != nil {
		return nil, fmt.Errorf("read testnet state: %w", err)
	}
	var s State
	if err := json.Unmarshal(b, &s); err != nil {
		return nil, fmt.Errorf("testnet state %s: %w", filepath.Join(dir, StateFile), err)
	}
	s.Dir = dir
	return &s, nil
}

// Node returns a node by name, or by its 1-based index.
func (s *State) Node(name string) (*NodeState, error) {
	for _, n := range s.Nodes {
		if n.Name == name {
			return n, nil
		}
	}
	if i, err := strconv.Atoi(name); err == nil && i >= 1 && i <= len(s.Nodes) {
		return s.Nodes[i-1], nil
	}
	var names []string
	for _, n := range s.Nodes {
		names = append(names, n.Name)
	}
	return nil, fmt.Errorf("no node %q in this testnet (nodes: %s)", name, summariseNames(names))
}

// procStart returns the start time of pid (proc.Stat.Start), or 0 if the
// process is gone.
func procStart(pid int) uint64 {
	st, err := proc.ReadStat(pid)
	if err != nil {
		return 0
	}
	return st.Start
}

// alive says the node's recorded process still runs (same PID, same start
// time, not a zombie).
func (n *NodeState) alive() bool {
	pid, start := n.proc()
	if pid <= 0 {
		return false
	}
	st, err := proc.ReadStat(pid)
	return err == nil && st.Start != 0 && st.Start == start && !st.Zombie()
}

// signal sends sig to the node's process if it is still the one started.
func (n *NodeState) signal(sig syscall.Signal) error {
	if !n.alive() {
		return nil
	}
	pid, _ := n.proc()
	return syscall.Kill(pid, sig)
}
