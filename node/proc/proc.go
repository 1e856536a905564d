// Package proc starts, stops and samples child processes on Linux: the
// daemons a testnet (node/testnet) or a benchmark (scripts/bench) runs.
// It is the one place that reads /proc/PID/stat, /proc/PID/status and
// /proc/PID/smaps_rollup, and the one place that says what unit their CPU
// times are in (ClockTicks).
//
// Outside Linux the readers return errors and the zero values; starting and
// stopping work wherever os/exec does.
package proc

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// ClockTicks is USER_HZ, the unit of the CPU and start times in
// /proc/PID/stat: 100 per second. The kernel fixes it at 100 as part of
// its user-space ABI on every architecture, whatever the kernel's internal
// tick rate (CONFIG_HZ) is; it is what `getconf CLK_TCK` and
// sysconf(_SC_CLK_TCK) report on Linux.
const ClockTicks = 100

// Stat is what /proc/PID/stat says about a process.
type Stat struct {
	State byte   // R, S, D, Z, ...
	CPU   int64  // utime + stime, in ClockTicks
	Start uint64 // start time after boot, in ClockTicks: with the PID it names one process
}

// CPUSeconds is the process's user and system CPU time in seconds.
func (s Stat) CPUSeconds() float64 { return float64(s.CPU) / ClockTicks }

// Zombie says the process has exited and waits to be reaped.
func (s Stat) Zombie() bool { return s.State == 'Z' }

// ReadStat reads /proc/PID/stat.
func ReadStat(pid int) (Stat, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return Stat{}, err
	}
	// The command name (field 2) may hold spaces and parentheses; the
	// fields after it start past the last ')'.
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return Stat{}, fmt.Errorf("malformed /proc/%d/stat", pid)
	}
	f := strings.Fields(s[i+1:])
	// f[0] is field 3 (state); utime, stime and starttime are fields 14,
	// 15 and 22.
	if len(f) < 20 || len(f[0]) != 1 {
		return Stat{}, fmt.Errorf("short /proc/%d/stat", pid)
	}
	ut, err1 := strconv.ParseInt(f[11], 10, 64)
	st, err2 := strconv.ParseInt(f[12], 10, 64)
	start, err3 := strconv.ParseUint(f[19], 10, 64)
	if err := errors.Join(err1, err2, err3); err != nil {
		return Stat{}, fmt.Errorf("malformed /proc/%d/stat: %w", pid, err)
	}
	return Stat{State: f[0][0], CPU: ut + st, Start: start}, nil
}

// MachineBusy reads the first line of /proc/stat: the CPU time every core
// of the machine has spent busy since boot (all but idle and iowait), in
// seconds, whatever process (or interrupt) it went to.
func MachineBusy() (float64, error) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, err
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line)
	if len(f) < 6 || f[0] != "cpu" {
		return 0, errors.New("malformed /proc/stat")
	}
	var busy int64
	for i, v := range f[1:] {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			return 0, fmt.Errorf("malformed /proc/stat: %w", err)
		}
		if i != 3 && i != 4 { // idle, iowait
			busy += n
		}
	}
	return float64(busy) / ClockTicks, nil
}

// Mem is a process's memory, in bytes.
type Mem struct {
	RSS     int64 // VmRSS
	HWM     int64 // VmHWM: peak RSS
	Anon    int64 // RssAnon: heap, stacks, buffers
	File    int64 // RssFile: mostly the binary's text, shared between processes
	PSS     int64 // Pss from smaps_rollup: shared pages split among their sharers (0 if unreadable)
	Threads int
}

// ReadMem reads /proc/PID/status and /proc/PID/smaps_rollup.
func ReadMem(pid int) (Mem, error) {
	var m Mem
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return m, err
	}
	for line := range strings.SplitSeq(string(data), "\n") {
		k, v, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		x, ok := firstInt(v)
		if !ok {
			continue
		}
		switch k {
		case "VmRSS":
			m.RSS = x << 10
		case "VmHWM":
			m.HWM = x << 10
		case "RssAnon":
			m.Anon = x << 10
		case "RssFile":
			m.File = x << 10
		case "Threads":
			m.Threads = int(x)
		}
	}
	if m.RSS == 0 {
		return m, errors.New("no VmRSS in /proc status (process gone?)")
	}
	if data, err := os.ReadFile(fmt.Sprintf("/proc/%d/smaps_rollup", pid)); err == nil {
		for line := range strings.SplitSeq(string(data), "\n") {
			if v, ok := strings.CutPrefix(line, "Pss:"); ok {
				if x, ok := firstInt(v); ok {
					m.PSS = x << 10
				}
			}
		}
	}
	return m, nil
}

func firstInt(s string) (int64, bool) {
	f := strings.Fields(s)
	if len(f) == 0 {
		return 0, false
	}
	x, err := strconv.ParseInt(f[0], 10, 64)
	return x, err == nil
}

// Process is a child process started by Start. Its exit is reaped by a
// goroutine that ends when the process does.
type Process struct {
	Cmd  *exec.Cmd
	PID  int
	done chan struct{}
	err  error // Cmd.Wait's result; set before done closes
}

// Start starts cmd and reaps it when it exits. The caller sets up cmd
// (output, environment, SysProcAttr) beforehand.
func Start(cmd *exec.Cmd) (*Process, error) {
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	p := &Process{Cmd: cmd, PID: cmd.Process.Pid, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		close(p.done)
	}()
	return p, nil
}

// Done is closed once the process has exited and been reaped.
func (p *Process) Done() <-chan struct{} { return p.done }

// Err is the process's exit error (nil for a clean exit); valid once Done
// is closed.
func (p *Process) Err() error {
	<-p.done
	return p.err
}

// Stop sends SIGTERM, waits up to grace for the process to exit, then
// sends SIGKILL and waits for it. It returns how long the process took to
// exit and whether it had to be killed. A process already gone is left
// alone.
func (p *Process) Stop(grace time.Duration) (took time.Duration, killed bool) {
	t0 := time.Now()
	select {
	case <-p.done:
		return 0, false
	default:
	}
	_ = syscall.Kill(p.PID, syscall.SIGTERM)
	t := time.NewTimer(grace)
	defer t.Stop()
	select {
	case <-p.done:
		return time.Since(t0), false
	case <-t.C:
	}
	_ = syscall.Kill(p.PID, syscall.SIGKILL)
	<-p.done
	return time.Since(t0), true
}
