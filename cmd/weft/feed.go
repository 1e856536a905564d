package main

import (
	"context"
	"fmt"
	"io"

	"github.com/spf13/cobra"

	"github.com/weft-p2p/weft/node/api"
)

func newFeedCmd(o *clientOpts) *cobra.Command {
	cmd := &cobra.Command{Use: "feed", Short: "Signed feeds: publish a CID under a key; follow feeds to replicate them"}
	var key string
	publish := clientCmd(o, "publish CID", "Publish CID as the next version of a feed", cobra.ExactArgs(1),
		func(ctx context.Context, c *api.Client, a []string) (any, error) {
			return c.FeedPublish(ctx, key, a[0])
		},
		func(w io.Writer, v any) {
			r := v.(api.FeedRecord)
			fmt.Fprintf(w, "published %s seq %d -> %s\n", r.Name, r.Seq, r.CID)
		})
	publish.Flags().StringVar(&key, "key", "self", "key to sign with (see 'weft key ls')")
	resolve := clientCmd(o, "resolve NAME", "Print the CID a feed points at now", cobra.ExactArgs(1),
		func(ctx context.Context, c *api.Client, a []string) (any, error) { return c.FeedResolve(ctx, a[0]) },
		func(w io.Writer, v any) {
			r := v.(api.FeedRecord)
			fmt.Fprintf(w, "%s\t(seq %d)\n", r.CID, r.Seq)
		})
	var pin, keep, noWait bool
	follow := clientCmd(o, "follow NAME", "Follow a feed: learn each new version (and fetch and pin it with --pin)", cobra.ExactArgs(1),
		func(ctx context.Context, c *api.Client, a []string) (any, error) {
			return c.FeedFollow(ctx, a[0], api.FollowRequest{Pin: pin, KeepHistory: keep, NoWait: noWait})
		},
		func(w io.Writer, v any) {
			f := v.(api.Feed)
			if f.Held.CID == "" && noWait {
				fmt.Fprintf(w, "following %s (catching up in the background)\n", f.Name)
				return
			}
			if f.Held.CID == "" {
				fmt.Fprintf(w, "following %s (no record yet)\n", f.Name)
				return
			}
			fmt.Fprintf(w, "following %s (at seq %d)\n", f.Name, f.Held.Seq)
		})
	follow.Flags().BoolVar(&pin, "pin", false, "fetch and pin each version, unpinning the one it replaces")
	follow.Flags().BoolVar(&keep, "keep-history", false, "with --pin: keep earlier versions pinned")
	follow.Flags().BoolVar(&noWait, "no-wait", false, "return once following, without waiting for the first catch-up (up to about 20s when no peer has the feed)")
	unfollow := clientCmd(o, "unfollow NAME", "Stop following a feed (unpins what following pinned)", cobra.ExactArgs(1),
		func(ctx context.Context, c *api.Client, a []string) (any, error) {
			return map[string]string{"unfollowed": a[0]}, c.FeedUnfollow(ctx, a[0])
		},
		func(w io.Writer, v any) { fmt.Fprintf(w, "unfollowed %s\n", v.(map[string]string)["unfollowed"]) })
	ls := clientCmd(o, "ls", "List followed and owned feeds", cobra.NoArgs,
		func(ctx context.Context, c *api.Client, _ []string) (any, error) { return c.FeedLs(ctx) },
		func(w io.Writer, v any) {
			t := newTable(w)
			fmt.Fprintln(t, "FEED\tROLE\tSEQ\tCID\tPINNED SEQ\tDHT SEQ\tDHT ERROR")
			for _, f := range v.([]api.Feed) {
				role := "follow"
				if f.Owned {
					role = "own"
				}
				if f.Pin {
					role += "+pin"
				}
				dhtSeq, dhtErr := "-", "-"
				if f.DHT != nil {
					dhtSeq = fmt.Sprint(f.DHT.Seq)
					if f.DHT.LastError != "" {
						dhtErr = fmt.Sprintf("seq %d: %s", f.DHT.LastSeq, f.DHT.LastError)
					}
				}
				fmt.Fprintf(t, "%s\t%s\t%d\t%s\t%d\t%s\t%s\n", f.Name, role, f.Held.Seq, f.Held.CID, f.Pinned.Seq, dhtSeq, dhtErr)
			}
			t.Flush()
		})
	cmd.AddCommand(publish, resolve, follow, unfollow, ls)
	return cmd
}

func newKeyCmd(o *clientOpts) *cobra.Command {
	cmd := &cobra.Command{Use: "key", Short: "Feed keys: gen, ls"}
	gen := clientCmd(o, "gen NAME", "Make a new Ed25519 feed key", cobra.ExactArgs(1),
		func(ctx context.Context, c *api.Client, a []string) (any, error) { return c.KeyGen(ctx, a[0]) },
		func(w io.Writer, v any) { k := v.(api.Key); fmt.Fprintf(w, "%s %s\n", k.Name, k.Feed) })
	ls := clientCmd(o, "ls", "List feed keys and their feed names", cobra.NoArgs,
		func(ctx context.Context, c *api.Client, _ []string) (any, error) { return c.KeyLs(ctx) },
		func(w io.Writer, v any) {
			t := newTable(w)
			for _, k := range v.([]api.Key) {
				fmt.Fprintf(t, "%s\t%s\n", k.Name, k.Feed)
			}
			t.Flush()
		})
	cmd.AddCommand(gen, ls)
	return cmd
}
