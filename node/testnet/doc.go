// Package testnet runs many real weft daemons on one machine, each its own
// process with its own repo, ports and log, and runs scenario files against
// them. It is what `weft testnet` drives.
//
// The pieces:
//   - testnet.go: Up makes the nodes (repos, addresses, bootstrap lists from
//     the topology) and starts them; Start, Stop, Kill, Restart, Partition,
//     Heal and Shape change a running testnet; Down tears it down. Processes
//     are started, stopped and sampled through node/proc.
//   - state.go: State, the testnet.json file that lists everything a testnet
//     made, written before each thing is made, so that Down (and Open, from
//     another command) work after the command that made it crashed.
//   - netns.go: as root on Linux, a network namespace per node on a private
//     bridge, with tc shaping and partitions by blackhole routes; otherwise
//     (ModeLoopback) every node on 127.0.0.1 and partitions through each
//     daemon's peer block list.
//   - delayline.go, shaper.go, tap_linux.go: where the kernel has no
//     sch_netem, a userspace delay line (latency, jitter, loss, bandwidth)
//     between a pair of TAP devices per node, run by the `weft testnet
//     shaper` process; rtt.go measures the round trips links give.
//   - spec.go: Scenario, the TOML scenario format, and its validation.
//   - actions.go: the table of actions a step may take and of checks an
//     assert or wait-until step may make; each entry holds its validation
//     and its run side by side.
//   - run.go: Run carries a scenario through its steps, tracks feeds and
//     resource use; report.go and svg.go write its report.
//   - compose.go: Compose files and Kubernetes manifests for the same nodes
//     in containers.
//
// Nothing here listens on or dials anything but 127.0.0.1 or the addresses
// inside the namespaces and bridge it makes itself.
package testnet
