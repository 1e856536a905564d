package testnet

import (
	"bytes"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	toml "github.com/pelletier/go-toml/v2"

	"github.com/weft-p2p/weft/node"
)

// Scenario is a declarative testnet run, read from a TOML file (the format
// is documented in README.md, "Testnets", and in scripts/scenarios/). Its
// zero values are the defaults listed on each field.
type Scenario struct {
	Name        string `toml:"name" json:"name"`               // default: the file's base name
	Description string `toml:"description" json:"description"` // free text, copied into the report
	// Seed drives every random choice (topology, content bytes, loss); 0
	// picks one from the clock, and the report records it either way.
	Seed    int64    `toml:"seed" json:"seed"`
	Timeout Duration `toml:"timeout" json:"timeout"` // the whole run; default 10m
	Network Network  `toml:"network" json:"network"`
	// Config sets daemon config keys (as `weft config set` takes them) on
	// every node, e.g. "collection.heartbeat_interval" = "500ms".
	Config map[string]string `toml:"config" json:"config,omitempty"`
	Groups []Group           `toml:"groups" json:"groups"`
	Steps  []Step            `toml:"steps" json:"steps"`
}

// Network is how nodes are connected and shaped.
type Network struct {
	// Mode: "auto" (namespaces when root on Linux with iproute2, else
	// loopback), "netns" (fail if namespaces cannot be made), "loopback",
	// or "sim": every node in one process on simulated links in virtual
	// time (RunSim; `weft testnet run` runs it through weft-testnet-sim).
	Mode string `toml:"mode" json:"mode"`
	// Topology says which peers each node knows at start (its bootstrap
	// list): "star" (everyone knows the first node; default), "ring" (each
	// knows its two neighbours) or "random" (each knows Degree earlier
	// nodes picked with the seed). The DHT finds the rest.
	Topology string `toml:"topology" json:"topology"`
	Degree   int    `toml:"degree" json:"degree,omitempty"` // random topology: peers per node (default 3)
	// Subnet is the subnet the namespaces get, inside 10.77.0.0/16: a /24,
	// or a /23 or /22 for more than 253 nodes (default: a free 10.77.K.0/24
	// picked per testnet, or an aligned /23 or /22 when the nodes need it).
	Subnet string `toml:"subnet" json:"subnet,omitempty"`
	Link   Shape  `toml:"link" json:"link"` // every node's link, unless its group says otherwise
	QUIC   bool   `toml:"quic" json:"quic"` // also listen on QUIC (default TCP only)
	// SimCPU charges CPU work in a simulation (mode "sim"; a real
	// testnet's daemons spend real CPU). Unset, CPU work costs no virtual
	// time.
	SimCPU SimCPU `toml:"sim_cpu" json:"sim_cpu,omitzero"`
}

// SimCPU is the machine simulated nodes share: Cores cores, and every
// message a node sends costs PerMessage of CPU (its sending and its
// receiving together) before the receiver reads it. Each node works
// through what it receives in order, and while more nodes have work than
// there are cores, each runs that much slower (simlink's package doc).
// It models a real testnet's daemons queueing for one machine's cores,
// not the nodes of a deployment, which have a machine each. PerMessage is
// measured, not guessed: the machine's busy CPU seconds in a step of a
// real run (the "machine" column of its steps table) over the messages a
// simulated run of the same file, without SimCPU, carried in that step
// (its "messages" column).
type SimCPU struct {
	Cores      int      `toml:"cores" json:"cores,omitempty"`
	PerMessage Duration `toml:"per_message" json:"per_message,omitempty"`
}

// Shape is a link's shaping, applied to what a node sends to other nodes
// (so a round trip between two nodes crosses two shaped links).
type Shape struct {
	Latency   Duration `toml:"latency" json:"latency,omitempty"`     // one way, e.g. "20ms"
	Jitter    Duration `toml:"jitter" json:"jitter,omitempty"`       // e.g. "5ms"
	Loss      string   `toml:"loss" json:"loss,omitempty"`           // percent, e.g. "0.1%"
	Bandwidth string   `toml:"bandwidth" json:"bandwidth,omitempty"` // e.g. "100mbit", "10mbps"
}

// IsZero says the shape changes nothing.
func (s Shape) IsZero() bool {
	return s.Latency == 0 && s.Jitter == 0 && s.LossPercent() == 0 && s.Bandwidth == ""
}

// LossPercent returns the loss as a percentage (0 when unset).
func (s Shape) LossPercent() float64 {
	v, _ := parseLoss(s.Loss)
	return v
}

func (s Shape) String() string {
	if s.IsZero() {
		return "none"
	}
	var parts []string
	if s.Latency > 0 || s.Jitter > 0 {
		p := "latency " + s.Latency.String()
		if s.Jitter > 0 {
			p += " ±" + s.Jitter.String()
		}
		parts = append(parts, p)
	}
	if l := s.LossPercent(); l > 0 {
		parts = append(parts, fmt.Sprintf("loss %g%%", l))
	}
	if s.Bandwidth != "" {
		parts = append(parts, "bandwidth "+s.Bandwidth)
	}
	return strings.Join(parts, ", ")
}

// merge returns s with the fields o sets.
func (s Shape) merge(o Shape) Shape {
	if o.Latency != 0 {
		s.Latency = o.Latency
	}
	if o.Jitter != 0 {
		s.Jitter = o.Jitter
	}
	if o.Loss != "" {
		s.Loss = o.Loss
	}
	if o.Bandwidth != "" {
		s.Bandwidth = o.Bandwidth
	}
	return s
}

func (s Shape) validate() error {
	var errs []error
	if s.Latency < 0 || s.Jitter < 0 {
		errs = append(errs, errors.New("latency and jitter must not be negative"))
	}
	if _, err := parseLoss(s.Loss); err != nil {
		errs = append(errs, err)
	}
	if s.Bandwidth != "" {
		if _, err := parseBandwidth(s.Bandwidth); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// Group is a set of alike nodes: Count nodes named NAME1..NAMEn.
type Group struct {
	Name  string `toml:"name" json:"name"`
	Count int    `toml:"count" json:"count"`
	// NoStart leaves the group's nodes down until a start step.
	NoStart bool   `toml:"no_start" json:"no_start,omitempty"`
	Link    *Shape `toml:"link" json:"link,omitempty"` // overrides network.link for this group
	// NAT puts each node of the group behind a router of its own that
	// translates as the kind says: full-cone, address-restricted,
	// port-restricted or symmetric (see NATKind). A scenario with a NAT
	// group runs in namespaces only, on a public-looking internet range
	// (11.77.K.0/24) that exists only inside them; groups without nat are
	// its public hosts.
	NAT string `toml:"nat" json:"nat,omitempty"`
	// Config sets daemon config keys on this group's nodes, after the
	// scenario's [config].
	Config map[string]string `toml:"config" json:"config,omitempty"`
}

// Step is one timed action. Which fields count depends on Action; the
// README lists them per action.
type Step struct {
	Action string `toml:"action" json:"action"`
	Name   string `toml:"name" json:"name,omitempty"` // label in the report (wait-until: the timing's name)
	At     string `toml:"at" json:"at,omitempty"`     // not before this offset from the start of the run, e.g. "30s"

	Node  string   `toml:"node" json:"node,omitempty"`   // one node (add, publish, collection-create, collection-add; assert/wait-until: who answers)
	Nodes Selector `toml:"nodes" json:"nodes,omitempty"` // many nodes: "all", group and node names
	Peers Selector `toml:"peers" json:"peers,omitempty"` // connect, connection: the other end of each pair (default: nodes)

	As   string `toml:"as" json:"as,omitempty"`     // variable that receives the result ($name later)
	CID  string `toml:"cid" json:"cid,omitempty"`   // a CID or $var
	Size string `toml:"size" json:"size,omitempty"` // bytes of random content, e.g. "1MiB"
	Text string `toml:"text" json:"text,omitempty"` // content given literally

	Key       string   `toml:"key" json:"key,omitempty"`             // feed key (publish, follow)
	Publisher string   `toml:"publisher" json:"publisher,omitempty"` // follow: node whose key's feed to follow
	Feed      string   `toml:"feed" json:"feed,omitempty"`           // a feed name or $var
	Count     int      `toml:"count" json:"count,omitempty"`         // publish: updates; collection-add: items
	Interval  Duration `toml:"interval" json:"interval,omitempty"`   // publish: between updates
	Pin       *bool    `toml:"pin" json:"pin,omitempty"`             // follow: pin versions (default true); fetch: pin (default true)

	Collection  string `toml:"collection" json:"collection,omitempty"`   // a collection ID or $var
	Replication int    `toml:"replication" json:"replication,omitempty"` // collection-create default R; assert replicas R

	Groups []Selector `toml:"groups" json:"groups,omitempty"` // partition

	// attack: node runs `weft adversary ATTACK` against nodes
	Lookup string `toml:"lookup" json:"lookup,omitempty"` // dht-lookup: find-peer or find-providers

	Attack string  `toml:"attack" json:"attack,omitempty"` // junk-heads, heads-requests, feed-records, slow-exchange
	Rate   float64 `toml:"rate" json:"rate,omitempty"`     // messages a second (0: the attack's default)
	Heads  int     `toml:"heads" json:"heads,omitempty"`   // junk-heads: random heads per message
	Member bool    `toml:"member" json:"member,omitempty"` // heads-requests: join the collection first

	Shape
	Duration Duration `toml:"duration" json:"duration,omitempty"` // sleep

	// assert and wait-until
	Check    string   `toml:"check" json:"check,omitempty"`               // holds, feed-seq, replicas, peers, members, delivery, running, connection, reachability
	Via      string   `toml:"via" json:"via,omitempty"`                   // connection: direct or relayed
	Reach    string   `toml:"reachability" json:"reachability,omitempty"` // reachability: public or private
	Seq      uint64   `toml:"seq" json:"seq,omitempty"`                   // feed-seq
	Min      float64  `toml:"min" json:"min,omitempty"`                   // peers, members: at least; delivery: ratio
	Negate   bool     `toml:"not" json:"not,omitempty"`                   // the check must be false
	Deadline Duration `toml:"deadline" json:"deadline,omitempty"`         // wait-until (default 60s)
	Timeout  Duration `toml:"timeout" json:"timeout,omitempty"`           // any step's own bound (default 2m)
}

// Selector names nodes: "all", a group name, a node name, or a list of
// those. It is written as a string or an array of strings.
type Selector []string

// UnmarshalTOML is not used by go-toml v2; see UnmarshalText and the
// decode hook in ParseScenario.

// Duration is a time.Duration written "20ms", "1m30s".
type Duration time.Duration

// D returns the time.Duration.
func (d Duration) D() time.Duration { return time.Duration(d) }

func (d Duration) String() string { return time.Duration(d).String() }

// MarshalText writes "20ms".
func (d Duration) MarshalText() ([]byte, error) { return []byte(d.String()), nil }

// UnmarshalText reads "20ms".
func (d *Duration) UnmarshalText(b []byte) error {
	v, err := time.ParseDuration(string(b))
	if err != nil {
		return err
	}
	*d = Duration(v)
	return nil
}

// nameRE is compiled on first use, not at package init, which every CLI
// command would pay for.
var nameRE = sync.OnceValue(func() *regexp.Regexp { return regexp.MustCompile(`^[a-z][a-z0-9-]{0,15}$`) })

// ParseScenario reads a scenario from TOML. Unknown keys are errors, so a
// misspelt field is never silently ignored.
func ParseScenario(data []byte) (*Scenario, error) {
	var raw map[string]any
	if err := toml.Unmarshal(data, &raw); err != nil {
		return nil, fmt.Errorf("scenario: %w", describeTOMLErr(err))
	}
	normaliseSelectors(raw)
	norm, err := toml.Marshal(raw)
	if err != nil {
		return nil, fmt.Errorf("scenario: %w", err)
	}
	var s Scenario
	dec := toml.NewDecoder(bytes.NewReader(norm))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&s); err != nil {
		return nil, fmt.Errorf("scenario: %w", describeTOMLErr(err))
	}
	return &s, nil
}

// normaliseSelectors turns string selectors into one-element arrays, so
// `nodes = "all"` and `nodes = ["a", "b"]` both decode into a Selector.
func normaliseSelectors(raw map[string]any) {
	steps, _ := raw["steps"].([]any)
	for _, st := range steps {
		m, ok := st.(map[string]any)
		if !ok {
			continue
		}
		for _, k := range []string{"nodes", "peers"} {
			if s, ok := m[k].(string); ok {
				m[k] = []any{s}
			}
		}
		if gs, ok := m["groups"].([]any); ok {
			for i, g := range gs {
				if s, ok := g.(string); ok {
					gs[i] = []any{s}
				}
			}
		}
	}
}

func describeTOMLErr(err error) error {
	var sm *toml.StrictMissingError
	if errors.As(err, &sm) {
		var keys []string
		for _, e := range sm.Errors {
			keys = append(keys, strings.Join(e.Key(), "."))
		}
		return fmt.Errorf("unknown key %s", strings.Join(keys, ", "))
	}
	var de *toml.DecodeError
	if errors.As(err, &de) {
		row, col := de.Position()
		return fmt.Errorf("line %d column %d: %s", row, col, de.Error())
	}
	return err
}

// LoadScenario reads and validates a scenario file.
func LoadScenario(path string) (*Scenario, []byte, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, nil, fmt.Errorf("read scenario: %w", err)
	}
	s, err := ParseScenario(data)
	if err != nil {
		return nil, nil, fmt.Errorf("%s: %w", path, err)
	}
	if s.Name == "" {
		s.Name = strings.TrimSuffix(filepath.Base(path), filepath.Ext(path))
	}
	if err := s.Validate(); err != nil {
		return nil, nil, fmt.Errorf("%s: %w", path, err)
	}
	return s, data, nil
}

// NodeNames returns the names of every node, group by group.
func (s *Scenario) NodeNames() []string {
	var out []string
	for _, g := range s.Groups {
		for i := 1; i <= g.Count; i++ {
			out = append(out, nodeName(g.Name, i))
		}
	}
	return out
}

func nodeName(group string, i int) string {
	if group != "" && group[len(group)-1] >= '0' && group[len(group)-1] <= '9' {
		return fmt.Sprintf("%s-%d", group, i)
	}
	return fmt.Sprintf("%s%d", group, i)
}

// Resolve expands a selector into node names, in testnet order. An empty
// selector means every node.
func (s *Scenario) Resolve(sel Selector) ([]string, error) {
	all := s.NodeNames()
	if len(sel) == 0 {
		return all, nil
	}
	want := map[string]bool{}
	for _, name := range sel {
		name = strings.TrimSpace(name)
		switch {
		case name == "all":
			for _, n := range all {
				want[n] = true
			}
			continue
		}
		found := false
		for _, g := range s.Groups {
			if g.Name == name {
				for i := 1; i <= g.Count; i++ {
					want[nodeName(g.Name, i)] = true
				}
				found = true
			}
		}
		for _, n := range all {
			if n == name {
				want[n] = true
				found = true
			}
		}
		if !found {
			return nil, fmt.Errorf("no node or group %q (nodes: %s)", name, summariseNames(all))
		}
	}
	var out []string
	for _, n := range all {
		if want[n] {
			out = append(out, n)
		}
	}
	return out, nil
}

func summariseNames(all []string) string {
	if len(all) <= 6 {
		return strings.Join(all, ", ")
	}
	return strings.Join(all[:3], ", ") + ", …, " + all[len(all)-1]
}

// Validate fills defaults and reports every problem at once.
func (s *Scenario) Validate() error {
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	if s.Timeout == 0 {
		s.Timeout = Duration(10 * time.Minute)
	}
	switch s.Network.Mode {
	case "":
		s.Network.Mode = "auto"
	case "auto", "netns", "loopback", ModeSim:
	default:
		bad("network.mode %q: use auto, netns, loopback or sim", s.Network.Mode)
	}
	switch s.Network.Topology {
	case "":
		s.Network.Topology = "star"
	case "star", "ring", "random":
	default:
		bad("network.topology %q: use star, ring or random", s.Network.Topology)
	}
	if s.Network.Degree == 0 {
		s.Network.Degree = 3
	}
	if s.Network.Subnet != "" {
		if p, err := parseSubnet(s.Network.Subnet); err != nil {
			bad("network.subnet: %v", err)
		} else if n := len(s.NodeNames()); n > usableHosts(p.Bits())-1 {
			bad("network.subnet %s holds %d nodes (and the orchestrator), not %d: use a /%d", s.Network.Subnet, usableHosts(p.Bits())-1, n, subnetBits(n))
		}
	}
	if err := s.Network.Link.validate(); err != nil {
		bad("network.link: %v", err)
	}
	if c := s.Network.SimCPU; c.Cores < 0 || c.PerMessage < 0 || (c.Cores > 0) != (c.PerMessage > 0) {
		bad("network.sim_cpu: give both cores and per_message, neither negative")
	}
	if c, err := node.DefaultConfig(node.ProfileLocal); err == nil {
		if err := applyConfig(&c, s.Config); err != nil {
			bad("config: %v", err)
		}
	}
	if len(s.Groups) == 0 {
		bad("no [[groups]]: give at least one group of nodes")
	}
	seen := map[string]bool{}
	total := 0
	for i, g := range s.Groups {
		if !nameRE().MatchString(g.Name) {
			bad("groups[%d]: name %q must be lower-case letters, digits and '-', at most 16, starting with a letter", i, g.Name)
		}
		if seen[g.Name] {
			bad("groups[%d]: name %q used twice", i, g.Name)
		}
		seen[g.Name] = true
		if g.Count < 1 {
			bad("group %q: count must be at least 1", g.Name)
		}
		total += g.Count
		if g.Link != nil {
			if err := g.Link.validate(); err != nil {
				bad("group %q link: %v", g.Name, err)
			}
		}
		if g.NAT != "" {
			if k, err := ParseNATKind(g.NAT); err != nil {
				bad("group %q: %v", g.Name, err)
			} else if k == NATUPnP {
				bad("group %q: nat = \"upnp\" is for the NAT lab's tests, not yet for testnets", g.Name)
			}
		}
		if c, err := node.DefaultConfig(node.ProfileLocal); err == nil && len(g.Config) > 0 {
			if err := applyConfig(&c, s.Config); err == nil {
				if err := applyConfig(&c, g.Config); err != nil {
					bad("group %q config: %v", g.Name, err)
				}
			}
		}
	}
	if s.HasNAT() {
		if s.Network.Mode == "loopback" {
			bad("network.mode loopback: groups behind a NAT need namespaces")
		}
		if s.Network.Subnet != "" {
			bad("network.subnet: a scenario with NAT groups picks its own internet range (%sK.0/24)", NATLabPrefix)
		}
		if n := len(s.NodeNames()); n > usableHosts(maxSubnetBits)-1 {
			bad("%d nodes: a scenario with NAT groups holds at most %d (its internet is one /24)", n, usableHosts(maxSubnetBits)-1)
		}
		public := 0
		for _, g := range s.Groups {
			if g.NAT == "" {
				public += g.Count
			}
		}
		if public == 0 {
			bad("every group is behind a NAT: give a group without nat (public hosts: bootstrap, relays, AutoNAT servers)")
		}
	}
	if limit := maxNodes(s.Network.Mode); total > limit {
		bad("%d nodes: at most %d per testnet in mode %s", total, limit, s.Network.Mode)
	}
	names := map[string]bool{}
	for _, n := range s.NodeNames() {
		if names[n] || seen[n] {
			bad("node name %q is ambiguous", n)
		}
		names[n] = true
	}
	vars := map[string]bool{}
	for i := range s.Steps {
		st := &s.Steps[i]
		where := fmt.Sprintf("steps[%d] (%s)", i, st.Action)
		if err := s.validateStep(st, vars); err != nil {
			bad("%s: %v", where, err)
		}
	}
	return errors.Join(errs...)
}

// HasNAT says some group sits behind a NAT.
func (s *Scenario) HasNAT() bool {
	for _, g := range s.Groups {
		if g.NAT != "" {
			return true
		}
	}
	return false
}

// GroupOf returns the group a node belongs to.
func (s *Scenario) GroupOf(name string) *Group {
	for i := range s.Groups {
		g := &s.Groups[i]
		for k := 1; k <= g.Count; k++ {
			if nodeName(g.Name, k) == name {
				return g
			}
		}
	}
	return nil
}

// stepValidator collects the problems of one step.
type stepValidator struct {
	s    *Scenario
	vars map[string]bool // variables set by earlier steps' 'as'
	errs []error
}

func (v *stepValidator) bad(format string, args ...any) {
	v.errs = append(v.errs, fmt.Errorf(format, args...))
}

// node checks a required field naming one node or group.
func (v *stepValidator) node(field, val string) {
	if val == "" {
		v.bad("%s is required", field)
		return
	}
	if _, err := v.s.Resolve(Selector{val}); err != nil {
		v.bad("%s: %v", field, err)
	}
}

// ref checks a required field that is a value or a $variable set earlier.
func (v *stepValidator) ref(field, val string) {
	if val == "" {
		v.bad("%s is required", field)
	} else if name, ok := strings.CutPrefix(val, "$"); ok && !v.vars[name] {
		v.bad("%s: $%s is not set by an earlier step's 'as'", field, name)
	}
}

// validateStep checks the fields every step has, and then those of its
// action (actions[st.Action].validate), filling defaults.
func (s *Scenario) validateStep(st *Step, vars map[string]bool) error {
	a, ok := actions[st.Action]
	if !ok {
		return fmt.Errorf("unknown action %q", st.Action)
	}
	v := &stepValidator{s: s, vars: vars}
	if st.At != "" {
		if _, err := time.ParseDuration(st.At); err != nil {
			v.bad("at: %v", err)
		}
	}
	if _, err := s.Resolve(st.Nodes); err != nil {
		v.bad("nodes: %v", err)
	}
	if _, err := s.Resolve(st.Peers); err != nil {
		v.bad("peers: %v", err)
	}
	if st.Size != "" {
		if _, err := node.ParseByteSize(st.Size); err != nil {
			v.bad("size: %v", err)
		}
	}
	if a.validate != nil {
		a.validate(v, st)
	}
	if st.Timeout == 0 {
		st.Timeout = Duration(2 * time.Minute)
	}
	if st.As != "" {
		if !asRE().MatchString(st.As) {
			v.bad("as %q: letters, digits and _", st.As)
		}
		vars[st.As] = true
	}
	return errors.Join(v.errs...)
}

var asRE = sync.OnceValue(func() *regexp.Regexp { return regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`) })

// MaxNodes bounds a testnet: namespaces share one subnet, a /24 up to 253
// nodes and a /23 or /22 beyond (a /22 holds 1,021 nodes beside the
// orchestrator); a scenario with NAT groups holds at most 253. MaxSimNodes
// bounds a simulated one (network.mode = "sim").
const (
	MaxNodes    = 1000
	MaxSimNodes = 5000
)

func maxNodes(mode string) int {
	if mode == ModeSim {
		return MaxSimNodes
	}
	return MaxNodes
}

func parseLoss(s string) (float64, error) {
	if s == "" {
		return 0, nil
	}
	v, err := strconv.ParseFloat(strings.TrimSuffix(strings.TrimSpace(s), "%"), 64)
	if err != nil || v < 0 || v > 100 || math.IsNaN(v) {
		return 0, fmt.Errorf("loss %q: want a percentage such as 0.1%%", s)
	}
	return v, nil
}

// parseBandwidth returns bits per second from "100mbit", "10mbps" (bytes),
// "1gbit", "500kbit".
func parseBandwidth(s string) (int64, error) {
	re := regexp.MustCompile(`^([0-9]+(?:\.[0-9]+)?)\s*(k|m|g)?(bit|bps)$`)
	m := re.FindStringSubmatch(strings.ToLower(strings.TrimSpace(s)))
	if m == nil {
		return 0, fmt.Errorf("bandwidth %q: want e.g. 100mbit, 500kbit or 10mbps (bytes)", s)
	}
	v, _ := strconv.ParseFloat(m[1], 64)
	switch m[2] {
	case "k":
		v *= 1e3
	case "m":
		v *= 1e6
	case "g":
		v *= 1e9
	}
	if m[3] == "bps" {
		v *= 8
	}
	if v < 8000 {
		return 0, fmt.Errorf("bandwidth %q: at least 8kbit", s)
	}
	return int64(v), nil
}

// QuickScenario is what `weft testnet up --nodes N` runs: one group "n"
// and no steps.
func QuickScenario(nodes int, topology string, link Shape) *Scenario {
	return &Scenario{
		Name:    "up",
		Network: Network{Topology: topology, Link: link},
		Groups:  []Group{{Name: "n", Count: nodes}},
	}
}

// applyConfig sets the keys on c. Keys that depend on each other (a grace
// period above a heartbeat interval, say) may need another's new value
// first, so it repeats passes until every key is set or a pass sets none.
func applyConfig(c *node.Config, m map[string]string) error {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for len(keys) > 0 {
		var left []string
		var errs []error
		for _, k := range keys {
			if err := c.Set(k, m[k]); err != nil {
				left = append(left, k)
				errs = append(errs, err)
			}
		}
		if len(left) == len(keys) {
			return errors.Join(errs...)
		}
		keys = left
	}
	return nil
}
