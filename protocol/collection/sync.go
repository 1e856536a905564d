package collection

import (
	"context"

	"github.com/ipfs/go-cid"
)

// SyncResult adds up what a Sync applied.
type SyncResult struct {
	Result
	Rounds  int // GetMany calls
	Fetched int // blocks received
}

func (r *Result) merge(o Result) {
	r.Applied = append(r.Applied, o.Applied...)
	r.Loaded = append(r.Loaded, o.Loaded...)
	r.Keep = append(r.Keep, o.Keep...)
	r.Rejected = append(r.Rejected, o.Rejected...)
	r.HeadsChanged = r.HeadsChanged || o.HeadsChanged
}

// Sync fetches everything the replica is missing through bg, in rounds:
// each round asks for every missing block at once (all announced heads,
// all hinted recent deltas, all parents of waiting deltas, all chunks of a
// snapshot), and the blocks it brings name the next round's. Sync returns
// when nothing is missing, or with an *IncompleteError when blocks could
// not be fetched (each is asked once per Sync) or ctx ended. It holds no
// lock while bg works, so the replica stays usable meanwhile; several
// Syncs may run at once, though one at a time fetches less twice.
func (c *Collection) Sync(ctx context.Context, bg BlockGetter) (SyncResult, error) {
	var out SyncResult
	asked := map[string]bool{}
	for {
		var want []cid.Cid
		for _, id := range c.Missing() {
			if !asked[id.KeyString()] {
				want = append(want, id)
			}
		}
		if len(want) == 0 {
			return out, c.incomplete(asked, nil)
		}
		if err := ctx.Err(); err != nil {
			return out, c.incomplete(asked, err)
		}
		for _, id := range want {
			asked[id.KeyString()] = true
		}
		out.Rounds++
		for b := range bg.GetMany(ctx, want) {
			if !asked[b.Cid().KeyString()] {
				continue
			}
			out.Fetched++
			res, _ := c.AddBlock(b)
			out.merge(res)
		}
	}
}

// incomplete returns an error naming the blocks asked for and still
// missing, or nil.
func (c *Collection) incomplete(asked map[string]bool, ctxErr error) error {
	var miss []cid.Cid
	for _, id := range c.Missing() {
		if asked[id.KeyString()] || ctxErr != nil {
			miss = append(miss, id)
		}
	}
	if len(miss) == 0 {
		return nil
	}
	return &IncompleteError{Missing: miss, Err: ctxErr}
}
