package feed

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/ipfs/boxo/ipns"
	"github.com/libp2p/go-libp2p/core/peer"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"
)

// catchCall is a catch-up in flight; concurrent CatchUps of one name share it.
type catchCall struct {
	done chan struct{}
	rec  Record
	err  error
}

// HandleRequest answers a catch-up request from peer from (unused for now;
// there for logging and rate limits) with the newest
// unexpired record held for the requested name. It never blocks on I/O;
// node/'s stream handler calls it. An error (wrapping ErrBadRequest) means
// the request did not decode: close the stream without answering.
func (m *Manager) HandleRequest(from peer.ID, data []byte) ([]byte, error) {
	req, err := DecodeRequest(data)
	if err != nil {
		m.c.badRequests.Add(1)
		return nil, err
	}
	m.c.requestsServed.Add(1)
	if m.cfg.Tracer != nil && req.Trace != "" {
		if ctx := remoteParent(context.Background(), req.Trace); trace.SpanContextFromContext(ctx).IsValid() {
			_, span := m.cfg.Tracer.Start(ctx, "weft.feed.catchup.serve", trace.WithSpanKind(trace.SpanKindServer),
				trace.WithAttributes(attribute.String("feed", req.Name.String()), attribute.String("peer", from.String())))
			defer span.End()
		}
	}
	m.mu.Lock()
	var held *Record
	if st := m.feeds[nameKey(req.Name)]; st != nil {
		held = st.held
	}
	m.mu.Unlock()
	var resp Response
	switch {
	case held == nil || m.clock.Now().After(held.EOL):
		resp.Status = StatusNotFound
	case req.Have && held.Seq <= req.HaveSeq:
		resp.Status = StatusNotNewer
	default:
		resp.Status, resp.Record = StatusFound, held.Raw
	}
	return resp.Marshal(), nil
}

// CatchUp brings name up to date after being offline or on follow: it asks
// up to Config.CatchUpPeers of the feed's topic peers for their newest
// record and, if none answers with one or says it holds nothing newer,
// falls back to the DHT (for a tracked feed, at most once per
// Config.CatchUpDHTEvery). Each record received is handled as one from
// gossip: validated, counted, and applied if newer. It returns the newest
// record now held for a tracked feed, or the best one found for another
// name, and an error wrapping ErrNotFound if there is none. Concurrent
// catch-ups of one name share one round. It blocks for up to about twice
// Config.CatchUpTimeout.
func (m *Manager) CatchUp(ctx context.Context, name ipns.Name) (Record, error) {
	key := nameKey(name)
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		return Record{}, ErrClosed
	}
	if c := m.catching[key]; c != nil {
		m.mu.Unlock()
		select {
		case <-c.done:
			return c.rec, c.err
		case <-ctx.Done():
			return Record{}, ctx.Err()
		}
	}
	c := &catchCall{done: make(chan struct{})}
	m.catching[key] = c
	m.mu.Unlock()

	c.rec, c.err = m.catchUp(ctx, name, false)

	m.mu.Lock()
	delete(m.catching, key)
	m.mu.Unlock()
	close(c.done)
	return c.rec, c.err
}

// CatchUpAll catches up every tracked feed, a few at a time. node/ calls it
// when the node (re)connects to the swarm.
func (m *Manager) CatchUpAll(ctx context.Context) error {
	return m.eachName(ctx, m.trackedNames(), m.CatchUp)
}

// Refresh resolves name again: like CatchUp, but the DHT is asked as well
// even when peers answered, since an owner that publishes like Kubo may
// reach only the DHT, and peers that follow the name may be as stale as
// this node.
func (m *Manager) Refresh(ctx context.Context, name ipns.Name) (Record, error) {
	if m.isClosed() {
		return Record{}, ErrClosed
	}
	return m.catchUp(ctx, name, true)
}

// RefreshAll refreshes every followed feed this node does not own, a few at
// a time. The Manager runs it every Config.ResolveInterval.
func (m *Manager) RefreshAll(ctx context.Context) error {
	m.mu.Lock()
	var names []ipns.Name
	for _, st := range m.feeds {
		if st.follow != nil && !st.owned {
			names = append(names, st.name)
		}
	}
	m.mu.Unlock()
	return m.eachName(ctx, names, m.Refresh)
}

func (m *Manager) isClosed() bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.closed
}

// eachName runs fn for every name, four at a time, and joins the errors
// other than ErrNotFound.
func (m *Manager) eachName(ctx context.Context, names []ipns.Name, fn func(context.Context, ipns.Name) (Record, error)) error {
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		errs []error
		sem  = make(chan struct{}, 4)
	)
	for _, name := range names {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			if _, err := fn(ctx, name); err != nil && !errors.Is(err, ErrNotFound) {
				mu.Lock()
				errs = append(errs, fmt.Errorf("catch up %s: %w", name, err))
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	return errors.Join(errs...)
}

// Resolve returns the newest valid record of name: the one held if the
// feed is tracked and the record unexpired, else one found by CatchUp.
func (m *Manager) Resolve(ctx context.Context, name ipns.Name) (Record, error) {
	if rec, ok := m.heldRecord(name); ok && !m.clock.Now().After(rec.EOL) {
		return rec, nil
	}
	rec, err := m.CatchUp(ctx, name)
	if err != nil {
		return Record{}, err
	}
	if m.clock.Now().After(rec.EOL) {
		return Record{}, fmt.Errorf("%w: %s: newest record (seq %d) expired", ErrNotFound, name, rec.Seq)
	}
	return rec, nil
}

func (m *Manager) heldRecord(name ipns.Name) (Record, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	st := m.feeds[nameKey(name)]
	if st == nil || !st.tracked() || st.held == nil {
		return Record{}, false
	}
	return *st.held, true
}

// catchUp asks peers (and the DHT when they have nothing newer to give, or
// always with refresh) for name's newest record.
func (m *Manager) catchUp(ctx context.Context, name ipns.Name, refresh bool) (Record, error) {
	m.c.catchUps.Add(1)
	req := Request{Name: name}
	if held, ok := m.heldRecord(name); ok {
		req.Have, req.HaveSeq = true, held.Seq
	}
	var (
		best     Record
		notNewer bool
		errs     []error
	)
	consider := func(data []byte) {
		if rec, ok := m.consider(name, data); ok && (best.IsZero() || rec.Seq > best.Seq) {
			best = rec
		}
	}
	for _, r := range m.askPeers(ctx, name, req) {
		switch {
		case r.err != nil:
			errs = append(errs, r.err)
		case r.resp.Status == StatusFound:
			consider(r.resp.Record)
		case r.resp.Status == StatusNotNewer:
			notNewer = true
		}
	}
	if m.cfg.Router != nil && (refresh || best.IsZero() && !notNewer) && m.askDHT(name, refresh) {
		m.c.catchUpsDHT.Add(1)
		dctx, cancel := context.WithTimeout(ctx, m.cfg.CatchUpTimeout)
		data, err := m.cfg.Router.GetValue(dctx, RoutingKey(name))
		cancel()
		if err != nil {
			errs = append(errs, fmt.Errorf("DHT: %w", err))
		} else {
			consider(data)
		}
	}
	if held, ok := m.heldRecord(name); ok {
		return held, nil
	}
	if !best.IsZero() {
		return best, nil
	}
	if err := errors.Join(errs...); err != nil {
		return Record{}, fmt.Errorf("%w: %s: %w", ErrNotFound, name, err)
	}
	return Record{}, fmt.Errorf("%w: %s", ErrNotFound, name)
}

// askDHT says whether a catch-up of name asks the DHT now (always with
// force), and if so records when: a name not tracked here is always
// looked up, a tracked one if the DHT was last asked about it
// Config.CatchUpDHTEvery ago or longer.
func (m *Manager) askDHT(name ipns.Name, force bool) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	st := m.feeds[nameKey(name)]
	if st == nil || !st.tracked() {
		return true
	}
	now := m.clock.Now()
	if !force && m.cfg.CatchUpDHTEvery > 0 && !st.dhtAsked.IsZero() && now.Sub(st.dhtAsked) < m.cfg.CatchUpDHTEvery {
		return false
	}
	st.dhtAsked = now
	return true
}

// consider handles a record found by a catch-up. For a tracked feed it is
// offered as one from gossip; for another name it is only validated (and
// a rejection counted). ok reports whether it was valid.
func (m *Manager) consider(name ipns.Name, data []byte) (Record, bool) {
	if _, tracked := m.Feed(name); tracked {
		d := m.offer(name, data)
		return d.Record, !d.Record.IsZero()
	}
	u, err := parse(name, data, m.cfg.MaxRecordSize)
	if err != nil {
		m.c.count(err)
		return Record{}, false
	}
	rec, err := m.verify(u)
	if err != nil {
		m.c.count(err)
		return Record{}, false
	}
	return rec, true
}

// HandleFetch answers a libp2p fetch request (FetchProtocolID) from peer
// from with the newest unexpired record held for the requested routing
// key, as Kubo's IPNS-over-pubsub does for the names it follows. It never
// blocks on I/O. An error (wrapping ErrBadRequest) means the request did
// not decode: close the stream without answering.
func (m *Manager) HandleFetch(from peer.ID, data []byte) ([]byte, error) {
	req, err := DecodeFetchRequest(data)
	if err != nil {
		m.c.badRequests.Add(1)
		return nil, err
	}
	m.c.requestsServed.Add(1)
	resp := FetchResponse{Status: FetchNotFound}
	if name, err := ipns.NameFromRoutingKey([]byte(req.Identifier)); err == nil {
		if held, ok := m.heldRecord(name); ok && !m.clock.Now().After(held.EOL) {
			resp = FetchResponse{Status: FetchOK, Data: held.Raw}
		}
	}
	return resp.Marshal(), nil
}

type peerAnswer struct {
	resp Response
	err  error
}

// askPeers sends req to up to Config.CatchUpPeers peers on the feed's
// topic, and a fetch request to up to as many others on its IPNS topic (as
// Kubo's do), all at once, and collects their answers within
// Config.CatchUpTimeout. A fetched record comes back as StatusFound.
func (m *Manager) askPeers(ctx context.Context, name ipns.Name, req Request) []peerAnswer {
	if m.cfg.Exchange == nil {
		return nil
	}
	asked := map[peer.ID]bool{m.cfg.Self: true}
	var peers, fetchPeers []peer.ID
	for _, p := range m.cfg.Exchange.TopicPeers(Topic(name)) {
		if !asked[p] && len(peers) < m.cfg.CatchUpPeers {
			peers = append(peers, p)
			asked[p] = true
		}
	}
	if m.cfg.Fetcher != nil {
		for _, p := range m.cfg.Exchange.TopicPeers(IPNSTopic(name)) {
			if !asked[p] && len(fetchPeers) < m.cfg.CatchUpPeers {
				fetchPeers = append(fetchPeers, p)
				asked[p] = true
			}
		}
	}
	if len(peers)+len(fetchPeers) == 0 {
		return nil
	}
	qctx, cancel := context.WithTimeout(ctx, m.cfg.CatchUpTimeout)
	defer cancel()
	reqData := req.Marshal()
	fetchData := FetchRequest{Identifier: RoutingKey(name)}.Marshal()
	answers := make([]peerAnswer, len(peers)+len(fetchPeers))
	var wg sync.WaitGroup
	for i, p := range fetchPeers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			a := &answers[len(peers)+i]
			data, err := m.cfg.Fetcher.Fetch(qctx, p, fetchData)
			if err != nil {
				a.err = fmt.Errorf("peer %s: fetch: %w", p, err)
				return
			}
			resp, err := DecodeFetchResponse(data)
			if err != nil {
				a.err = fmt.Errorf("peer %s: fetch: %w", p, err)
				return
			}
			if resp.Status == FetchOK && len(resp.Data) > 0 {
				a.resp = Response{Status: StatusFound, Record: resp.Data}
			} else {
				a.resp = Response{Status: StatusNotFound}
			}
		}()
	}
	for i, p := range peers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			data := reqData
			if tr := m.cfg.Tracer; tr != nil {
				ctx, span := tr.Start(qctx, "weft.feed.catchup.request", trace.WithSpanKind(trace.SpanKindClient),
					trace.WithAttributes(attribute.String("feed", name.String()), attribute.String("peer", p.String())))
				defer func() {
					if err := answers[i].err; err != nil {
						span.RecordError(err)
						span.SetStatus(codes.Error, err.Error())
					} else {
						span.SetAttributes(attribute.String("status", answers[i].resp.Status.String()))
					}
					span.End()
				}()
				if tp := traceParent(ctx); tp != "" {
					r := req
					r.Trace = tp
					data = r.Marshal()
				}
			}
			data, err := m.cfg.Exchange.Request(qctx, p, data)
			if err != nil {
				answers[i].err = fmt.Errorf("peer %s: %w", p, err)
				return
			}
			resp, err := DecodeResponse(data)
			if err != nil {
				answers[i].err = fmt.Errorf("peer %s: %w", p, err)
				return
			}
			answers[i].resp = resp
		}()
	}
	wg.Wait()
	return answers
}
