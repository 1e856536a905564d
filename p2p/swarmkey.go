package p2p

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"fmt"

	"github.com/libp2p/go-libp2p/core/pnet"
)

// NewSwarmKey returns a fresh 32-byte pre-shared key in Kubo's swarm.key
// format (/key/swarm/psk/1.0.0/, base16).
func NewSwarmKey() ([]byte, error) {
	k := make([]byte, 32)
	if _, err := rand.Read(k); err != nil {
		return nil, fmt.Errorf("generate swarm key: %w", err)
	}
	return []byte("/key/swarm/psk/1.0.0/\n/base16/\n" + hex.EncodeToString(k) + "\n"), nil
}

// ParseSwarmKey decodes a swarm.key file, as Kubo writes it.
func ParseSwarmKey(data []byte) (pnet.PSK, error) {
	psk, err := pnet.DecodeV1PSK(bytes.NewReader(data))
	if err != nil {
		return nil, fmt.Errorf("bad swarm key (want /key/swarm/psk/1.0.0/, /base16/, 64 hex digits): %w", err)
	}
	return psk, nil
}
