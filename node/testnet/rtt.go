package testnet

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"time"
)

// MeasureRTT times n TCP handshakes from node from (inside its namespace)
// to node to's swarm port: each is one round trip, across from's link out
// and to's link back, so it shows what the links' shaping adds. The
// connections are closed at once.
func (t *Testnet) MeasureRTT(ctx context.Context, from, to string, n int) ([]time.Duration, error) {
	a, err := t.st.Node(from)
	if err != nil {
		return nil, err
	}
	b, err := t.st.Node(to)
	if err != nil {
		return nil, err
	}
	addr, err := swarmTCPAddr(b.Swarm)
	if err != nil {
		return nil, err
	}
	var out []time.Duration
	for range n {
		var took time.Duration
		err := inNetns(a.NS, func() error {
			d := net.Dialer{Timeout: 5 * time.Second}
			start := time.Now()
			c, err := d.DialContext(ctx, "tcp", addr)
			took = time.Since(start)
			if err != nil {
				return err
			}
			return c.Close()
		})
		if err != nil {
			return out, fmt.Errorf("measure RTT %s -> %s: %w", from, to, err)
		}
		out = append(out, took)
	}
	return out, nil
}

// swarmTCPAddr returns host:port of a /ip4/A/tcp/P multiaddr.
func swarmTCPAddr(ma string) (string, error) {
	f := strings.Split(ma, "/")
	if len(f) < 5 || f[1] != "ip4" || f[3] != "tcp" {
		return "", fmt.Errorf("swarm address %q: want /ip4/A/tcp/P", ma)
	}
	return net.JoinHostPort(f[2], f[4]), nil
}

// measureLinkRTT samples round trips from the first node to up to four
// others (five each), for the report: what the links' shaping gives.
func (t *Testnet) measureLinkRTT(ctx context.Context) ([]float64, error) {
	nodes := t.st.Nodes
	var ms []float64
	var errs []error
	for _, b := range nodes[1:min(len(nodes), 5)] {
		if !nodes[0].alive() || !b.alive() {
			continue
		}
		rtts, err := t.MeasureRTT(ctx, nodes[0].Name, b.Name, 5)
		if err != nil {
			errs = append(errs, err)
		}
		for _, d := range rtts {
			ms = append(ms, float64(d.Microseconds())/1000)
		}
	}
	return ms, errors.Join(errs...)
}
