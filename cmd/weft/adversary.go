package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/ipfs/go-cid"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/spf13/cobra"

	"github.com/weft-p2p/weft/node"
	"github.com/weft-p2p/weft/node/adversary"
	"github.com/weft-p2p/weft/p2p"
)

// newAdversaryCmd is the hidden `weft adversary`: it runs node/adversary's
// malicious peer against the peers given, so that a testnet node (the
// testnet's attack step) or a developer can attack a swarm they run. It
// never looks for peers itself: it dials only --connect.
func newAdversaryCmd() *cobra.Command {
	var (
		connect  []string
		listen   string
		swarmKey string
		wait     time.Duration
	)
	cmd := &cobra.Command{
		Use:    "adversary",
		Short:  "Attack the given peers as a malicious peer (testing only)",
		Hidden: true,
	}
	pf := cmd.PersistentFlags()
	pf.StringArrayVar(&connect, "connect", nil, "peer to dial and attack, as a multiaddr ending in /p2p/ID (repeatable)")
	pf.StringVar(&listen, "listen", "/ip4/0.0.0.0/tcp/0", "swarm listen multiaddr of the attacker")
	pf.StringVar(&swarmKey, "swarm-key", "", "swarm.key of a private swarm to join")
	pf.DurationVar(&wait, "wait", 20*time.Second, "how long to wait for the peers to see the attacker on the topic")

	// start makes the peer, dials every --connect and, for a topic,
	// subscribes and waits until the dialled peers see it there.
	start := func(ctx context.Context, topic string) (*adversary.Peer, []peer.ID, error) {
		if len(connect) == 0 {
			return nil, nil, errors.New("give at least one --connect")
		}
		o := adversary.Options{Listen: []string{listen}}
		if swarmKey != "" {
			data, err := os.ReadFile(swarmKey)
			if err != nil {
				return nil, nil, fmt.Errorf("read swarm key: %w", err)
			}
			if o.PSK, err = p2p.ParseSwarmKey(data); err != nil {
				return nil, nil, fmt.Errorf("%s: %w", swarmKey, err)
			}
		}
		a, err := adversary.New(ctx, o)
		if err != nil {
			return nil, nil, err
		}
		if topic != "" {
			if _, err := a.Subscribe(topic); err != nil {
				a.Close()
				return nil, nil, err
			}
		}
		var ids []peer.ID
		for _, s := range connect {
			ai, err := peer.AddrInfoFromString(s)
			if err != nil {
				a.Close()
				return nil, nil, fmt.Errorf("--connect %q: %w", s, err)
			}
			cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			err = a.Connect(cctx, *ai)
			cancel()
			if err != nil {
				fmt.Fprintf(cmd.ErrOrStderr(), "adversary: %v\n", err)
				continue
			}
			ids = append(ids, ai.ID)
		}
		if len(ids) == 0 {
			a.Close()
			return nil, nil, errors.New("could dial none of the peers")
		}
		if topic != "" {
			wctx, cancel := context.WithTimeout(ctx, wait)
			if err := a.WaitTopicPeers(wctx, topic, ids...); err != nil {
				fmt.Fprintf(cmd.ErrOrStderr(), "adversary: %v; attacking the %d seen\n", err, len(a.TopicPeers(topic)))
			}
			cancel()
		}
		return a, ids, nil
	}
	// finish waits until the flood left the attacker's queues (or 10 s),
	// prints what was sent, and closes the peer.
	finish := func(a *adversary.Peer, ids []peer.ID, what string, n int, began time.Time) {
		took := time.Since(began)
		deadline := time.Now().Add(10 * time.Second)
		for time.Now().Before(deadline) {
			done := true
			for _, id := range ids {
				sent, dropped := a.SentTo(id)
				done = done && sent+dropped >= n
			}
			if done {
				break
			}
			time.Sleep(50 * time.Millisecond)
		}
		total, dropped := 0, 0
		for _, id := range ids {
			s, d := a.SentTo(id)
			total += s
			dropped += d
		}
		fmt.Fprintf(cmd.OutOrStdout(), "%s: %d messages published in %.1fs; %d copies sent to %d peers, %d dropped (peers that cut it off get none)\n",
			what, n, took.Seconds(), total, len(ids), dropped)
		a.Close()
	}
	collFlags := func(c *cobra.Command, coll *string, count *int, rate *float64, defCount int, defRate float64) {
		c.Flags().StringVar(coll, "collection", "", "collection ID")
		c.Flags().IntVar(count, "count", defCount, "messages to publish")
		c.Flags().Float64Var(rate, "rate", defRate, "messages a second (0: as fast as possible)")
		_ = c.MarkFlagRequired("collection")
	}

	var (
		coll   string
		count  int
		rate   float64
		heads  int
		member bool
	)
	junk := &cobra.Command{
		Use:   "junk-heads",
		Short: "Publish heads messages naming random heads no one has",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			id, err := cid.Decode(coll)
			if err != nil {
				return fmt.Errorf("--collection: %w", err)
			}
			a, ids, err := start(cmd.Context(), node.CollectionTopic(id))
			if err != nil {
				return err
			}
			began := time.Now()
			if err := a.JunkHeads(cmd.Context(), id, count, heads, rate); err != nil {
				a.Close()
				return err
			}
			finish(a, ids, fmt.Sprintf("junk-heads (%d heads each)", heads), count, began)
			return nil
		},
	}
	collFlags(junk, &coll, &count, &rate, 120, 20)
	junk.Flags().IntVar(&heads, "heads", 1024, "random heads per message")

	flood := &cobra.Command{
		Use:   "heads-requests",
		Short: "Publish heads requests with random digests",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			id, err := cid.Decode(coll)
			if err != nil {
				return fmt.Errorf("--collection: %w", err)
			}
			a, ids, err := start(cmd.Context(), node.CollectionTopic(id))
			if err != nil {
				return err
			}
			if member {
				if err := a.JoinCollection(cmd.Context(), id, time.Second, true); err != nil {
					a.Close()
					return err
				}
				time.Sleep(2 * time.Second) // its heartbeat reaches the members first
			}
			began := time.Now()
			if err := a.HeadsRequestFlood(cmd.Context(), id, count, rate); err != nil {
				a.Close()
				return err
			}
			finish(a, ids, "heads-requests", count, began)
			return nil
		},
	}
	collFlags(flood, &coll, &count, &rate, 5000, 500)
	flood.Flags().BoolVar(&member, "member", false, "join the collection first (signed heartbeats saying it is leaving)")

	var feedName string
	records := &cobra.Command{
		Use:   "feed-records",
		Short: "Publish invalid records on a feed's topic (random bytes, and records signed by a key that is not the feed's)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			topic, err := adversary.FeedTopic(feedName)
			if err != nil {
				return err
			}
			recs, err := adversary.InvalidFeedRecords(feedName, adversary.RandomCID(), count)
			if err != nil {
				return err
			}
			a, ids, err := start(cmd.Context(), topic)
			if err != nil {
				return err
			}
			began := time.Now()
			if err := a.Flood(cmd.Context(), topic, count, rate, func(i int) []byte { return recs[i] }); err != nil {
				a.Close()
				return err
			}
			finish(a, ids, "feed-records", count, began)
			return nil
		},
	}
	records.Flags().StringVar(&feedName, "feed", "", "feed name")
	records.Flags().IntVar(&count, "count", 1000, "records to publish")
	records.Flags().Float64Var(&rate, "rate", 0, "records a second (0: as fast as possible)")
	_ = records.MarkFlagRequired("feed")

	var (
		root     string
		streams  int
		duration time.Duration
	)
	slow := &cobra.Command{
		Use:   "slow-exchange",
		Short: "Hold native-exchange streams for a DAG open on every peer, reading 1 KiB every 10 s",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := cid.Decode(root)
			if err != nil {
				return fmt.Errorf("--cid: %w", err)
			}
			a, ids, err := start(cmd.Context(), "")
			if err != nil {
				return err
			}
			defer a.Close()
			ctx, cancel := context.WithTimeout(cmd.Context(), duration)
			defer cancel()
			for _, id := range ids {
				a.SlowExchange(ctx, id, c, streams)
			}
			<-ctx.Done()
			fmt.Fprintf(cmd.OutOrStdout(), "slow-exchange: %d streams on each of %d peers for %v\n", streams, len(ids), duration)
			return nil
		},
	}
	slow.Flags().StringVar(&root, "cid", "", "root of the DAG to ask for")
	slow.Flags().IntVar(&streams, "streams", 80, "streams per peer")
	slow.Flags().DurationVar(&duration, "duration", 30*time.Second, "how long to hold them")
	_ = slow.MarkFlagRequired("cid")

	cmd.AddCommand(junk, flood, records, slow)
	return cmd
}
