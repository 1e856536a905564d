// Package simrun is the driver of simulated testnet runs: its test binary,
// weft-testnet-sim, runs one scenario with testnet.RunSim inside a
// testing/synctest bubble, so the simulation runs in virtual time.
//
// synctest makes a bubble only for a test (synctest.Test takes a
// *testing.T), and the weft binary is not a test, so `weft testnet run
// FILE --mode sim` runs this binary. Build it beside weft:
//
//	go test -c -o "$(dirname "$(command -v weft)")/weft-testnet-sim" ./node/testnet/simrun
//
// and run it by hand as
//
//	weft-testnet-sim -test.run '^TestRun$' -test.timeout 40m \
//	    -sim.scenario FILE [-sim.seed N] [-sim.report DIR] [-sim.dir DIR]
package simrun
