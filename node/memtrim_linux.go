package node

import (
	"bufio"
	"fmt"
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// releaseBinaryPages drops this process's mappings of the pages of its
// own executable that it only read (code and read-only data; never the
// writable data segment). Start-up runs every package's initialisation,
// code and tables spread over the whole binary, and the kernel maps them
// in 64 KiB around each page touched: a daemon kept over 30 MiB of its
// binary mapped, in every daemon's RSS; an add or a fetch maps 10 MiB more. The pages stay in the page cache,
// shared by every process of the binary; what the daemon runs afterwards
// is mapped again on first use (a minor fault, no disk read). What no
// process maps any more, the kernel may reclaim under memory pressure.
// It reports how many bytes of mappings it released.
func releaseBinaryPages() (int64, error) {
	exe, err := os.Readlink("/proc/self/exe")
	if err != nil {
		return 0, fmt.Errorf("release start-up pages: %w", err)
	}
	f, err := os.Open("/proc/self/maps")
	if err != nil {
		return 0, fmt.Errorf("release start-up pages: %w", err)
	}
	defer f.Close()
	var released int64
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		// start-end perms offset dev inode path
		fields := strings.Fields(sc.Text())
		if len(fields) < 6 || fields[5] != exe || strings.Contains(fields[1], "w") || fields[1][3] != 'p' {
			continue
		}
		bounds := strings.SplitN(fields[0], "-", 2)
		start, err1 := strconv.ParseUint(bounds[0], 16, 64)
		end, err2 := strconv.ParseUint(bounds[1], 16, 64)
		if err1 != nil || err2 != nil || end <= start {
			continue
		}
		if err := madviseRange(uintptr(start), uintptr(end-start)); err != nil {
			return released, fmt.Errorf("release start-up pages %s: %w", fields[0], err)
		}
		released += int64(end - start)
	}
	return released, sc.Err()
}

func madviseRange(start, length uintptr) error {
	if _, _, errno := unix.Syscall(unix.SYS_MADVISE, start, length, unix.MADV_DONTNEED); errno != 0 {
		return errno
	}
	return nil
}
