package testnet

import (
	"bufio"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"github.com/weft-p2p/weft/node/proc"
)

// The shaper: on a kernel without sch_netem, a testnet that asks for
// latency, jitter or loss is built with a pair of TAP devices per node
// instead of a veth: eth0 in the node's namespace and pN on the switch's
// bridge. A separate process, `weft testnet shaper`, holds both ends of
// every pair: what a node sends (eth0) goes through the node's delay line
// into the bridge (pN), what the bridge sends the node (pN) goes straight
// to eth0. So, as with netem on eth0, a link's shape applies to what its
// node sends, and a round trip between two nodes crosses both their
// lines. Frames to and from this machine's address on the bridge (the
// orchestrator's API calls) skip the line, as they skip the shaped htb
// class, so measurements are not skewed by the shaping.
//
// The shaper reads its links from shaper.json in the testnet directory and
// takes new shapes over a unix socket (shaper.sock), so `weft testnet
// shape` and scenario shape steps change a running line. Its PID is in
// testnet.json; `weft testnet down` stops it by that PID.

// ShaperFile is the shaper's configuration in a testnet directory.
const ShaperFile = "shaper.json"

// Shaping mechanisms, as State.Shaping names them.
const (
	ShapingNetem     = "netem"          // tc netem under htb: latency, jitter, loss, bandwidth
	ShapingDelayLine = "delayline"      // the userspace delay line on TAP pairs (this file)
	ShapingBandwidth = "bandwidth-only" // htb only: no latency, jitter or loss on this kernel
	ShapingNone      = "none"
)

// ShaperConfig is what `weft testnet shaper` runs.
type ShaperConfig struct {
	Socket string       `json:"socket"`  // control socket
	HostIP string       `json:"host_ip"` // frames to this address skip the delay lines
	Seed   int64        `json:"seed"`
	Links  []ShaperLink `json:"links"`
}

// ShaperLink is one node's pair of TAP devices.
type ShaperLink struct {
	Node      string `json:"node"`
	NodeNS    string `json:"node_ns"`    // namespace of NodeDev
	NodeDev   string `json:"node_dev"`   // the node's interface (a TAP)
	SwitchNS  string `json:"switch_ns"`  // namespace of the bridge
	SwitchDev string `json:"switch_dev"` // the node's port on the bridge (a TAP)
	Shape     Shape  `json:"shape"`
}

// shaperRequest is one line on the control socket; the answer is one
// shaperResponse line.
type shaperRequest struct {
	Op    string `json:"op"` // ping, shape, stats
	Node  string `json:"node,omitempty"`
	Shape Shape  `json:"shape"`
}

type shaperResponse struct {
	OK    bool                 `json:"ok"`
	Error string               `json:"error,omitempty"`
	Stats map[string]LineStats `json:"stats,omitempty"`
}

// frameAddrs returns the IPv4 source and destination of an Ethernet frame
// (for ARP, the sender and target protocol addresses); ok is false for
// anything else, and for frames too short to hold what they claim.
func frameAddrs(frame []byte) (src, dst netip.Addr, ok bool) {
	if len(frame) < 14 {
		return src, dst, false
	}
	typ, p := binary.BigEndian.Uint16(frame[12:14]), frame[14:]
	if typ == 0x8100 { // one VLAN tag
		if len(p) < 4 {
			return src, dst, false
		}
		typ, p = binary.BigEndian.Uint16(p[2:4]), p[4:]
	}
	switch typ {
	case 0x0800: // IPv4
		if len(p) < 20 || p[0]>>4 != 4 || int(p[0]&0x0f)*4 < 20 || int(p[0]&0x0f)*4 > len(p) {
			return src, dst, false
		}
		return netip.AddrFrom4([4]byte(p[12:16])), netip.AddrFrom4([4]byte(p[16:20])), true
	case 0x0806: // ARP for IPv4 over Ethernet
		if len(p) < 28 || binary.BigEndian.Uint16(p[2:4]) != 0x0800 || p[4] != 6 || p[5] != 4 {
			return src, dst, false
		}
		return netip.AddrFrom4([4]byte(p[14:18])), netip.AddrFrom4([4]byte(p[24:28])), true
	}
	return src, dst, false
}

// frameBufs recycles frame buffers (an MTU-1500 frame fits).
var frameBufs = sync.Pool{New: func() any { b := make([]byte, 2048); return &b }}

func getFrame(n int) []byte {
	if n > 2048 {
		return make([]byte, n)
	}
	return (*frameBufs.Get().(*[]byte))[:n]
}

func putFrame(b []byte) {
	if cap(b) == 2048 {
		b = b[:cap(b)]
		frameBufs.Put(&b)
	}
}

// shaperLink is a running link: both TAP ends and the node's delay line.
type shaperLink struct {
	cfg  ShaperLink
	node *os.File
	sw   *os.File
	line *DelayLine
}

// Shaper runs the delay lines of a testnet's links.
type Shaper struct {
	cfg    ShaperConfig
	host   netip.Addr
	log    *slog.Logger
	links  map[string]*shaperLink
	ln     net.Listener
	wg     sync.WaitGroup
	closed chan struct{}
}

// NewShaper attaches to every link's TAP devices, starts their delay lines
// and listens on the control socket. Close stops it.
func NewShaper(cfg ShaperConfig, log *slog.Logger) (s *Shaper, err error) {
	if log == nil {
		log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	s = &Shaper{cfg: cfg, log: log, links: map[string]*shaperLink{}, closed: make(chan struct{})}
	if cfg.HostIP != "" {
		if s.host, err = netip.ParseAddr(cfg.HostIP); err != nil {
			return nil, fmt.Errorf("shaper: host address: %w", err)
		}
	}
	defer func() {
		if err != nil {
			s.Close()
		}
	}()
	for i, lc := range cfg.Links {
		ls, err := lineShapeOf(lc.Shape)
		if err != nil {
			return s, fmt.Errorf("shaper: %s: %w", lc.Node, err)
		}
		l := &shaperLink{cfg: lc}
		s.links[lc.Node] = l
		if l.node, err = openTAP(lc.NodeNS, lc.NodeDev); err != nil {
			return s, fmt.Errorf("shaper: %s: %w", lc.Node, err)
		}
		if l.sw, err = openTAP(lc.SwitchNS, lc.SwitchDev); err != nil {
			return s, fmt.Errorf("shaper: %s: %w", lc.Node, err)
		}
		sw := l.sw
		l.line = NewDelayLine(ls, uint64(cfg.Seed)+uint64(i)*0x9e3779b97f4a7c15, func(f []byte) {
			_, _ = sw.Write(f) // a full or down port drops the frame, as a wire would
			putFrame(f)
		})
	}
	if cfg.Socket != "" {
		_ = os.Remove(cfg.Socket)
		if s.ln, err = net.Listen("unix", cfg.Socket); err != nil {
			return s, fmt.Errorf("shaper: control socket: %w", err)
		}
		_ = os.Chmod(cfg.Socket, 0o600)
	}
	for _, l := range s.links {
		s.wg.Add(2)
		go s.egress(l)
		go s.ingress(l)
	}
	if s.ln != nil {
		s.wg.Add(1)
		go s.serve()
	}
	return s, nil
}

// egress carries what the node sends through its delay line to the bridge.
func (s *Shaper) egress(l *shaperLink) {
	defer s.wg.Done()
	buf := make([]byte, 65536)
	for {
		n, err := l.node.Read(buf)
		if err != nil {
			s.readFailed(l, "eth", err)
			return
		}
		f := getFrame(n)
		copy(f, buf[:n])
		if s.host.IsValid() {
			if _, dst, ok := frameAddrs(f); ok && dst == s.host {
				_, _ = l.sw.Write(f)
				putFrame(f)
				continue
			}
		}
		if !l.line.Push(f) {
			putFrame(f)
		}
	}
}

// ingress carries what the bridge sends the node, unshaped.
func (s *Shaper) ingress(l *shaperLink) {
	defer s.wg.Done()
	buf := make([]byte, 65536)
	for {
		n, err := l.sw.Read(buf)
		if err != nil {
			s.readFailed(l, "port", err)
			return
		}
		_, _ = l.node.Write(buf[:n])
	}
}

func (s *Shaper) readFailed(l *shaperLink, end string, err error) {
	select {
	case <-s.closed:
	default:
		s.log.Error("shaper: read failed; link stopped", "node", l.cfg.Node, "end", end, "err", err)
	}
}

// serve answers the control socket.
func (s *Shaper) serve() {
	defer s.wg.Done()
	for {
		c, err := s.ln.Accept()
		if err != nil {
			return
		}
		s.handle(c)
	}
}

func (s *Shaper) handle(c net.Conn) {
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	var req shaperRequest
	if err := json.NewDecoder(io.LimitReader(c, 64<<10)).Decode(&req); err != nil {
		_ = json.NewEncoder(c).Encode(shaperResponse{Error: "bad request: " + err.Error()})
		return
	}
	_ = json.NewEncoder(c).Encode(s.do(req))
}

func (s *Shaper) do(req shaperRequest) shaperResponse {
	switch req.Op {
	case "ping":
		return shaperResponse{OK: true}
	case "stats":
		return shaperResponse{OK: true, Stats: s.Stats()}
	case "shape":
		if err := s.SetShape(req.Node, req.Shape); err != nil {
			return shaperResponse{Error: err.Error()}
		}
		return shaperResponse{OK: true}
	}
	return shaperResponse{Error: fmt.Sprintf("unknown op %q", req.Op)}
}

// SetShape changes a node's link shape.
func (s *Shaper) SetShape(node string, sh Shape) error {
	l := s.links[node]
	if l == nil {
		return fmt.Errorf("no link for node %q", node)
	}
	ls, err := lineShapeOf(sh)
	if err != nil {
		return err
	}
	l.line.SetShape(ls)
	s.log.Info("shaper: link reshaped", "node", node, "shape", sh.String())
	return nil
}

// Stats returns every line's counters by node.
func (s *Shaper) Stats() map[string]LineStats {
	out := map[string]LineStats{}
	for name, l := range s.links {
		out[name] = l.line.Stats()
	}
	return out
}

// Close stops every link and the control socket, and waits.
func (s *Shaper) Close() {
	select {
	case <-s.closed:
		return
	default:
	}
	close(s.closed)
	if s.ln != nil {
		s.ln.Close()
	}
	for _, l := range s.links {
		if l.node != nil {
			l.node.Close()
		}
		if l.sw != nil {
			l.sw.Close()
		}
	}
	s.wg.Wait()
	for _, l := range s.links {
		if l.line != nil {
			l.line.Close()
		}
	}
	if s.cfg.Socket != "" {
		_ = os.Remove(s.cfg.Socket)
	}
}

// RunShaper runs the shaper of the testnet in dir until ctx ends: what
// `weft testnet shaper` does.
func RunShaper(ctx context.Context, dir string, log *slog.Logger) error {
	b, err := os.ReadFile(filepath.Join(dir, ShaperFile))
	if err != nil {
		return fmt.Errorf("read shaper config: %w", err)
	}
	var cfg ShaperConfig
	if err := json.Unmarshal(b, &cfg); err != nil {
		return fmt.Errorf("shaper config %s: %w", filepath.Join(dir, ShaperFile), err)
	}
	s, err := NewShaper(cfg, log)
	if err != nil {
		return err
	}
	if log != nil {
		log.Info("shaper: running", "links", len(cfg.Links), "socket", cfg.Socket)
	}
	<-ctx.Done()
	s.Close()
	return nil
}

// shaperCall sends one request to a shaper's control socket.
func shaperCall(ctx context.Context, sock string, req shaperRequest) (shaperResponse, error) {
	var resp shaperResponse
	var d net.Dialer
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	c, err := d.DialContext(ctx, "unix", sock)
	if err != nil {
		return resp, fmt.Errorf("shaper control socket: %w", err)
	}
	defer c.Close()
	if dl, ok := ctx.Deadline(); ok {
		_ = c.SetDeadline(dl)
	}
	if err := json.NewEncoder(c).Encode(req); err != nil {
		return resp, fmt.Errorf("shaper %s: %w", req.Op, err)
	}
	line, err := bufio.NewReader(c).ReadBytes('\n')
	if err != nil {
		return resp, fmt.Errorf("shaper %s: %w", req.Op, err)
	}
	if err := json.Unmarshal(line, &resp); err != nil {
		return resp, fmt.Errorf("shaper %s: %w", req.Op, err)
	}
	if !resp.OK {
		return resp, fmt.Errorf("shaper %s: %s", req.Op, resp.Error)
	}
	return resp, nil
}

// shaperSocket is where a testnet's shaper listens: in its directory, or
// in the temporary directory when that path is too long for a socket.
func shaperSocket(st *State) string {
	p := filepath.Join(st.Dir, "shaper.sock")
	if len(p) > 100 {
		p = filepath.Join(os.TempDir(), "weft-shaper-"+st.ID+".sock")
	}
	return p
}

// switchPort is node i's (1-based) port on the bridge.
func switchPort(i int) string { return fmt.Sprintf("p%d", i) }

// shaperConfig describes every node's link as it is now.
func (t *Testnet) shaperConfig() ShaperConfig {
	st := t.st
	cfg := ShaperConfig{Socket: st.ShaperSock, HostIP: st.HostIP, Seed: st.Seed}
	t.mu.Lock()
	defer t.mu.Unlock()
	for i, n := range st.Nodes {
		cfg.Links = append(cfg.Links, ShaperLink{Node: n.Name, NodeNS: n.NS, NodeDev: "eth0",
			SwitchNS: st.Switch, SwitchDev: switchPort(i + 1), Shape: n.Shape})
	}
	return cfg
}

func (t *Testnet) writeShaperConfig() error {
	t.shaperMu.Lock()
	defer t.shaperMu.Unlock()
	b, err := json.MarshalIndent(t.shaperConfig(), "", "  ")
	if err != nil {
		return err
	}
	p := filepath.Join(t.st.Dir, ShaperFile)
	if err := os.WriteFile(p+".tmp", b, 0o600); err != nil {
		return fmt.Errorf("write shaper config: %w", err)
	}
	return os.Rename(p+".tmp", p)
}

// startShaper starts `weft testnet shaper` for this testnet and waits
// until it answers on its control socket.
func (t *Testnet) startShaper(ctx context.Context) error {
	st := t.st
	st.ShaperSock = shaperSocket(st)
	if err := t.writeShaperConfig(); err != nil {
		return err
	}
	logPath := filepath.Join(st.Dir, "logs", "shaper.log")
	logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	args := []string{st.Bin, "testnet", "shaper", "--dir", st.Dir}
	// Its timers are the links' latency: on a machine busy with the
	// testnet's daemons, run it ahead of them (nice -10, every thread).
	if nice, err := exec.LookPath("nice"); err == nil && os.Geteuid() == 0 {
		args = append([]string{nice, "-n", "-10"}, args...)
	}
	cmd := exec.Command(args[0], args[1:]...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	p, err := proc.Start(cmd)
	logf.Close()
	if err != nil {
		return fmt.Errorf("start the shaper: %w", err)
	}
	t.mu.Lock()
	st.ShaperPID, st.ShaperStart = p.PID, procStart(p.PID)
	t.shaperProc = p
	err = t.saveLocked()
	t.mu.Unlock()
	if err != nil {
		return err
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		select {
		case <-p.Done():
			return fmt.Errorf("the shaper exited during start-up: %s", tail(logPath, 5))
		case <-ctx.Done():
			return ctx.Err()
		default:
		}
		_, err := shaperCall(ctx, st.ShaperSock, shaperRequest{Op: "ping"})
		if err == nil {
			t.say("shaper (pid %d) carries %d links through delay lines", p.PID, len(st.Nodes))
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("the shaper did not answer within 20s (%v): %s", err, tail(logPath, 5))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// ShaperStats returns the delay lines' counters by node.
func (t *Testnet) ShaperStats(ctx context.Context) (map[string]LineStats, error) {
	if t.st.Shaping != ShapingDelayLine {
		return nil, errors.New("this testnet's links are not shaped by the delay line")
	}
	r, err := shaperCall(ctx, t.st.ShaperSock, shaperRequest{Op: "stats"})
	return r.Stats, err
}

// ShaperRunning says the testnet's shaper process still runs.
func (s *State) ShaperRunning() bool { return shaperAlive(s) }

// shaperAlive says the recorded shaper process still runs.
func shaperAlive(st *State) bool {
	if st.ShaperPID <= 0 {
		return false
	}
	ps, err := proc.ReadStat(st.ShaperPID)
	return err == nil && ps.Start != 0 && ps.Start == st.ShaperStart && !ps.Zombie()
}

// stopShaper stops the recorded shaper by its PID (SIGTERM, then SIGKILL
// after 5 s). p is its process if this process started it.
func stopShaper(st *State, p *proc.Process) error {
	if !shaperAlive(st) {
		return nil
	}
	_ = syscall.Kill(st.ShaperPID, syscall.SIGTERM)
	for _, grace := range []time.Duration{5 * time.Second, 5 * time.Second} {
		deadline := time.Now().Add(grace)
		for time.Now().Before(deadline) {
			if p != nil {
				select {
				case <-p.Done():
					return nil
				case <-time.After(20 * time.Millisecond):
				}
			} else if !shaperAlive(st) {
				return nil
			} else {
				time.Sleep(20 * time.Millisecond)
			}
		}
		if shaperAlive(st) {
			_ = syscall.Kill(st.ShaperPID, syscall.SIGKILL)
		}
	}
	if shaperAlive(st) {
		return fmt.Errorf("the shaper (pid %d) did not exit", st.ShaperPID)
	}
	return nil
}
