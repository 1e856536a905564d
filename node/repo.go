package node

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/pnet"
	ma "github.com/multiformats/go-multiaddr"

	"github.com/weft-p2p/weft/p2p"
)

// Files inside a repo directory.
const (
	ConfigFile   = "config.toml"
	IdentityFile = "identity.key"
	TokenFile    = "api.token"
	SwarmKeyFile = "swarm.key"
	APIFile      = "api"
	LockFile     = "repo.lock"
	StoreDir     = "store"
)

// Repo errors callers can test for with errors.Is.
var (
	ErrNoRepo      = errors.New("no weft repo")
	ErrRepoLocked  = errors.New("repo is locked by a running daemon")
	ErrRepoExists  = errors.New("repo already initialised")
	ErrNotRunning  = errors.New("daemon not running")
	ErrInvalidRepo = errors.New("repo is damaged")
)

// DefaultRepoPath is $WEFT_PATH, else ~/.weft.
func DefaultRepoPath() string {
	if p := os.Getenv("WEFT_PATH"); p != "" {
		return p
	}
	home, err := os.UserHomeDir()
	if err != nil {
		return ".weft"
	}
	return filepath.Join(home, ".weft")
}

// InitOptions are the choices `weft init` offers. Zero values take the
// profile's defaults.
type InitOptions struct {
	Profile string   // local (default) or public
	Listen  []string // swarm listen multiaddrs
	API     string   // API host:port
	// Gateway is the HTTP gateway's host:port ("off": none). Empty takes
	// the profile's default, or port 0 on loopback when API's port is 0
	// (test nodes, which must not collide on 8080).
	Gateway     string
	Bootstrap   []string // bootstrap multiaddrs with /p2p/ID
	SwarmKey    []byte   // contents of a swarm.key to copy in
	NewSwarmKey bool     // generate a fresh swarm key
}

// InitRepo creates a repo at dir: an Ed25519 identity (0600), an API token
// (0600), a documented config.toml, and optionally a swarm.key. It fails
// without touching anything if dir already holds a repo; if it fails midway
// it removes what it wrote.
func InitRepo(dir string, opts InitOptions) (Config, error) {
	if opts.Profile == "" {
		opts.Profile = ProfileLocal
	}
	cfg, err := DefaultConfig(opts.Profile)
	if err != nil {
		return Config{}, err
	}
	if len(opts.Listen) > 0 {
		cfg.Addresses.Swarm = opts.Listen
	}
	if opts.API != "" {
		cfg.Addresses.API = opts.API
	}
	switch {
	case opts.Gateway != "":
		cfg.Addresses.Gateway = opts.Gateway
	case strings.HasSuffix(cfg.Addresses.API, ":0"):
		cfg.Addresses.Gateway = "127.0.0.1:0"
	}
	if len(opts.Bootstrap) > 0 {
		cfg.Bootstrap = opts.Bootstrap
	}
	if opts.NewSwarmKey && opts.SwarmKey != nil {
		return Config{}, errors.New("give either --swarm-key or --new-swarm-key, not both")
	}
	swarmKey := opts.SwarmKey
	if opts.NewSwarmKey {
		if swarmKey, err = p2p.NewSwarmKey(); err != nil {
			return Config{}, err
		}
	}
	if swarmKey != nil {
		if _, err := p2p.ParseSwarmKey(swarmKey); err != nil {
			return Config{}, err
		}
		if opts.Profile == ProfilePublic {
			return Config{}, errors.New("a swarm key makes the swarm private; it cannot be used with the public profile")
		}
	}

	sk, pk, err := crypto.GenerateEd25519Key(rand.Reader)
	if err != nil {
		return Config{}, fmt.Errorf("generate identity: %w", err)
	}
	id, err := peer.IDFromPublicKey(pk)
	if err != nil {
		return Config{}, fmt.Errorf("derive peer ID: %w", err)
	}
	cfg.PeerID = id.String()
	if err := cfg.Validate(); err != nil {
		return Config{}, fmt.Errorf("invalid settings: %w", err)
	}

	if _, err := os.Stat(filepath.Join(dir, ConfigFile)); err == nil {
		return Config{}, fmt.Errorf("%w at %s (remove it or pick another --repo)", ErrRepoExists, dir)
	}
	created := false
	if _, err := os.Stat(dir); errors.Is(err, os.ErrNotExist) {
		created = true
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return Config{}, fmt.Errorf("create repo dir: %w", err)
	}
	var written []string
	fail := func(err error) (Config, error) {
		for _, f := range written {
			os.Remove(f)
		}
		if created {
			os.Remove(dir)
		}
		return Config{}, err
	}
	skBytes, err := crypto.MarshalPrivateKey(sk)
	if err != nil {
		return fail(fmt.Errorf("encode identity: %w", err))
	}
	tok := make([]byte, 32)
	if _, err := rand.Read(tok); err != nil {
		return fail(fmt.Errorf("generate API token: %w", err))
	}
	cfgBytes, err := MarshalConfig(cfg)
	if err != nil {
		return fail(err)
	}
	files := []struct {
		name string
		data []byte
		mode os.FileMode
	}{
		{IdentityFile, skBytes, 0o600},
		{TokenFile, []byte(hex.EncodeToString(tok) + "\n"), 0o600},
	}
	if swarmKey != nil {
		files = append(files, struct {
			name string
			data []byte
			mode os.FileMode
		}{SwarmKeyFile, swarmKey, 0o600})
	}
	// config.toml goes last: its presence is what marks a finished repo.
	files = append(files, struct {
		name string
		data []byte
		mode os.FileMode
	}{ConfigFile, cfgBytes, 0o644})
	for _, f := range files {
		p := filepath.Join(dir, f.name)
		if err := writeFileAtomic(p, f.data, f.mode); err != nil {
			return fail(err)
		}
		written = append(written, p)
	}
	return cfg, nil
}

// Repo is an opened, locked repo directory.
type Repo struct {
	Path     string
	Config   Config
	Identity crypto.PrivKey
	Token    string
	SwarmKey pnet.PSK // nil for a public (non-private) swarm

	lock *os.File
}

// OpenRepo locks dir and loads its config, identity, token and swarm key.
// A second OpenRepo of the same dir, from any process, fails with
// ErrRepoLocked until Close.
func OpenRepo(dir string) (*Repo, error) {
	if err := checkRepo(dir); err != nil {
		return nil, err
	}
	lf, err := lockRepo(dir)
	if err != nil {
		return nil, err
	}
	r := &Repo{Path: dir, lock: lf}
	if err := r.load(); err != nil {
		r.Close()
		return nil, err
	}
	return r, nil
}

func checkRepo(dir string) error {
	if _, err := os.Stat(filepath.Join(dir, ConfigFile)); err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("%w at %s: run 'weft init --repo %s' first", ErrNoRepo, dir, dir)
		}
		return fmt.Errorf("open repo %s: %w", dir, err)
	}
	return nil
}

func (r *Repo) load() error {
	cfg, err := LoadConfigFile(filepath.Join(r.Path, ConfigFile))
	if err != nil {
		return err
	}
	r.Config = cfg
	skBytes, err := readSecret(filepath.Join(r.Path, IdentityFile))
	if errors.Is(err, ErrSecretExposed) {
		return err
	}
	if err != nil {
		return fmt.Errorf("%w: read identity: %v", ErrInvalidRepo, err)
	}
	if r.Identity, err = crypto.UnmarshalPrivateKey(skBytes); err != nil {
		return fmt.Errorf("%w: decode %s: %v", ErrInvalidRepo, IdentityFile, err)
	}
	id, err := peer.IDFromPrivateKey(r.Identity)
	if err != nil {
		return fmt.Errorf("%w: derive peer ID: %v", ErrInvalidRepo, err)
	}
	if cfg.PeerID != "" && cfg.PeerID != id.String() {
		return fmt.Errorf("%w: config peer_id %s does not match identity.key (%s)", ErrInvalidRepo, cfg.PeerID, id)
	}
	tokPath := filepath.Join(r.Path, TokenFile)
	tok, err := readSecret(tokPath)
	if errors.Is(err, ErrSecretExposed) {
		return err
	}
	if err != nil {
		return fmt.Errorf("%w: read API token: %v", ErrInvalidRepo, err)
	}
	r.Token = strings.TrimSpace(string(tok))
	if len(r.Token) < MinTokenLen || strings.ContainsFunc(r.Token, func(c rune) bool { return c <= ' ' || c > '~' }) {
		// An empty token would let any request through; a short one is
		// guessed.
		return fmt.Errorf("%w: %s holds no usable API token (want at least %d printable characters without spaces); write a new one: openssl rand -hex 32 > %s && chmod 600 %s",
			ErrInvalidRepo, tokPath, MinTokenLen, tokPath, tokPath)
	}
	if data, err := readSecret(filepath.Join(r.Path, SwarmKeyFile)); err == nil {
		if r.SwarmKey, err = p2p.ParseSwarmKey(data); err != nil {
			return fmt.Errorf("%s: %w", filepath.Join(r.Path, SwarmKeyFile), err)
		}
	} else if errors.Is(err, ErrSecretExposed) {
		return err
	} else if !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("read swarm key: %w", err)
	}
	return nil
}

// MinTokenLen is the shortest API token the daemon accepts (weft init
// writes 64 hex digits).
const MinTokenLen = 16

// ErrSecretExposed says a file holding a secret (identity.key, api.token,
// swarm.key, a feed key) may be read or written by other users.
var ErrSecretExposed = errors.New("secret file open to other users")

// readSecret reads a file that holds a secret. Like ssh with a private key,
// it refuses one that other users may read or write, naming the fix, rather
// than use a secret that may already be known.
func readSecret(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if perm := st.Mode().Perm(); runtime.GOOS != "windows" && perm&0o077 != 0 {
		return nil, fmt.Errorf("%w: permissions %#o on %s are too open (other users may read it); weft will not use it: run chmod 600 %s",
			ErrSecretExposed, perm, path, path)
	}
	return io.ReadAll(f)
}

// Close removes the API file and releases the lock.
func (r *Repo) Close() error {
	if r.lock == nil {
		return nil
	}
	err := r.lock.Close() // closing the descriptor drops the flock
	r.lock = nil
	return err
}

// SaveConfig validates and writes r.Config.
func (r *Repo) SaveConfig() error {
	return SaveConfigFile(r.Path, r.Config)
}

// SaveConfigFile validates cfg and writes it to dir's config.toml atomically.
func SaveConfigFile(dir string, cfg Config) error {
	if err := cfg.Validate(); err != nil {
		return fmt.Errorf("invalid config: %w", err)
	}
	data, err := MarshalConfig(cfg)
	if err != nil {
		return err
	}
	return writeFileAtomic(filepath.Join(dir, ConfigFile), data, 0o644)
}

// ReadConfig loads dir's config without locking the repo (for `weft config`).
func ReadConfig(dir string) (Config, error) {
	if err := checkRepo(dir); err != nil {
		return Config{}, err
	}
	return LoadConfigFile(filepath.Join(dir, ConfigFile))
}

// ReadToken returns dir's API token, or "" if it has none.
func ReadToken(dir string) string {
	b, err := os.ReadFile(filepath.Join(dir, TokenFile))
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
}

// ReadAPIAddr returns the address the repo's running daemon answers on.
func ReadAPIAddr(dir string) (string, error) {
	if err := checkRepo(dir); err != nil {
		return "", err
	}
	b, err := os.ReadFile(filepath.Join(dir, APIFile))
	if errors.Is(err, os.ErrNotExist) {
		return "", fmt.Errorf("%w for repo %s: start it with 'weft daemon --repo %s'", ErrNotRunning, dir, dir)
	}
	if err != nil {
		return "", fmt.Errorf("read API address: %w", err)
	}
	return strings.TrimSpace(string(b)), nil
}

func lockRepo(dir string) (*os.File, error) {
	path := filepath.Join(dir, LockFile)
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("open lock file: %w", err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		pid := "?"
		if b, rerr := os.ReadFile(path); rerr == nil && len(strings.TrimSpace(string(b))) > 0 {
			pid = strings.TrimSpace(string(b))
		}
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, fmt.Errorf("%w: %s is in use (pid %s); stop that daemon with 'weft shutdown --repo %s'", ErrRepoLocked, dir, pid, dir)
		}
		return nil, fmt.Errorf("lock repo %s: %w", dir, err)
	}
	if err := f.Truncate(0); err == nil {
		f.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0)
	}
	return f, nil
}

// writeFileAtomic writes via a temp file and rename, so a crash leaves either
// the old or the new content, never a torn file.
func writeFileAtomic(path string, data []byte, mode os.FileMode) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := tmp.Chmod(mode); err != nil {
		tmp.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}

// parseAddrs turns strings into multiaddrs, naming the bad one.
func parseAddrs(ss []string) ([]ma.Multiaddr, error) {
	out := make([]ma.Multiaddr, 0, len(ss))
	for _, s := range ss {
		a, err := ma.NewMultiaddr(s)
		if err != nil {
			return nil, fmt.Errorf("bad multiaddr %q: %w", s, err)
		}
		out = append(out, a)
	}
	return out, nil
}
