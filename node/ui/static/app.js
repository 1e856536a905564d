// weft dashboard.
//
// Plain JavaScript with no build step and no dependencies. Every number on
// the page comes from this daemon's HTTP API, the same endpoints the CLI
// uses; nothing is loaded from anywhere else. The API token is sent as
// "Authorization: Bearer TOKEN" on every call. The daemon writes it into
// this page (meta weft-api-token) when a browser on its own machine opens
// the page by a loopback address; otherwise it is given as /ui/?token=TOKEN
// or in the token form, and kept in sessionStorage (this tab only).
//
// Text that comes from the network (agents, topic and feed names, ...) is
// only ever set with textContent, never parsed as HTML.
'use strict';

(() => {
  const POLL_MS = 2000;
  const BW_WINDOW_S = 300; // the bandwidth chart shows the last 5 minutes
  const OPTIONAL_RETRY_TICKS = 5; // ask an endpoint that answered 404 again every 10 s
  const MAX_TOPICS = 50; // topics whose peers are asked for on each tick
  const TOKEN_KEY = 'weft.apiToken';

  // Byte counters for the bandwidth chart, best first: the first pair that
  // /metrics has is drawn. (A libp2p-wide byte counter, if /metrics gains
  // one, belongs at the top.)
  const BW_SOURCES = [
    { label: 'block bytes (native exchange and Bitswap)', in: 'weft_transfer_received_bytes_total', out: 'weft_transfer_sent_bytes_total' },
    { label: 'Bitswap block bytes', in: 'weft_bitswap_received_bytes_total', out: 'weft_bitswap_sent_bytes_total' },
  ];

  // API paths, relative to /ui/ so that the page also works behind a
  // reverse proxy that mounts the daemon under a prefix.
  const API = {
    id: '../api/v1/id',
    status: '../api/v1/status',
    peers: '../api/v1/peers',
    table: '../api/v1/dht/table',
    topics: '../api/v1/pubsub/ls',
    topicPeers: (t) => '../api/v1/pubsub/peers?topic=' + encodeURIComponent(t),
    metrics: '../metrics',
    // GET /api/v1/feed/ls: a list of feeds (node/api.Feed), or {"feeds": [...]}:
    //   {
    //     "name": "k51qzi5uqu5d...",   IPNS name of the feed (required)
    //     "owned": true,               this node publishes the feed
    //     "following": false,          this node follows the feed
    //     "pin": true,                 versions are fetched and pinned
    //     "held":   {"seq": 3, "cid": "bafy..."},  newest valid record seen
    //     "pinned": {"seq": 3, "cid": "bafy..."},  newest version pinned
    //     "fetching": false,           a newer version is being fetched
    //     "error": ""                  last fetch error, if any
    //   }
    // Flat "seq", "cid" (or "value"/"path") and "pinned_seq" fields are read
    // too when there are no "held"/"pinned" records.
    // A 404 means this daemon has no feeds yet: the card says so.
    feeds: '../api/v1/feed/ls',
    // GET /api/v1/collection/list: a list of collections
    // (node/api.CollectionSummary), or {"collections": [...]}. Each:
    //   {
    //     "id": "bafy...",             collection ID (required)
    //     "name": "photos",
    //     "replication": 3,            R, the copies wanted of each item
    //     "members": 3,                members known (or a list of {"id", "state"})
    //     "members_alive": 3,          members heard from lately (optional)
    //     "items": 12,                 items (or a list of {"cid", "state"})
    //     "ok": 10,                    items with R confirmed copies
    //     "repairing": 1,              items some holder is still fetching
    //     "under_replicated": 1        items with fewer than R copies
    //   }
    // The three item counts may also come as "health": {"ok", "repairing",
    // "under_replicated"}, or be derived from the states in an "items" list
    // ("ok", "repairing", "under-replicated", as protocol/collection names them).
    // A 404 means this daemon has no collections yet: the card says so.
    collections: '../api/v1/collection/list',
  };

  // ---------------------------------------------------------------- token

  function takeTokenFromURL() {
    const u = new URL(location.href);
    if (!u.searchParams.has('token')) return;
    const t = u.searchParams.get('token').trim();
    if (t) sessionStorage.setItem(TOKEN_KEY, t);
    else sessionStorage.removeItem(TOKEN_KEY);
    // Keep the token out of the address bar, the history and bookmarks.
    u.searchParams.delete('token');
    history.replaceState(null, '', u.pathname + u.search + u.hash);
  }
  const pageToken = (document.querySelector('meta[name="weft-api-token"]') || {}).content || '';
  const token = () => pageToken || sessionStorage.getItem(TOKEN_KEY) || '';

  // ---------------------------------------------------------------- API

  class HTTPError extends Error {
    constructor(status, message) {
      super(message);
      this.status = status;
    }
  }

  async function call(path, as = 'json') {
    const headers = { Accept: as === 'json' ? 'application/json' : 'text/plain' };
    const t = token();
    if (t) headers.Authorization = 'Bearer ' + t;
    const resp = await fetch(path, { headers, cache: 'no-store', credentials: 'omit' });
    if (!resp.ok) {
      let msg = resp.status + ' ' + resp.statusText;
      try {
        const body = await resp.json();
        if (body && body.error) msg = body.error;
      } catch (_) { /* not JSON */ }
      throw new HTTPError(resp.status, msg);
    }
    if (resp.status === 204) return null;
    return as === 'json' ? resp.json() : resp.text();
  }

  // ---------------------------------------------------------------- DOM helpers

  const $ = (id) => document.getElementById(id);
  const SVGNS = 'http://www.w3.org/2000/svg';

  // h builds an element: attributes from attrs ("class", "title", data-*,
  // ...), children from strings (as text) and nodes.
  function h(tag, attrs, ...children) {
    const el = document.createElement(tag);
    setAttrs(el, attrs);
    append(el, children);
    return el;
  }
  function s(tag, attrs, ...children) {
    const el = document.createElementNS(SVGNS, tag);
    setAttrs(el, attrs);
    append(el, children);
    return el;
  }
  function setAttrs(el, attrs) {
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === undefined || v === null || v === false) continue;
      el.setAttribute(k, v === true ? '' : String(v));
    }
  }
  function append(el, children) {
    for (const c of children.flat(Infinity)) {
      if (c === undefined || c === null || c === false) continue;
      el.append(c instanceof Node ? c : document.createTextNode(String(c)));
    }
  }
  const empty = (text) => h('p', { class: 'empty' }, text);
  const errorNote = (what, err) => h('p', { class: 'err' }, what + ': ' + (err && err.message ? err.message : String(err)));

  // Sections are rebuilt only when their data changed, so that a selection
  // (say, of a peer ID being copied) survives the 2 s refresh.
  const rendered = {};
  function renderIfChanged(key, data, fn) {
    const sig = JSON.stringify(data);
    if (rendered[key] === sig) return;
    rendered[key] = sig;
    fn();
  }

  // ---------------------------------------------------------------- formatting

  function shortID(id) {
    if (!id) return '';
    return id.length > 16 ? id.slice(0, 8) + '…' + id.slice(-6) : id;
  }
  const tail = (id) => (id ? '…' + id.slice(-6) : '');

  function bytes(n) {
    if (!Number.isFinite(n)) return '—';
    const units = ['B', 'kB', 'MB', 'GB', 'TB', 'PB'];
    let i = 0;
    while (Math.abs(n) >= 1000 && i < units.length - 1) {
      n /= 1000;
      i++;
    }
    return (i === 0 ? String(Math.round(n)) : n.toFixed(n < 10 ? 2 : n < 100 ? 1 : 0)) + ' ' + units[i];
  }
  const rate = (n) => bytes(n) + '/s';

  function duration(sec) {
    sec = Math.max(0, Math.floor(sec));
    const d = Math.floor(sec / 86400), hr = Math.floor(sec / 3600) % 24, m = Math.floor(sec / 60) % 60, x = sec % 60;
    if (d) return d + 'd ' + hr + 'h';
    if (hr) return hr + 'h ' + m + 'm';
    if (m) return m + 'm ' + x + 's';
    return x + 's';
  }

  function latencyClass(ms) {
    if (!(ms > 0)) return 'none';
    if (ms < 20) return 'good';
    if (ms < 150) return 'fair';
    return 'slow';
  }
  function latency(ms) {
    if (!(ms > 0)) return '—';
    return (ms < 10 ? ms.toFixed(2) : ms < 100 ? ms.toFixed(1) : Math.round(ms)) + ' ms';
  }

  // shortProto turns "/ipfs/kad/1.0.0" into "kad" and "/meshsub/1.1.0" into
  // "meshsub": the family, without the namespace and the version.
  function shortProto(p) {
    const parts = p.split('/').filter((x) => x !== '');
    if (parts.length > 1 && ['ipfs', 'libp2p', 'p2p'].includes(parts[0])) parts.shift();
    const name = parts.filter((x) => !/^v?\d+(\.\d+)*$/.test(x)).join('/');
    return name || p;
  }

  // ---------------------------------------------------------------- state

  const S = {
    tick: 0,
    id: null,
    status: null,
    peers: [],
    table: { size: 0, peers: [] },
    topics: [],
    topicPeers: {},
    feeds: undefined, // undefined: not asked yet; null: no such endpoint
    collections: undefined,
    optional: { feeds: { missing: false, asked: -Infinity }, collections: { missing: false, asked: -Infinity } },
    samples: [], // {t (s), in, out}: counter readings
    source: null,
    errors: {},
  };

  // ---------------------------------------------------------------- polling

  async function refresh() {
    S.tick++;
    const jobs = {
      status: call(API.status),
      peers: call(API.peers),
      table: call(API.table),
      topics: call(API.topics),
      metrics: call(API.metrics, 'text'),
    };
    if (!S.id) jobs.id = call(API.id);
    for (const name of ['feeds', 'collections']) {
      const o = S.optional[name];
      if (o.missing && S.tick - o.asked < OPTIONAL_RETRY_TICKS) continue;
      o.asked = S.tick;
      jobs[name] = call(API[name]).then(
        (v) => ({ found: true, v }),
        (e) => {
          if (e.status === 404) return { found: false };
          throw e;
        });
    }
    const keys = Object.keys(jobs);
    const settled = await Promise.allSettled(keys.map((k) => jobs[k]));
    const got = {};
    const errs = {};
    keys.forEach((k, i) => {
      if (settled[i].status === 'fulfilled') got[k] = settled[i].value;
      else errs[k] = settled[i].reason;
    });
    const all = Object.values(errs);
    if (all.some((e) => e.status === 401)) {
      setConn('auth', token() ? 'API token refused' : 'API token needed');
      showAuth(token() ? 'The daemon refused this API token. Enter the current one.' : 'This daemon asks for its API token.');
      return;
    }
    if (all.length === keys.length) {
      const starting = all.some((e) => e.status === 503);
      setConn(starting ? 'starting' : 'error', starting ? 'daemon starting…' : 'daemon unreachable — retrying');
      return;
    }

    if (got.id) S.id = got.id;
    if ('status' in got) S.status = got.status;
    if ('peers' in got) S.peers = got.peers || [];
    if ('table' in got) S.table = got.table || { size: 0, peers: [] };
    if ('topics' in got) S.topics = got.topics || [];
    if ('metrics' in got) sample(got.metrics);
    for (const name of ['feeds', 'collections']) {
      if (name in got) {
        S.optional[name].missing = !got[name].found;
        S[name] = got[name].found ? got[name].v : null;
      }
    }
    S.errors = errs;

    // Peers of each topic: a second, smaller round.
    const topics = S.topics.slice(0, MAX_TOPICS);
    const tp = await Promise.allSettled(topics.map((t) => call(API.topicPeers(t))));
    const topicPeers = {};
    topics.forEach((t, i) => {
      topicPeers[t] = tp[i].status === 'fulfilled' ? tp[i].value || [] : null;
    });
    S.topicPeers = topicPeers;

    const failed = Object.keys(errs);
    if (failed.length) setConn('error', 'partial: ' + failed.join(', ') + ' failed');
    else setConn('live', 'live · ' + new Date().toLocaleTimeString([], { hour12: false }));
    hideAuthIfOK();
    render();
  }

  let timer = null;
  async function loop() {
    clearTimeout(timer);
    try {
      await refresh();
    } catch (e) {
      setConn('error', 'error: ' + e.message);
      console.warn('weft dashboard refresh', e);
    }
    timer = setTimeout(loop, POLL_MS);
  }

  // ---------------------------------------------------------------- metrics

  // counterValues reads Prometheus text: the sum over label sets of each
  // metric named.
  function counterValues(text, names) {
    const want = new Set(names);
    const out = {};
    for (const line of text.split('\n')) {
      if (line === '' || line[0] === '#') continue;
      const m = /^([A-Za-z_:][A-Za-z0-9_:]*)(\{[^}]*\})?\s+(\S+)/.exec(line);
      if (!m || !want.has(m[1])) continue;
      const v = Number(m[3]);
      if (Number.isFinite(v)) out[m[1]] = (out[m[1]] || 0) + v;
    }
    return out;
  }

  function sample(text) {
    const names = BW_SOURCES.flatMap((x) => [x.in, x.out]);
    const vals = counterValues(text, names);
    const src = BW_SOURCES.find((x) => x.in in vals && x.out in vals);
    if (!src) {
      S.source = null;
      return;
    }
    if (S.source !== src) S.samples = [];
    S.source = src;
    const t = performance.now() / 1000;
    S.samples.push({ t, in: vals[src.in], out: vals[src.out] });
    while (S.samples.length > 2 && t - S.samples[1].t > BW_WINDOW_S) S.samples.shift();
  }

  // rates turns counter readings into bytes per second between readings; a
  // counter that went down (a restarted daemon) counts as zero.
  function rates() {
    const out = [];
    for (let i = 1; i < S.samples.length; i++) {
      const a = S.samples[i - 1], b = S.samples[i];
      const dt = b.t - a.t;
      if (dt <= 0) continue;
      out.push({ t: b.t, in: Math.max(0, (b.in - a.in) / dt), out: Math.max(0, (b.out - a.out) / dt) });
    }
    return out;
  }

  // ---------------------------------------------------------------- connection and token UI

  function setConn(state, text) {
    const c = $('conn');
    c.dataset.state = state;
    $('conn-text').textContent = text;
  }

  function showAuth(msg) {
    $('auth-msg').textContent = msg;
    const sec = $('auth');
    if (sec.hidden) {
      sec.hidden = false;
      $('auth-token').focus();
    }
  }
  let authOpenedByUser = false;
  function hideAuthIfOK() {
    if (!authOpenedByUser) $('auth').hidden = true;
  }

  function wireAuth() {
    $('auth-form').addEventListener('submit', (ev) => {
      ev.preventDefault();
      const t = $('auth-token').value.trim();
      if (t) sessionStorage.setItem(TOKEN_KEY, t);
      $('auth-token').value = '';
      authOpenedByUser = false;
      $('auth').hidden = true;
      setConn('connecting', 'connecting…');
      loop();
    });
    $('auth-forget').addEventListener('click', () => {
      sessionStorage.removeItem(TOKEN_KEY);
      $('auth-token').value = '';
      authOpenedByUser = false;
      loop();
    });
    $('token-btn').addEventListener('click', () => {
      const sec = $('auth');
      if (sec.hidden) {
        authOpenedByUser = true;
        showAuth(token() ? 'This tab has an API token. Enter another one, or forget it.' : 'No API token set. The daemon gives this page its token only when it is opened on the daemon\'s own machine at 127.0.0.1 or localhost.');
      } else {
        authOpenedByUser = false;
        sec.hidden = true;
      }
    });
  }

  // ---------------------------------------------------------------- render

  function render() {
    renderHeader();
    renderIdentity();
    renderPeers();
    renderGraph();
    renderBandwidth();
    renderTopics();
    renderFeeds();
    renderCollections();
  }

  function renderHeader() {
    const id = (S.id && S.id.id) || (S.status && S.status.id) || '';
    $('self-short').textContent = id;
    if (S.status) {
      $('footer-version').textContent = 'weft ' + S.status.version;
      document.title = 'weft · ' + shortID(id);
    }
  }

  function renderIdentity() {
    const st = S.status, id = S.id;
    if (!st || !id) {
      if (S.errors.status || S.errors.id) $('identity-body').replaceChildren(errorNote('status', S.errors.status || S.errors.id));
      return;
    }
    // Uptime changes on every tick: it is updated in place below.
    const { uptime_seconds: _, started: __, ...stable } = st;
    renderIfChanged('identity', [stable, id], () => {
      const store = st.store || {};
      const used = store.max_bytes > 0 ? Math.min(1, store.bytes / store.max_bytes) : null;
      const dht = st.dht || {};
      const row = (k, ...v) => [h('dt', null, k), h('dd', null, ...v)];
      $('identity-body').replaceChildren(h('dl', { class: 'kv' },
        row('Peer ID', h('span', { class: 'mono peerid', id: 'self-id' }, id.id)),
        row('Agent', id.agent || '—', ' ', h('span', { class: 'muted' }, '· up '), h('span', { id: 'uptime' }, duration(st.uptime_seconds))),
        row('Profile', h('span', { class: 'badge' }, st.profile || 'default'),
          st.private ? h('span', { class: 'badge on' }, 'private swarm') : h('span', { class: 'badge' }, 'public swarm'),
          st.allow_peers ? h('span', { class: 'badge' }, st.allow_peers + ' allowed peers') : null),
        row('Transports', (st.transports || []).map((t) => h('span', { class: 'badge' }, t)),
          st.transport_note ? h('div', { class: 'muted' }, st.transport_note) : null),
        reachRow(row, st.nat),
        row('DHT', (dht.mode || '?') + ' mode · ' + (dht.routing_table || 0) + ' in routing table',
          dht.protocol ? h('div', { class: 'mono muted' }, dht.protocol) : null),
        row('Store', (store.blocks || 0).toLocaleString() + ' blocks · ' + bytes(store.bytes || 0),
          used === null ? h('span', { class: 'muted' }, ' · no limit')
            : [h('span', { class: 'muted' }, ' of ' + bytes(store.max_bytes)), meter(used)]),
        row('Addresses', h('ul', { class: 'addrs mono' }, (id.addrs || []).map((a) => h('li', null, a)))),
      ));
    });
    const up = $('uptime');
    if (up) up.textContent = duration(st.uptime_seconds);
  }

  // reachRow shows the AutoNAT verdict (overall and per transport), the
  // relays this node holds reservations on and whether it relays for others.
  function reachRow(row, nat) {
    if (!nat) return null;
    const cls = (v) => 'badge reach ' + (v === 'public' ? 'on' : v === 'private' ? 'warn' : '');
    const per = Object.keys(nat.transports || {}).sort()
      .map((t) => h('span', { class: cls(nat.transports[t]), title: 'AutoNAT v2 verdict for ' + t }, t + ': ' + nat.transports[t]));
    const relays = nat.relays || [];
    return row('Reachability',
      h('span', { class: cls(nat.reachability), id: 'reachability' }, nat.reachability || 'unknown'), ' ', per,
      nat.relay_service ? h('span', { class: 'badge on' }, 'relaying for others') : null,
      relays.length ? h('div', { class: 'muted' }, 'reservations on ' + relays.length + ' relay' + (relays.length > 1 ? 's' : '') + ': ',
        relays.map((r) => h('span', { class: 'mono', title: r }, tail(r) + ' '))) : null);
  }

  function meter(frac) {
    const cls = frac > 0.9 ? 'under' : frac > 0.7 ? 'repairing' : 'ok';
    return s('svg', { class: 'meter health', viewBox: '0 0 100 6', preserveAspectRatio: 'none' },
      s('rect', { class: 'unknown', x: 0, y: 0, width: 100, height: 6, rx: 3 }),
      s('rect', { class: cls, x: 0, y: 0, width: Math.max(1, frac * 100), height: 6, rx: 3 }));
  }

  function renderPeers() {
    const peers = S.peers || [];
    $('peers-count').textContent = String(peers.length);
    if (S.errors.peers) {
      $('peers').replaceChildren(errorNote('peers', S.errors.peers));
      rendered.peers = null;
      return;
    }
    const inTable = new Set(((S.table && S.table.peers) || []).map((p) => p.id));
    renderIfChanged('peers', [peers, [...inTable]], () => {
      if (!peers.length) {
        $('peers').replaceChildren(empty('No peers connected.'));
        return;
      }
      $('peers').replaceChildren(h('div', { class: 'scroll' }, h('table', { id: 'peers-table' },
        h('thead', null, h('tr', null,
          h('th', null, 'Peer ID'), h('th', null, 'Address'), h('th', null, 'Direction'),
          h('th', { class: 'num' }, 'Latency'), h('th', { class: 'num' }, 'Streams'),
          h('th', null, 'Protocols'), h('th', null, 'Agent'))),
        h('tbody', null, peers.map((p) => {
          const protos = [...new Set((p.protocols || []).map(shortProto))].sort();
          return h('tr', { 'data-peer': p.id },
            h('td', { class: 'mono peerid nowrap' }, p.id),
            h('td', { class: 'mono' }, p.addr),
            h('td', { class: 'dir nowrap' }, p.direction, inTable.has(p.id) ? [' ', h('span', { class: 'chip rt', title: 'in the DHT routing table' }, 'DHT')] : null,
              [' ', p.relayed ? h('span', { class: 'chip relayed', title: 'through a circuit relay' + (p.limited ? ' (limited in time and data)' : '') }, 'relayed')
                : h('span', { class: 'chip', title: 'direct connection' }, p.transport || 'direct')]),
            h('td', { class: 'num nowrap' }, h('span', { class: 'lat ' + latencyClass(p.latency_ms) }), latency(p.latency_ms)),
            h('td', { class: 'num' }, p.streams),
            h('td', { title: (p.protocols || []).join('\n') }, h('div', { class: 'chips' }, protos.map((x) => h('span', { class: 'chip' }, x)))),
            h('td', { class: 'nowrap' }, p.agent || '—'));
        })))));
    });
  }

  // renderGraph draws this node in the middle, its connected peers on an
  // inner ring and the routing table peers it is not connected to on an
  // outer ring (dashed). Peers are placed in ID order, so they keep their
  // places from one refresh to the next.
  function renderGraph() {
    const peers = [...(S.peers || [])].sort((a, b) => (a.id < b.id ? -1 : 1));
    const table = (S.table && S.table.peers) || [];
    const connected = new Set(peers.map((p) => p.id));
    const inTable = new Set(table.map((p) => p.id));
    const rtOnly = table.filter((p) => !connected.has(p.id)).map((p) => p.id).sort();
    const selfID = (S.id && S.id.id) || '';
    const data = [selfID, peers.map((p) => [p.id, latencyClass(p.latency_ms), latency(p.latency_ms), p.streams, inTable.has(p.id)]), rtOnly];
    renderIfChanged('graph', data, () => {
      const W = 640, H = 360, cx = W / 2, cy = H / 2;
      const MAX_INNER = 24, MAX_OUTER = 36;
      const svg = $('graph');
      const edges = s('g', null), nodes = s('g', null), labels = s('g', null);
      const place = (i, n, rx, ry, offset) => {
        const start = n === 1 ? 0 : -Math.PI / 2 + Math.PI / n;
        const a = start + (2 * Math.PI * i) / n + (offset || 0);
        return { x: cx + rx * Math.cos(a), y: cy + ry * Math.sin(a), a };
      };
      const label = (pos, lines, r) => {
        const c = Math.cos(pos.a), sn = Math.sin(pos.a);
        const anchor = c > 0.3 ? 'start' : c < -0.3 ? 'end' : 'middle';
        const dx = c * (r + 8), dy = sn * (r + 8) + (sn > 0.3 ? 10 : sn < -0.3 ? -4 - 13 * (lines.length - 1) : 4 - 6 * (lines.length - 1));
        lines.forEach((ln, k) => {
          labels.append(s('text', { x: (pos.x + dx).toFixed(1), y: (pos.y + dy + 13 * k).toFixed(1), 'text-anchor': anchor, class: k ? 'small' : '' }, ln));
        });
      };

      svg.replaceChildren();
      if (rtOnly.length) svg.append(s('ellipse', { class: 'ring', cx, cy, rx: W * 0.43, ry: H * 0.41 }));
      const outer = rtOnly.slice(0, MAX_OUTER);
      outer.forEach((id, i) => {
        const pos = place(i, outer.length, W * 0.43, H * 0.41, Math.PI / Math.max(outer.length, 1));
        edges.append(s('line', { class: 'edge rtonly', x1: cx, y1: cy, x2: pos.x.toFixed(1), y2: pos.y.toFixed(1) }));
        nodes.append(s('circle', { class: 'node-rtonly', cx: pos.x.toFixed(1), cy: pos.y.toFixed(1), r: 6, 'data-peer': id }, s('title', null, id + '\nin the routing table, not connected')));
        if (outer.length <= 16) label(pos, [tail(id)], 6);
      });
      const inner = peers.slice(0, MAX_INNER);
      inner.forEach((p, i) => {
        const pos = place(i, inner.length, W * 0.28, H * 0.28);
        const lc = 'lat-' + latencyClass(p.latency_ms);
        const width = (1.5 + Math.min(p.streams || 0, 8) * 0.35).toFixed(2);
        edges.append(s('line', { class: 'edge ' + lc, x1: cx, y1: cy, x2: pos.x.toFixed(1), y2: pos.y.toFixed(1), 'stroke-width': width }));
        const g = s('g', { 'data-peer': p.id },
          s('title', null, p.id + '\n' + p.addr + '\n' + latency(p.latency_ms) + ' · ' + p.streams + ' streams' + (inTable.has(p.id) ? '\nin the DHT routing table' : '')));
        if (inTable.has(p.id)) g.append(s('circle', { class: 'node-rtmark', cx: pos.x.toFixed(1), cy: pos.y.toFixed(1), r: 15 }));
        g.append(s('circle', { class: 'node-peer ' + lc, cx: pos.x.toFixed(1), cy: pos.y.toFixed(1), r: 10 }));
        nodes.append(g);
        if (inner.length <= 16) label(pos, [tail(p.id), latency(p.latency_ms)], 15);
      });
      nodes.append(s('circle', { class: 'node-self', cx, cy, r: 18 }, s('title', null, selfID + '\n(this node)')));
      labels.append(s('text', { class: 'self-label', x: cx, y: cy + 36, 'text-anchor': 'middle' }, 'this node'));
      labels.append(s('text', { class: 'small', x: cx, y: cy + 50, 'text-anchor': 'middle' }, tail(selfID)));
      const more = [];
      if (peers.length > inner.length) more.push('+' + (peers.length - inner.length) + ' more connected');
      if (rtOnly.length > outer.length) more.push('+' + (rtOnly.length - outer.length) + ' more in the routing table');
      if (!peers.length && !rtOnly.length) more.push('no peers yet');
      if (more.length) labels.append(s('text', { class: 'note', x: 8, y: H - 8 }, more.join(' · ')));
      svg.append(edges, nodes, labels);
      svg.dataset.connected = String(peers.length);
      svg.dataset.routingOnly = String(rtOnly.length);
    });
  }

  function renderBandwidth() {
    const src = S.source;
    $('bw-source').textContent = src ? src.label : '';
    const svg = $('bw-chart');
    if (!src) {
      $('bw-now').replaceChildren(empty(S.errors.metrics ? 'metrics: ' + S.errors.metrics.message : '/metrics has no byte counters.'));
      svg.replaceChildren();
      return;
    }
    const rs = rates();
    const last = rs[rs.length - 1] || { in: 0, out: 0 };
    const total = S.samples[S.samples.length - 1];
    $('bw-now').replaceChildren(
      h('span', null, h('span', { class: 'k in' }), 'in ', h('b', null, rate(last.in))),
      h('span', null, h('span', { class: 'k out' }), 'out ', h('b', null, rate(last.out))),
      h('span', { class: 'muted meta' },
        'peak ' + rate(rs.reduce((m, r) => Math.max(m, r.in), 0)) + ' / ' + rate(rs.reduce((m, r) => Math.max(m, r.out), 0)),
        h('br'), 'total ' + bytes(total.in) + ' / ' + bytes(total.out)));

    const W = 600, H = 170, L = 62, R = 8, T = 10, B = 22;
    const now = performance.now() / 1000;
    // The time axis grows with the samples, from 30 s to BW_WINDOW_S.
    const age = now - S.samples[0].t;
    const span = Math.min(BW_WINDOW_S, Math.max(30, Math.ceil(age / 30) * 30));
    const peak = rs.reduce((m, r) => Math.max(m, r.in, r.out), 0);
    const top = niceCeil(Math.max(peak, 1000));
    const x = (t) => L + ((t - (now - span)) / span) * (W - L - R);
    const y = (v) => T + (1 - v / top) * (H - T - B);
    const kids = [];
    for (const f of [0, 0.5, 1]) {
      kids.push(s('line', { class: 'grid-line', x1: L, x2: W - R, y1: y(top * f), y2: y(top * f) }));
      kids.push(s('text', { class: 'axis', x: L - 6, y: y(top * f) + 4, 'text-anchor': 'end' }, rate(top * f)));
    }
    const step = [5, 10, 15, 30, 60].find((st) => span / st <= 6) || 60;
    for (let ago = 0; ago <= span; ago += step) {
      const text = ago === 0 ? 'now' : ago < 120 ? '-' + ago + ' s' : '-' + ago / 60 + ' min';
      kids.push(s('line', { class: 'grid-line', x1: x(now - ago), x2: x(now - ago), y1: H - B, y2: H - B + 4 }));
      kids.push(s('text', { class: 'axis', x: x(now - ago), y: H - 6, 'text-anchor': ago === 0 ? 'end' : ago + step > span ? 'start' : 'middle' }, text));
    }
    if (rs.length >= 1) {
      for (const dir of ['in', 'out']) {
        const pts = rs.map((r) => x(r.t).toFixed(1) + ',' + y(r[dir]).toFixed(1));
        if (rs.length === 1) pts.unshift(x(S.samples[0].t).toFixed(1) + ',' + y(rs[0][dir]).toFixed(1));
        const first = pts[0].split(',')[0], lastX = pts[pts.length - 1].split(',')[0];
        kids.push(s('polygon', { class: 'area-' + dir, points: first + ',' + y(0) + ' ' + pts.join(' ') + ' ' + lastX + ',' + y(0) }));
        kids.push(s('polyline', { class: 'line-' + dir, points: pts.join(' ') }));
      }
    } else {
      kids.push(s('text', { class: 'axis', x: (L + W) / 2, y: H / 2, 'text-anchor': 'middle' }, 'collecting samples…'));
    }
    svg.replaceChildren(...kids);
    svg.dataset.samples = String(rs.length);
    svg.dataset.peak = String(Math.round(peak));
    svg.dataset.last = String(Math.round(Math.max(last.in, last.out)));
  }

  // niceCeil rounds up to 1, 2 or 5 times a power of ten.
  function niceCeil(v) {
    const p = Math.pow(10, Math.floor(Math.log10(v)));
    for (const m of [1, 2, 5, 10]) if (v <= m * p) return m * p;
    return 10 * p;
  }

  function renderTopics() {
    const topics = S.topics || [];
    $('topics-count').textContent = topics.length ? String(topics.length) : '';
    if (S.errors.topics) {
      $('topics-body').replaceChildren(errorNote('topics', S.errors.topics));
      rendered.topics = null;
      return;
    }
    renderIfChanged('topics', [topics, S.topicPeers], () => {
      if (!topics.length) {
        $('topics-body').replaceChildren(empty('none — this node is subscribed to no pubsub topic.'));
        return;
      }
      $('topics-body').replaceChildren(h('table', { id: 'topics-table' },
        h('thead', null, h('tr', null, h('th', null, 'Topic'), h('th', { class: 'num' }, 'Peers'), h('th', null, ''))),
        h('tbody', null, topics.map((t) => {
          const ps = S.topicPeers[t];
          return h('tr', { 'data-topic': t },
            h('td', { class: 'mono wrap' }, t),
            h('td', { class: 'num' }, ps ? String(ps.length) : '?'),
            h('td', null, h('div', { class: 'chips' }, (ps || []).slice(0, 6).map((p) => h('span', { class: 'chip', title: p }, tail(p))),
              ps && ps.length > 6 ? h('span', { class: 'muted' }, '+' + (ps.length - 6)) : null)));
        }))));
    });
  }

  const listOf = (v, key) => (Array.isArray(v) ? v : v && Array.isArray(v[key]) ? v[key] : []);

  function renderFeeds() {
    const body = $('feeds-body');
    if (S.errors.feeds) {
      body.replaceChildren(errorNote('feeds', S.errors.feeds));
      rendered.feeds = null;
      return;
    }
    if (S.feeds === undefined) return;
    const feeds = listOf(S.feeds, 'feeds');
    $('feeds-count').textContent = feeds.length ? String(feeds.length) : '';
    renderIfChanged('feeds', S.feeds, () => {
      if (S.feeds === null) {
        body.replaceChildren(empty('none — this daemon has no feed API yet.'));
        return;
      }
      if (!feeds.length) {
        body.replaceChildren(empty('none — this node publishes and follows no feed.'));
        return;
      }
      body.replaceChildren(h('table', { id: 'feeds-table' },
        h('thead', null, h('tr', null, h('th', null, 'Feed'), h('th', null, 'Role'), h('th', { class: 'num' }, 'Seq'), h('th', null, 'Points at'), h('th', null, 'State'))),
        h('tbody', null, feeds.map((f) => {
          const held = f.held || {};
          const seq = held.seq !== undefined ? held.seq : f.seq;
          const value = held.cid || f.cid || f.value || f.path || '';
          const pinnedSeq = f.pinned && typeof f.pinned === 'object' ? f.pinned.seq : f.pinned_seq;
          const role = [f.owned ? 'publisher' : null, f.following ? 'follower' : null].filter(Boolean).join(', ') || '—';
          let state;
          if (f.error) state = h('span', { class: 'state bad', title: f.error }, 'error');
          else if (f.fetching) state = h('span', { class: 'state warn' }, 'fetching' + (f.fetching_seq ? ' #' + f.fetching_seq : ''));
          else if (pinnedSeq > 0) state = h('span', { class: 'state ok' }, 'pinned #' + pinnedSeq);
          else if (seq > 0 || value) state = h('span', { class: 'state ok' }, f.owned ? 'published' : 'current');
          else state = h('span', { class: 'state muted' }, 'no record yet');
          return h('tr', { 'data-feed': f.name },
            h('td', { class: 'mono', title: f.name }, shortID(f.name)),
            h('td', null, role),
            h('td', { class: 'num' }, seq !== undefined && seq !== null ? String(seq) : '—'),
            h('td', { class: 'mono', title: value }, shortID(value.replace(/^\/ipfs\//, '')) || '—'),
            h('td', null, state));
        }))));
    });
  }

  // collectionHealth counts the items of a collection by replication state,
  // from whichever of the shapes documented at API.collections it has.
  function collectionHealth(c) {
    const hs = c.health || c;
    const n = (v) => (Number.isFinite(v) ? v : 0);
    let ok = n(hs.ok), rep = n(hs.repairing), under = n(hs.under_replicated);
    let items = Array.isArray(c.items) ? c.items.length : n(c.items);
    if (Array.isArray(c.items)) {
      ok = rep = under = 0;
      for (const it of c.items) {
        const st = it.state || it.State;
        if (st === 'ok') ok++;
        else if (st === 'repairing') rep++;
        else if (st === 'under-replicated' || st === 'under_replicated') under++;
      }
    }
    items = Math.max(items, ok + rep + under);
    return { ok, rep, under, items, unknown: Math.max(0, items - ok - rep - under) };
  }

  function renderCollections() {
    const body = $('collections-body');
    if (S.errors.collections) {
      body.replaceChildren(errorNote('collections', S.errors.collections));
      rendered.collections = null;
      return;
    }
    if (S.collections === undefined) return;
    const cols = listOf(S.collections, 'collections');
    $('collections-count').textContent = cols.length ? String(cols.length) : '';
    renderIfChanged('collections', S.collections, () => {
      if (S.collections === null) {
        body.replaceChildren(empty('none — this daemon has no collection API yet.'));
        return;
      }
      if (!cols.length) {
        body.replaceChildren(empty('none — this node is a member of no collection.'));
        return;
      }
      body.replaceChildren(h('table', { id: 'collections-table' },
        h('thead', null, h('tr', null, h('th', null, 'Collection'), h('th', { class: 'num' }, 'R'), h('th', { class: 'num' }, 'Members'), h('th', { class: 'num' }, 'Items'), h('th', null, 'Replication'))),
        h('tbody', null, cols.map((c) => {
          const hl = collectionHealth(c);
          const members = Array.isArray(c.members) ? c.members.length : c.members;
          const alive = Number.isFinite(c.members_alive) ? c.members_alive
            : Array.isArray(c.members) ? c.members.filter((m) => (m.state || m.State) === 'alive').length : null;
          let state;
          if (!hl.items) state = h('span', { class: 'state muted' }, 'empty');
          else if (hl.under) state = h('span', { class: 'state bad' }, hl.under + ' under-replicated');
          else if (hl.rep) state = h('span', { class: 'state warn' }, hl.rep + ' repairing');
          else if (hl.ok === hl.items) state = h('span', { class: 'state ok' }, 'all ' + hl.items + ' ok');
          else state = h('span', { class: 'state muted' }, hl.ok + ' of ' + hl.items + ' ok');
          return h('tr', { 'data-collection': c.id || c.name },
            h('td', null, h('div', null, c.name || '(unnamed)'), h('div', { class: 'mono muted', title: c.id }, shortID(c.id))),
            h('td', { class: 'num' }, c.replication !== undefined ? String(c.replication) : '—'),
            h('td', { class: 'num' }, members === undefined ? '—' : (alive !== null && alive !== members ? alive + '/' : '') + members),
            h('td', { class: 'num' }, String(hl.items)),
            h('td', null, healthBar(hl), state));
        }))));
    });
  }

  function healthBar(hl) {
    const total = hl.items || 1;
    const parts = [['ok', hl.ok], ['repairing', hl.rep], ['under', hl.under], ['unknown', hl.unknown]];
    let x = 0;
    const rects = [];
    if (!hl.items) rects.push(s('rect', { class: 'unknown', x: 0, y: 0, width: 160, height: 10 }));
    for (const [cls, v] of parts) {
      if (!v) continue;
      const w = (v / total) * 160;
      rects.push(s('rect', { class: cls, x: x.toFixed(2), y: 0, width: w.toFixed(2), height: 10 }, s('title', null, v + ' ' + cls)));
      x += w;
    }
    return s('svg', { class: 'health', viewBox: '0 0 160 10', preserveAspectRatio: 'none' }, rects);
  }

  // ---------------------------------------------------------------- start

  takeTokenFromURL();
  wireAuth();
  loop();
})();
