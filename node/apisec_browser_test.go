package node_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/chromedp"
	"github.com/ipfs/boxo/files"

	"github.com/weft-p2p/weft/node"
	"github.com/weft-p2p/weft/node/nodetest"
)

// attackPage is what a page from any other site runs against the daemon it
// guesses at 127.0.0.1: HTML form POSTs (urlencoded, multipart and the
// text/plain trick that makes a JSON body), no-cors fetch()es with
// text/plain bodies, JSON fetch()es (which need CORS), and reads. Each
// attempt's outcome lands in window.results; window.done is set at the end.
const attackPage = `<!doctype html><html><body><script>
const api = %q, cid = %q, unpinned = %q, peerAddr = %q;
const results = [];
function formPost(what, path, enctype, fields) {
  return new Promise((resolve) => {
    const name = 'frame' + results.length + Math.random().toString(36).slice(2);
    const ifr = document.createElement('iframe');
    ifr.name = name;
    document.body.appendChild(ifr);
    const f = document.createElement('form');
    f.method = 'POST'; f.action = api + path; f.enctype = enctype; f.target = name;
    for (const [k, v] of fields) {
      const i = document.createElement('input');
      i.type = 'hidden'; i.name = k; i.value = v;
      f.appendChild(i);
    }
    document.body.appendChild(f);
    let finished = false;
    const done = (how) => { if (!finished) { finished = true; results.push({what, how}); resolve(); } };
    ifr.addEventListener('load', () => done('form submitted'), {once: true});
    setTimeout(() => done('no answer within 10s'), 10000); // a deadline, not a wait: load ends it first
    f.submit();
  });
}
async function attempt(what, path, init) {
  try {
    const r = await fetch(api + path, {...init, signal: AbortSignal.timeout(10000)});
    let body = '';
    try { body = await r.text(); } catch (e) { body = 'unreadable: ' + e; }
    results.push({what, how: 'answered', type: r.type, status: r.status, body});
  } catch (e) {
    results.push({what, how: 'blocked', error: String(e)});
  }
}
(async () => {
  const connectJSON = JSON.stringify({addr: peerAddr});
  await Promise.all([
    // Forms: a page needs no permission to submit one anywhere.
    formPost('form publish', '/api/v1/feed/publish?cid=' + cid, 'application/x-www-form-urlencoded', [['cid', cid]]),
    formPost('form key gen', '/api/v1/key/gen?name=evilform', 'application/x-www-form-urlencoded', [['name', 'evilform']]),
    formPost('form add', '/api/v1/add', 'multipart/form-data', [['file', 'evil form content']]),
    formPost('form pin', '/api/v1/pin/add?cid=' + unpinned, 'application/x-www-form-urlencoded', [['cid', unpinned]]),
    // enctype text/plain sends "NAME=VALUE": a name that is a JSON object
    // makes a body a lenient JSON decoder takes.
    formPost('form connect (text/plain JSON)', '/api/v1/connect', 'text/plain', [[connectJSON, '']]),
    formPost('form gc', '/api/v1/gc', 'application/x-www-form-urlencoded', [['x', '1']]),
  ]);
  const simple = (body) => ({method: 'POST', mode: 'no-cors', credentials: 'include', headers: {'Content-Type': 'text/plain'}, body});
  const json = (body) => ({method: 'POST', credentials: 'include', headers: {'Content-Type': 'application/json'}, body});
  await Promise.all([
    // Simple requests: sent without asking; the page only cannot read the answer.
    attempt('no-cors publish', '/api/v1/feed/publish?cid=' + cid, simple('')),
    attempt('no-cors key gen', '/api/v1/key/gen?name=evilfetch', simple('')),
    attempt('no-cors add', '/api/v1/add', simple('evil fetch content')),
    attempt('no-cors pin', '/api/v1/pin/add?cid=' + unpinned, simple('')),
    attempt('no-cors connect', '/api/v1/connect', simple(connectJSON)),
    attempt('no-cors bodiless key gen', '/api/v1/key/gen?name=evilbare', {method: 'POST', mode: 'no-cors'}),
    // JSON: the browser asks first (CORS preflight).
    attempt('json connect', '/api/v1/connect', json(connectJSON)),
    attempt('json key gen', '/api/v1/key/gen?name=eviljson', json('{}')),
    attempt('json publish', '/api/v1/feed/publish?cid=' + cid, json('{}')),
    // Reads.
    attempt('read key/ls', '/api/v1/key/ls', {credentials: 'include'}),
    attempt('read status', '/api/v1/status', {}),
    attempt('read dashboard page', '/ui/', {}),
    attempt('no-cors read key/ls', '/api/v1/key/ls', {mode: 'no-cors'}),
  ]);
  window.results = results;
  window.done = true;
})();
</script></body></html>`

// TestBrowserCannotDriveAPI: a page served from another origin on
// 127.0.0.1 (another port) tries, in headless Chromium, to publish a feed
// record, make keys, add and pin content, connect to a peer and gc through
// forms and fetch(), and to read key/ls, status and the dashboard page.
// Every request that reaches the daemon is refused, the page reads
// nothing, and the node's state is as it was.
func TestBrowserCannotDriveAPI(t *testing.T) {
	chromium(t)
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()

	a := nodetest.Start(t, nodetest.Options{})
	b := nodetest.Start(t, nodetest.Options{})
	ca := nodetest.Client(a)
	published := addRandom(t, ctx, ca, 1<<10)
	unpinned, err := ca.Add(ctx, files.NewBytesFile([]byte("held but not pinned")), url.Values{"pin": {"false"}}, nil, nil)
	if err != nil {
		t.Fatalf("add unpinned: %v", err)
	}
	before := apiState(t, ctx, a)

	var page string
	attacker := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		fmt.Fprint(w, page)
	}))
	defer attacker.Close()
	apiBase := "http://" + a.APIAddr()
	page = fmt.Sprintf(attackPage, apiBase, published, unpinned, nodetest.Addr(t, b))

	// Every answer the daemon gave the browser, by request, as it came off
	// the wire (ExtraInfo: also the answers the browser then kept from the
	// page).
	var mu sync.Mutex
	urls := map[network.RequestID]string{}
	status := map[network.RequestID]int{}
	listen := func(ev any) {
		mu.Lock()
		defer mu.Unlock()
		switch ev := ev.(type) {
		case *network.EventRequestWillBeSent:
			if strings.HasPrefix(ev.Request.URL, apiBase+"/") {
				urls[ev.RequestID] = ev.Request.Method + " " + ev.Request.URL
			}
		case *network.EventResponseReceivedExtraInfo:
			status[ev.RequestID] = int(ev.StatusCode)
		}
	}
	tab := browser(t, ctx, listen)
	if err := chromedp.Do(tab, chromedp.Navigate(attacker.URL+"/")); err != nil {
		t.Fatalf("open the attacker's page: %v", err)
	}
	waitJS(t, tab, 40*time.Second, "the attack to finish", `window.done === true`)
	type result struct {
		What, How, Type, Body, Error string
		Status                       int
	}
	results, err := chromedp.Run(tab, chromedp.Evaluate[[]result](`window.results`))
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range results {
		t.Logf("%-32s %s %s %d %s", r.What, r.How, r.Type, r.Status, r.Error)
		// The page never reads an answer: CORS blocks it, or it is opaque.
		if r.How == "answered" && (r.Type != "opaque" || r.Body != "") {
			t.Errorf("%s: the page read an answer (%s %d): %.200q", r.What, r.Type, r.Status, r.Body)
		}
	}
	if len(results) != 19 {
		t.Errorf("%d attempts finished, want 19", len(results))
	}
	mu.Lock()
	seen := 0
	for id, u := range urls {
		code, ok := status[id]
		if !ok {
			continue // a JSON fetch that stopped at its preflight
		}
		seen++
		t.Logf("daemon answered %s: %d", u, code)
		if code < 400 {
			t.Errorf("the daemon answered %s with %d", u, code)
		}
	}
	mu.Unlock()
	// Every form and no-cors fetch reaches the daemon, and the JSON ones'
	// preflights do.
	if seen < 19 {
		t.Errorf("only %d requests reached the daemon; the attack did not run", seen)
	}

	after := apiState(t, ctx, a)
	if after != before {
		t.Errorf("the node's state changed:\nbefore %s\nafter  %s", before, after)
	}
	if nodetest.Connected(a, b) {
		t.Error("the page connected the node to a peer")
	}
}

// apiState is what a page could have changed, read through the Go API:
// keys, feeds, pins, blocks and peers.
func apiState(t *testing.T, ctx context.Context, n *node.Node) string {
	t.Helper()
	keys, err := n.Keys()
	if err != nil {
		t.Fatal(err)
	}
	pins, err := nodetest.Client(n).PinLs(ctx)
	if err != nil {
		t.Fatal(err)
	}
	st := n.Store().Stat()
	b, _ := json.Marshal(map[string]any{"keys": keys, "feeds": n.Feeds(), "pins": pins,
		"blocks": st.Blocks, "peers": len(n.Network().Host.Network().Peers())})
	return string(b)
}
