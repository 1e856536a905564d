package node_test

import (
	"context"
	"encoding/binary"
	"fmt"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/weft-p2p/weft/node"
	"github.com/weft-p2p/weft/node/nodetest"
)

// startSwarm starts n nodes bootstrapped to the first one.
func startSwarm(b *testing.B, n int) []*node.Node {
	b.Helper()
	seed := nodetest.Start(b, nodetest.Options{})
	out := []*node.Node{seed}
	for i := 1; i < n; i++ {
		out = append(out, nodetest.Start(b, nodetest.Options{Bootstrap: []string{nodetest.Addr(b, seed)}}))
	}
	return out
}

// subscribeAll subscribes every node but the first to topic and returns a
// channel of (arrival - send time) latencies, read from a timestamp in the
// message.
func subscribeAll(b *testing.B, ctx context.Context, nodes []*node.Node, topic string) (<-chan time.Duration, *sync.WaitGroup) {
	b.Helper()
	lat := make(chan time.Duration, 1<<20)
	var wg sync.WaitGroup
	for _, n := range nodes[1:] {
		sub, err := n.Subscribe(topic)
		if err != nil {
			b.Fatal(err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer sub.Cancel()
			for {
				m, err := sub.Next(ctx)
				if err != nil {
					return
				}
				if len(m.Data) >= 8 {
					sent := time.Unix(0, int64(binary.BigEndian.Uint64(m.Data)))
					lat <- time.Since(sent)
				}
			}
		}()
	}
	return lat, &wg
}

func stamp(size int) []byte {
	msg := make([]byte, size)
	binary.BigEndian.PutUint64(msg, uint64(time.Now().UnixNano()))
	return msg
}

func percentile(d []time.Duration, p float64) time.Duration {
	sort.Slice(d, func(i, j int) bool { return d[i] < d[j] })
	return d[int(float64(len(d)-1)*p)]
}

// BenchmarkPubsubLatency reports publish-to-delivered latency percentiles
// over every (message, subscriber) pair, on 10 and 30 nodes.
func BenchmarkPubsubLatency(b *testing.B) {
	for _, size := range []int{10, 30} {
		b.Run(fmt.Sprintf("nodes=%d", size), func(b *testing.B) {
			nodes := startSwarm(b, size)
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			topic := "bench-latency"
			lat, wg := subscribeAll(b, ctx, nodes, topic)
			defer wg.Wait()
			defer cancel()
			pub := nodes[0]
			waitMeshed(b, ctx, pub, topic, len(nodes)-1, lat)
			var all []time.Duration
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				if err := pub.Publish(ctx, topic, stamp(64)); err != nil {
					b.Fatal(err)
				}
				for j := 0; j < len(nodes)-1; j++ {
					select {
					case d := <-lat:
						all = append(all, d)
					case <-time.After(10 * time.Second):
						b.Fatalf("message %d: only %d of %d subscribers got it", i, j, len(nodes)-1)
					}
				}
				time.Sleep(10 * time.Millisecond) // one message in flight at a time, paced
			}
			b.StopTimer()
			b.ReportMetric(float64(percentile(all, 0.5).Microseconds())/1000, "p50-ms")
			b.ReportMetric(float64(percentile(all, 0.99).Microseconds())/1000, "p99-ms")
		})
	}
}

// BenchmarkPubsubThroughput publishes b.N messages at a fixed rate from one
// publisher to 9 subscribers and reports the share delivered to every
// subscriber; the sustained rate is the highest one at 100%.
func BenchmarkPubsubThroughput(b *testing.B) {
	for _, rate := range []int{500, 1000, 2000, 4000} {
		b.Run(fmt.Sprintf("rate=%d", rate), func(b *testing.B) {
			nodes := startSwarm(b, 10)
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			topic := "bench-throughput"
			lat, wg := subscribeAll(b, ctx, nodes, topic)
			defer wg.Wait()
			defer cancel()
			pub := nodes[0]
			waitMeshed(b, ctx, pub, topic, len(nodes)-1, lat)
			subs := len(nodes) - 1
			tick := time.NewTicker(time.Second / time.Duration(rate))
			defer tick.Stop()
			b.ResetTimer()
			start := time.Now()
			for i := 0; i < b.N; i++ {
				<-tick.C
				if err := pub.Publish(ctx, topic, stamp(256)); err != nil {
					b.Fatal(err)
				}
			}
			sent := time.Since(start)
			got := 0
		drain:
			for got < b.N*subs {
				select {
				case <-lat:
					got++
				case <-time.After(3 * time.Second):
					break drain
				}
			}
			b.StopTimer()
			b.ReportMetric(float64(b.N)/sent.Seconds(), "msgs/s")
			b.ReportMetric(100*float64(got)/float64(b.N*subs), "delivered-%")
		})
	}
}

// waitMeshed publishes probes until every subscriber received one in the
// same round, then drains the channel.
func waitMeshed(b *testing.B, ctx context.Context, pub *node.Node, topic string, subs int, lat <-chan time.Duration) {
	b.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		if err := pub.Publish(ctx, topic, stamp(8)); err != nil {
			b.Fatal(err)
		}
		got := 0
		timeout := time.After(500 * time.Millisecond)
	round:
		for got < subs {
			select {
			case <-lat:
				got++
			case <-timeout:
				break round
			}
		}
		if got == subs {
			// Drain stragglers from earlier rounds.
			for {
				select {
				case <-lat:
				case <-time.After(200 * time.Millisecond):
					return
				}
			}
		}
	}
	b.Fatal("subscribers never all meshed")
}
