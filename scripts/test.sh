#!/usr/bin/env bash
# Runs the whole test suite: installs what the tests need, then go vet and
# go test -race over every package.
set -euo pipefail
cd "$(dirname "$0")/.."

# The dashboard's browser test (node/dashboard_test.go) drives headless
# Chromium; install Debian's package when it is missing and we may.
if ! command -v chromium >/dev/null 2>&1 && ! command -v chromium-browser >/dev/null 2>&1 && ! command -v google-chrome >/dev/null 2>&1; then
	if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
		echo "scripts/test.sh: installing chromium for the dashboard browser test" >&2
		apt-get update -qq >/dev/null
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
	else
		echo "scripts/test.sh: no Chromium, and not root: install chromium, or the dashboard browser test fails" >&2
	fi
fi

# The testnet tests (cmd/weft/testnet_test.go) put each node in a network
# namespace when root; that needs iproute2 (ip, tc). Without it they fall
# back to 127.0.0.1.
if [ "$(id -u)" = 0 ] && ! command -v ip >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1; then
	echo "scripts/test.sh: installing iproute2 for the testnet tests" >&2
	apt-get update -qq >/dev/null
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq iproute2 >/dev/null
fi

# The NAT tests (node/testnet TestNATKinds, cmd/weft TestNATHolePunch and
# TestUPnPPortMapping) build routers in namespaces with nftables; the UPnP
# one runs miniupnpd (nftables flavour) in a router namespace.
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
	missing=""
	command -v nft >/dev/null 2>&1 || missing="$missing nftables"
	[ -x /usr/sbin/miniupnpd ] || missing="$missing miniupnpd"
	if [ -n "$missing" ]; then
		echo "scripts/test.sh: installing$missing for the NAT tests" >&2
		apt-get update -qq >/dev/null
		# The package's own service must never start on this machine's
		# network: the tests run miniupnpd themselves in a namespace.
		if command -v debconf-set-selections >/dev/null 2>&1; then
			echo "miniupnpd miniupnpd/start_daemon boolean false" | debconf-set-selections
		fi
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $missing >/dev/null
	fi
fi

go vet ./...
# The simulated testnets (node/testnet TestSim*) run without the race
# detector, after this pass: the 100-node one needs over 9 GiB under it, and
# ThreadSanitizer's own runtime aborted once on a small one (a CHECK failure
# in tsan_rtl.cpp, not a reported race) in a synctest bubble.
go test -race -timeout 20m -skip '^TestSim' ./...
go test -count=1 -timeout 10m -run '^TestSim' ./node/testnet
