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
	o := &adversaryOpts{}
	cmd := &cobra.Command{
		Use:    "adversary",
		Short:  "Attack the given peers as a malicious peer (testing only)",
		Hidden: true,
	}
	pf := cmd.PersistentFlags()
	pf.StringArrayVar(&o.connect, "connect", nil, "peer to dial and attack, as a multiaddr ending in /p2p/ID (repeatable)")
	pf.StringVar(&o.listen, "listen", "/ip4/0.0.0.0/tcp/0", "swarm listen multiaddr of the attacker")
	pf.StringVar(&o.swarmKey, "swarm-key", "", "swarm.key of a private swarm to join")
	pf.DurationVar(&o.wait, "wait", 20*time.Second, "how long to wait for the peers to see the attacker on the topic")
	cmd.AddCommand(newJunkHeadsCmd(o), newHeadsRequestsCmd(o), newFeedRecordsCmd(o), newSlowExchangeCmd(o))
	return cmd
}

// adversaryOpts are the flags every attack shares.
type adversaryOpts struct {
	connect  []string
	listen   string
	swarmKey string
	wait     time.Duration
}

// start makes the peer, dials every --connect and, for a topic, subscribes
// and waits until the dialled peers see it there.
func (o *adversaryOpts) start(cmd *cobra.Command, topic string) (*adversary.Peer, []peer.ID, error) {
	ctx := cmd.Context()
	if len(o.connect) == 0 {
		return nil, nil, errors.New("give at least one --connect")
	}
	ao := adversary.Options{Listen: []string{o.listen}}
	if o.swarmKey != "" {
		data, err := os.ReadFile(o.swarmKey)
		if err != nil {
			return nil, nil, fmt.Errorf("read swarm key: %w", err)
		}
		if ao.PSK, err = p2p.ParseSwarmKey(data); err != nil {
			return nil, nil, fmt.Errorf("%s: %w", o.swarmKey, err)
		}
	}
	a, err := adversary.New(ctx, ao)
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
	for _, s := range o.connect {
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
		wctx, cancel := context.WithTimeout(ctx, o.wait)
		if err := a.WaitTopicPeers(wctx, topic, ids...); err != nil {
			fmt.Fprintf(cmd.ErrOrStderr(), "adversary: %v; attacking the %d seen\n", err, len(a.TopicPeers(topic)))
		}
		cancel()
	}
	return a, ids, nil
}

// finish waits until the flood left the attacker's queues (or 10 s),
// prints what was sent, and closes the peer.
func (o *adversaryOpts) finish(cmd *cobra.Command, a *adversary.Peer, ids []peer.ID, what string, n int, began time.Time) {
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

// collectionFlood holds the flags of the attacks on a collection's topic.
type collectionFlood struct {
	coll  string
	count int
	rate  float64
}

func (f *collectionFlood) flags(c *cobra.Command, defCount int, defRate float64) {
	c.Flags().StringVar(&f.coll, "collection", "", "collection ID")
	c.Flags().IntVar(&f.count, "count", defCount, "messages to publish")
	c.Flags().Float64Var(&f.rate, "rate", defRate, "messages a second (0: as fast as possible)")
	_ = c.MarkFlagRequired("collection")
}

// run starts the attacker on the collection's topic, runs attack, and
// reports what it sent as what.
func (f *collectionFlood) run(cmd *cobra.Command, o *adversaryOpts, what string, attack func(a *adversary.Peer, id cid.Cid) error) error {
	id, err := cid.Decode(f.coll)
	if err != nil {
		return fmt.Errorf("--collection: %w", err)
	}
	a, ids, err := o.start(cmd, node.CollectionTopic(id))
	if err != nil {
		return err
	}
	began := time.Now()
	if err := attack(a, id); err != nil {
		a.Close()
		return err
	}
	o.finish(cmd, a, ids, what, f.count, began)
	return nil
}

func newJunkHeadsCmd(o *adversaryOpts) *cobra.Command {
	var f collectionFlood
	var heads int
	c := &cobra.Command{
		Use:   "junk-heads",
		Short: "Publish heads messages naming random heads no one has",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return f.run(cmd, o, fmt.Sprintf("junk-heads (%d heads each)", heads), func(a *adversary.Peer, id cid.Cid) error {
				return a.JunkHeads(cmd.Context(), id, f.count, heads, f.rate)
			})
		},
	}
	f.flags(c, 120, 20)
	c.Flags().IntVar(&heads, "heads", 1024, "random heads per message")
	return c
}

func newHeadsRequestsCmd(o *adversaryOpts) *cobra.Command {
	var f collectionFlood
	var member bool
	c := &cobra.Command{
		Use:   "heads-requests",
		Short: "Publish heads requests with random digests",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return f.run(cmd, o, "heads-requests", func(a *adversary.Peer, id cid.Cid) error {
				if member {
					if err := a.JoinCollection(cmd.Context(), id, time.Second, true); err != nil {
						return err
					}
					time.Sleep(2 * time.Second) // its heartbeat reaches the members first
				}
				return a.HeadsRequestFlood(cmd.Context(), id, f.count, f.rate)
			})
		},
	}
	f.flags(c, 5000, 500)
	c.Flags().BoolVar(&member, "member", false, "join the collection first (signed heartbeats saying it is leaving)")
	return c
}

func newFeedRecordsCmd(o *adversaryOpts) *cobra.Command {
	var (
		feedName string
		count    int
		rate     float64
	)
	c := &cobra.Command{
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
			a, ids, err := o.start(cmd, topic)
			if err != nil {
				return err
			}
			began := time.Now()
			if err := a.Flood(cmd.Context(), topic, count, rate, func(i int) []byte { return recs[i] }); err != nil {
				a.Close()
				return err
			}
			o.finish(cmd, a, ids, "feed-records", count, began)
			return nil
		},
	}
	c.Flags().StringVar(&feedName, "feed", "", "feed name")
	c.Flags().IntVar(&count, "count", 1000, "records to publish")
	c.Flags().Float64Var(&rate, "rate", 0, "records a second (0: as fast as possible)")
	_ = c.MarkFlagRequired("feed")
	return c
}

func newSlowExchangeCmd(o *adversaryOpts) *cobra.Command {
	var (
		root     string
		streams  int
		duration time.Duration
	)
	c := &cobra.Command{
		Use:   "slow-exchange",
		Short: "Hold native-exchange streams for a DAG open on every peer, reading 1 KiB every 10 s",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			dag, err := cid.Decode(root)
			if err != nil {
				return fmt.Errorf("--cid: %w", err)
			}
			a, ids, err := o.start(cmd, "")
			if err != nil {
				return err
			}
			defer a.Close()
			ctx, cancel := context.WithTimeout(cmd.Context(), duration)
			defer cancel()
			for _, id := range ids {
				a.SlowExchange(ctx, id, dag, streams)
			}
			<-ctx.Done()
			fmt.Fprintf(cmd.OutOrStdout(), "slow-exchange: %d streams on each of %d peers for %v\n", streams, len(ids), duration)
			return nil
		},
	}
	c.Flags().StringVar(&root, "cid", "", "root of the DAG to ask for")
	c.Flags().IntVar(&streams, "streams", 80, "streams per peer")
	c.Flags().DurationVar(&duration, "duration", 30*time.Second, "how long to hold them")
	_ = c.MarkFlagRequired("cid")
	return c
}
