package main

import (
	"context"
	"fmt"
	"io"
	"strings"

	"github.com/spf13/cobra"

	"github.com/weft-p2p/weft/node/api"
)

// newCollectionCmd is `weft collection`: replicated sets of pins shared by
// the nodes that join them. A collection is known everywhere by its ID
// (the CID `create` prints); the name is a local label, so every command
// takes either.
func newCollectionCmd(o *clientOpts) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "collection",
		Short: "Replicated collections of pins shared between nodes",
		Long: `A collection is a set of CIDs that its members keep pinned, each item on R
members (chosen by rendezvous hashing, repaired when a member goes away).

Create one, give its ID to other nodes, and have them join it:

  weft collection create photos --replication 3       # or -R 3; prints the collection ID
  weft collection join ID [NAME]                      # on the other nodes
  weft collection grant photos PEER                   # let PEER add and remove items
  weft collection add photos CID --name holiday.jpg
  weft collection items photos                        # its items ('list' lists collections)
  weft collection status photos

NAME is a local label; every command takes the local name or the ID.`,
	}
	var replication int
	create := clientCmd(o, "create NAME", "Create a collection (this node is its creator) and print its ID", cobra.ExactArgs(1),
		func(ctx context.Context, c *api.Client, a []string) (any, error) {
			return c.CollectionCreate(ctx, a[0], replication)
		},
		func(w io.Writer, v any) {
			s := v.(api.CollectionSummary)
			fmt.Fprintln(w, s.ID)
		})
	replicationFlag(create, &replication, 3, "copies kept of each item (the default of items added without --replication)")

	join := clientCmd(o, "join ID [NAME]", "Join a collection by ID, under a local NAME (default: the name its creator gave)", cobra.RangeArgs(1, 2),
		func(ctx context.Context, c *api.Client, a []string) (any, error) {
			name := ""
			if len(a) == 2 {
				name = a[1]
			}
			return c.CollectionJoin(ctx, a[0], name)
		},
		func(w io.Writer, v any) {
			s := v.(api.CollectionSummary)
			fmt.Fprintf(w, "joined %s as %q (replication %d, %d items)\n", s.ID, s.Name, s.Replication, s.Items)
		})

	var force bool
	leave := clientCmd(o, "leave NAME|ID", "Leave a collection once its items this node holds are pinned elsewhere (--force: at once)", cobra.ExactArgs(1),
		func(ctx context.Context, c *api.Client, a []string) (any, error) {
			return c.CollectionLeave(ctx, a[0], force)
		},
		func(w io.Writer, v any) {
			s := v.(api.CollectionSummary)
			if force {
				fmt.Fprintf(w, "left %s (%s)\n", s.Name, s.ID)
				return
			}
			fmt.Fprintf(w, "leaving %s (%s): its %d pins here go once their new holders have them ('weft collection list' stops showing it then)\n", s.Name, s.ID, s.Pinned)
		})
	leave.Flags().BoolVar(&force, "force", false, "drop the collection and its pins now, without waiting for the items to be pinned elsewhere")

	var addRepl int
	var label string
	add := clientCmd(o, "add NAME|ID CID...", "Add items to a collection (or change their replication or label)", cobra.MinimumNArgs(2),
		func(ctx context.Context, c *api.Client, a []string) (any, error) {
			return c.CollectionAdd(ctx, a[0], a[1:], addRepl, label)
		}, printWrite("added"))
	replicationFlag(add, &addRepl, 0, "copies kept of these items (0: the collection's default)")
	add.Flags().StringVar(&label, "name", "", "label of the items")

	rm := clientCmd(o, "rm NAME|ID CID...", "Remove items from a collection", cobra.MinimumNArgs(2),
		func(ctx context.Context, c *api.Client, a []string) (any, error) {
			return c.CollectionRm(ctx, a[0], a[1:])
		}, printWrite("removed"))

	grant := clientCmd(o, "grant NAME|ID PEER...", "Let peers add and remove items (creator only)", cobra.MinimumNArgs(2),
		func(ctx context.Context, c *api.Client, a []string) (any, error) {
			return c.CollectionGrant(ctx, a[0], a[1:])
		}, printWrite("granted"))

	snapshot := clientCmd(o, "snapshot NAME|ID", "Fold the collection's history into a snapshot now (writers do it on their own)", cobra.ExactArgs(1),
		func(ctx context.Context, c *api.Client, a []string) (any, error) {
			return c.CollectionSnapshot(ctx, a[0])
		}, printWrite("snapshot"))

	// `items` was `ls`, which read as "list collections" next to `list`;
	// `ls` stays an alias.
	items := clientCmd(o, "items NAME|ID", "List a collection's items (alias: ls)", cobra.ExactArgs(1),
		func(ctx context.Context, c *api.Client, a []string) (any, error) { return c.CollectionLs(ctx, a[0]) },
		func(w io.Writer, v any) {
			t := newTable(w)
			fmt.Fprintln(t, "CID\tR\tLABEL")
			for _, it := range v.([]api.CollectionItem) {
				fmt.Fprintf(t, "%s\t%s\t%s\n", it.CID, replText(it), it.Label)
			}
			t.Flush()
		})
	items.Aliases = []string{"ls"}

	status := clientCmd(o, "status NAME|ID", "Show a collection's members, heads, and each item's holders and state", cobra.ExactArgs(1),
		func(ctx context.Context, c *api.Client, a []string) (any, error) {
			return c.CollectionStatus(ctx, a[0])
		},
		func(w io.Writer, v any) { printCollectionStatus(w, v.(api.CollectionStatus)) })

	list := clientCmd(o, "list", "List the collections this node is a member of", cobra.NoArgs,
		func(ctx context.Context, c *api.Client, _ []string) (any, error) { return c.CollectionList(ctx) },
		func(w io.Writer, v any) {
			cols := v.([]api.CollectionSummary)
			if len(cols) == 0 {
				fmt.Fprintln(w, "no collections (create one with 'weft collection create NAME', or join one with 'weft collection join ID')")
				return
			}
			t := newTable(w)
			fmt.Fprintln(t, "NAME\tID\tR\tMEMBERS\tITEMS\tPINNED HERE\tHEALTH")
			for _, s := range cols {
				name := s.Name
				if s.Leaving {
					name += " (leaving)"
				}
				fmt.Fprintf(t, "%s\t%s\t%d\t%d/%d\t%d\t%d\t%s\n", name, s.ID, s.Replication, s.MembersAlive, s.Members, s.Items, s.Pinned, health(s))
			}
			t.Flush()
		})
	cmd.AddCommand(create, join, leave, add, rm, grant, snapshot, items, status, list)
	return cmd
}

// replicationFlag registers --replication (-R) on cmd. Its shorthand was
// -r, which on `weft add` means --recursive; -r still sets it, through a
// hidden flag, and a notice on stderr says to use -R. (pflag's own
// deprecation notice would go to cobra's output, stdout, where scripts
// read the collection ID.)
func replicationFlag(cmd *cobra.Command, p *int, def int, usage string) {
	f := cmd.Flags()
	f.IntVarP(p, "replication", "R", def, usage)
	f.IntVarP(p, "replication-r", "r", def, usage)
	_ = f.MarkHidden("replication-r")
	cmd.PreRun = func(cmd *cobra.Command, _ []string) {
		if cmd.Flags().Changed("replication-r") {
			fmt.Fprintln(cmd.ErrOrStderr(), "weft: -r is deprecated for --replication, use -R")
		}
	}
}

func replText(it api.CollectionItem) string {
	if it.Replication == 0 {
		return fmt.Sprintf("%d (default)", it.Effective)
	}
	return fmt.Sprint(it.Effective)
}

func health(s api.CollectionSummary) string {
	if s.Items == 0 {
		return "empty"
	}
	var parts []string
	if s.OK > 0 {
		parts = append(parts, fmt.Sprintf("%d ok", s.OK))
	}
	if s.Repairing > 0 {
		parts = append(parts, fmt.Sprintf("%d repairing", s.Repairing))
	}
	if s.UnderReplicated > 0 {
		parts = append(parts, fmt.Sprintf("%d under-replicated", s.UnderReplicated))
	}
	return strings.Join(parts, ", ")
}

func printWrite(verb string) func(w io.Writer, v any) {
	return func(w io.Writer, v any) {
		r := v.(api.CollectionWriteResult)
		if len(r.Blocks) == 0 {
			fmt.Fprintf(w, "%s: nothing to do\n", r.Name)
			return
		}
		fmt.Fprintf(w, "%s: %s (%d block(s) written); heads:\n", r.Name, verb, len(r.Blocks))
		for _, h := range r.Heads {
			fmt.Fprintf(w, "  %s  %s #%d\n", h.CID, h.Author, h.Seq)
		}
	}
}

// short abbreviates a peer ID for tables; the full one is in --json.
func short(id string) string {
	if len(id) <= 16 {
		return id
	}
	return id[:6] + "…" + id[len(id)-6:]
}

func shortList(ids []string) string {
	out := make([]string, len(ids))
	for i, id := range ids {
		out[i] = short(id)
	}
	return strings.Join(out, ",")
}

func printCollectionStatus(w io.Writer, s api.CollectionStatus) {
	t := newTable(w)
	fmt.Fprintf(t, "collection\t%s (%s)\n", s.Name, s.ID)
	if s.DescriptorName != s.Name {
		fmt.Fprintf(t, "creator's name\t%s\n", s.DescriptorName)
	}
	fmt.Fprintf(t, "creator\t%s\n", s.Creator)
	fmt.Fprintf(t, "replication\t%d\n", s.Replication)
	role := "member (read-only)"
	if s.CanWrite {
		role = "writer"
	}
	if s.Leaving {
		role += ", leaving"
	}
	fmt.Fprintf(t, "this node\t%s, %s\n", s.Self, role)
	fmt.Fprintf(t, "writers\t%d\n", len(s.Writers))
	fmt.Fprintf(t, "items\t%d: %s\n", s.Items, health(s.CollectionSummary))
	fmt.Fprintf(t, "heads\t%d\n", len(s.HeadList))
	for _, h := range s.HeadList {
		fmt.Fprintf(t, "\t%s  %s #%d\n", h.CID, short(h.Author), h.Seq)
	}
	fmt.Fprintf(t, "snapshots\t%d\n", len(s.Snapshots))
	fmt.Fprintf(t, "store\t%d deltas since the snapshot, %d blocks, %s\n", s.Store.Deltas, s.Store.Blocks, humanBytes(int64(s.Store.Bytes)))
	if s.PendingDAG > 0 || s.Missing > 0 {
		fmt.Fprintf(t, "syncing\t%d deltas wait for parents, %d blocks wanted\n", s.PendingDAG, s.Missing)
	}
	st := s.Stats
	fmt.Fprintf(t, "deltas\t%d applied, %d rejected (%d unauthorized), %d equivocations\n", st.Applied, st.Rejected, st.Unauthorized, st.Equivocations)
	if st.BadMessages > 0 || st.BadHeartbeats > 0 {
		fmt.Fprintf(t, "bad messages\t%d (%d heartbeats)\n", st.BadMessages, st.BadHeartbeats)
	}
	fmt.Fprintf(t, "pins here\t%d (%d made, %d released, %d failed)\n", s.Pinned, st.Pins, st.Unpins, st.PinFailures)
	if st.LastPinError != "" {
		fmt.Fprintf(t, "last pin error\t%s\n", st.LastPinError)
	}
	if st.LastSyncError != "" {
		fmt.Fprintf(t, "last sync error\t%s\n", st.LastSyncError)
	}
	t.Flush()

	fmt.Fprintf(w, "\nmembers (%d, %d alive; topic peers %d):\n", s.Members, s.MembersAlive, s.TopicPeers)
	t = newTable(w)
	fmt.Fprintln(t, "  PEER\tSTATE\tPINNED\tLAST SEEN")
	for _, m := range s.MemberList {
		seen := "-"
		if m.LastSeen != nil {
			seen = m.LastSeen.Local().Format("15:04:05")
		}
		id := m.ID
		if m.Self {
			id += " (self)"
		}
		fmt.Fprintf(t, "  %s\t%s\t%d\t%s\n", id, m.State, m.Pinned, seen)
	}
	t.Flush()

	if len(s.ItemList) == 0 {
		return
	}
	fmt.Fprintf(w, "\nitems:\n")
	t = newTable(w)
	fmt.Fprintln(t, "  CID\tSTATE\tR\tHOLDERS (pinned*)\tLABEL")
	for _, it := range s.ItemList {
		pinned := map[string]bool{}
		for _, p := range it.Pinned {
			pinned[p] = true
		}
		hs := make([]string, len(it.Holders))
		for i, h := range it.Holders {
			hs[i] = short(h)
			if pinned[h] {
				hs[i] += "*"
			}
		}
		holders := strings.Join(hs, ",")
		if len(it.Surplus) > 0 {
			holders += " +" + shortList(it.Surplus)
		}
		fmt.Fprintf(t, "  %s\t%s\t%d\t%s\t%s\n", it.CID, it.State, it.Effective, holders, it.Label)
	}
	t.Flush()
}
