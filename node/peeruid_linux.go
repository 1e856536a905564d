package node

import (
	"bufio"
	"encoding/binary"
	"encoding/hex"
	"net/netip"
	"os"
	"strconv"
	"strings"
)

// sameUserPeer reports whether the other end of a loopback TCP connection
// (client as seen by this server at local) is a socket of this process's
// user. Another account on the machine can reach loopback ports too; it
// must not be handed the dashboard's token. The kernel lists every TCP
// socket of this network namespace with its owner in /proc/net/tcp{,6}.
func sameUserPeer(client, local netip.AddrPort) bool {
	uid, ok := tcpSocketUID(client, local)
	return ok && uid == os.Getuid()
}

// tcpSocketUID finds the socket whose local address is laddr and remote
// address raddr and returns its owner's uid.
func tcpSocketUID(laddr, raddr netip.AddrPort) (int, bool) {
	laddr = netip.AddrPortFrom(laddr.Addr().Unmap(), laddr.Port())
	raddr = netip.AddrPortFrom(raddr.Addr().Unmap(), raddr.Port())
	for _, file := range []string{"/proc/net/tcp", "/proc/net/tcp6"} {
		f, err := os.Open(file)
		if err != nil {
			continue
		}
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			fields := strings.Fields(sc.Text())
			if len(fields) < 8 {
				continue
			}
			l, ok1 := parseProcAddr(fields[1])
			r, ok2 := parseProcAddr(fields[2])
			if !ok1 || !ok2 || l != laddr || r != raddr {
				continue
			}
			uid, err := strconv.Atoi(fields[7])
			f.Close()
			return uid, err == nil
		}
		f.Close()
	}
	return 0, false
}

// parseProcAddr reads an address of /proc/net/tcp{,6}: the IP as 32-bit
// words in hex, each in the machine's byte order, then ":" and the port in
// hex.
func parseProcAddr(s string) (netip.AddrPort, bool) {
	ipHex, portHex, ok := strings.Cut(s, ":")
	if !ok {
		return netip.AddrPort{}, false
	}
	raw, err := hex.DecodeString(ipHex)
	if err != nil || (len(raw) != 4 && len(raw) != 16) {
		return netip.AddrPort{}, false
	}
	ip := make([]byte, len(raw))
	for i := 0; i < len(raw); i += 4 {
		binary.NativeEndian.PutUint32(ip[i:], binary.BigEndian.Uint32(raw[i:]))
	}
	port, err := strconv.ParseUint(portHex, 16, 16)
	if err != nil {
		return netip.AddrPort{}, false
	}
	addr, _ := netip.AddrFromSlice(ip)
	return netip.AddrPortFrom(addr.Unmap(), uint16(port)), true
}
