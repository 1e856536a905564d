package proc

import (
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"testing"
	"time"
)

func needLinux(t *testing.T) {
	t.Helper()
	if runtime.GOOS != "linux" {
		t.Skip("reads /proc: Linux only")
	}
}

// startSleeper starts `sh -c SCRIPT` and stops it (SIGKILL) at cleanup if
// the test did not.
func startSleeper(t *testing.T, script string) *Process {
	t.Helper()
	p, err := Start(exec.Command("sh", "-c", script))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Stop(0) })
	return p
}

func TestReadSelf(t *testing.T) {
	needLinux(t)
	st, err := ReadStat(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	if st.Start == 0 || st.Zombie() {
		t.Fatalf("stat of this process: %+v", st)
	}
	// Burn some CPU so that utime+stime moves.
	deadline := time.Now().Add(5 * time.Second)
	for x := 0; time.Now().Before(deadline); x++ {
		if x%1_000_000 == 0 {
			if now, _ := ReadStat(os.Getpid()); now.CPU > st.CPU {
				break
			}
		}
	}
	if now, _ := ReadStat(os.Getpid()); now.CPU <= st.CPU || now.CPUSeconds() <= 0 {
		t.Fatalf("CPU time did not move: %d -> %d ticks", st.CPU, now.CPU)
	}
	m, err := ReadMem(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	if m.RSS <= 0 || m.HWM < m.RSS || m.Anon <= 0 || m.Threads < 1 {
		t.Fatalf("memory of this process: %+v", m)
	}
}

func TestReadGone(t *testing.T) {
	needLinux(t)
	p := startSleeper(t, "exit 0")
	<-p.Done()
	if _, err := ReadStat(p.PID); err == nil {
		t.Fatal("ReadStat of a reaped process: no error")
	}
	if _, err := ReadMem(p.PID); err == nil {
		t.Fatal("ReadMem of a reaped process: no error")
	}
}

func TestStop(t *testing.T) {
	needLinux(t)
	cases := []struct {
		name       string
		script     string
		wantKilled bool
	}{
		{"exits on SIGTERM", "exec sleep 30", false},
		{"ignores SIGTERM", "trap '' TERM; exec sleep 30", true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			p := startSleeper(t, c.script)
			st, err := ReadStat(p.PID)
			if err != nil || st.Zombie() {
				t.Fatalf("running child: %+v, %v", st, err)
			}
			// The trap must be set before SIGTERM comes: wait until sh has
			// exec'd sleep (its command name changes).
			deadline := time.Now().Add(10 * time.Second)
			for {
				b, _ := os.ReadFile("/proc/" + strconv.Itoa(p.PID) + "/comm")
				if string(b) == "sleep\n" {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("child did not exec sleep; comm %q", b)
				}
				time.Sleep(5 * time.Millisecond)
			}
			_, killed := p.Stop(200 * time.Millisecond)
			if killed != c.wantKilled {
				t.Fatalf("killed = %v, want %v", killed, c.wantKilled)
			}
			select {
			case <-p.Done():
			default:
				t.Fatal("Stop returned before the process was reaped")
			}
			if p.Err() == nil {
				t.Fatal("a signalled process reports a clean exit")
			}
			if took, killed := p.Stop(time.Second); took != 0 || killed {
				t.Fatalf("second Stop: %v, %v", took, killed)
			}
		})
	}
}

// The machine's busy time grows while this process spins.
func TestMachineBusy(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("/proc/stat is Linux's")
	}
	b0, err := MachineBusy()
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		b1, err := MachineBusy()
		if err != nil {
			t.Fatal(err)
		}
		if b1 > b0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("busy time stayed at %v while spinning", b0)
		}
		for i := range 1 << 20 {
			spinSink += i
		}
	}
}

var spinSink int
