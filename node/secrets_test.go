package node_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/weft-p2p/weft/node"
	"github.com/weft-p2p/weft/node/nodetest"
)

// TestStartRefusesWeakSecrets: the daemon does not start with an empty or
// short API token, or with identity.key, api.token or swarm.key open to
// other users; the error names the file and the fix.
func TestStartRefusesWeakSecrets(t *testing.T) {
	for _, tc := range []struct {
		name   string
		change func(t *testing.T, dir string)
		want   []string
	}{
		{"empty token", func(t *testing.T, dir string) { write(t, dir, node.TokenFile, "\n", 0o600) },
			[]string{node.TokenFile, "no usable API token"}},
		{"short token", func(t *testing.T, dir string) { write(t, dir, node.TokenFile, "abc\n", 0o600) },
			[]string{node.TokenFile, "at least 16"}},
		{"identity.key readable by others", func(t *testing.T, dir string) { chmod(t, dir, node.IdentityFile, 0o644) },
			[]string{node.IdentityFile, "chmod 600", "too open"}},
		{"identity.key readable by the group", func(t *testing.T, dir string) { chmod(t, dir, node.IdentityFile, 0o640) },
			[]string{node.IdentityFile, "chmod 600"}},
		{"api.token readable by others", func(t *testing.T, dir string) { chmod(t, dir, node.TokenFile, 0o604) },
			[]string{node.TokenFile, "chmod 600"}},
		{"swarm.key readable by others", func(t *testing.T, dir string) { write(t, dir, node.SwarmKeyFile, testSwarmKey, 0o644) },
			[]string{node.SwarmKeyFile, "chmod 600"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := nodetest.Init(t, nodetest.Options{})
			tc.change(t, dir)
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			n, err := node.Start(ctx, dir, node.Options{Logger: nodetest.Logger()})
			if err == nil {
				n.Close()
				t.Fatal("the daemon started")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not say %q", err, w)
				}
			}
		})
	}
	// The fix works: chmod 600 and the daemon starts.
	dir := nodetest.Init(t, nodetest.Options{})
	chmod(t, dir, node.IdentityFile, 0o644)
	chmod(t, dir, node.IdentityFile, 0o600)
	nodetest.StartRepo(t, dir, nil)
}

// TestLooseFeedKeyRefused: a feed key file that others can read is not
// used to sign.
func TestLooseFeedKeyRefused(t *testing.T) {
	n := nodetest.Start(t, nodetest.Options{})
	if _, err := n.GenKey("k"); err != nil {
		t.Fatal(err)
	}
	chmod(t, n.Repo().Path, filepath.Join(node.KeysDir, "k"), 0o644)
	if _, err := n.Key("k"); !errors.Is(err, node.ErrSecretExposed) {
		t.Fatalf("Key of a 0644 key file: %v, want ErrSecretExposed", err)
	}
}

const testSwarmKey = "/key/swarm/psk/1.0.0/\n/base16/\n" +
	"0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef\n"

func write(t *testing.T, dir, name, data string, mode os.FileMode) {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(data), mode); err != nil {
		t.Fatal(err)
	}
	chmod(t, dir, name, mode)
}

func chmod(t *testing.T, dir, name string, mode os.FileMode) {
	t.Helper()
	if err := os.Chmod(filepath.Join(dir, name), mode); err != nil {
		t.Fatal(err)
	}
}
