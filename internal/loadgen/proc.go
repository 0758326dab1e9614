package loadgen

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"strconv"
	"time"
)

// Proc is what /proc says about a process (Linux): its resident memory
// and the CPU time it has used.
type Proc struct {
	// RSS is the resident set size now; PeakRSS its high-water mark.
	RSS     uint64 `json:"rss_bytes"`
	PeakRSS uint64 `json:"peak_rss_bytes"`
	// CPU is the user and system time used so far.
	CPU time.Duration `json:"cpu_ns"`
}

// clockTick is the unit of /proc/PID/stat times (USER_HZ, 100 on Linux).
const clockTick = 10 * time.Millisecond

// ReadProc reads pid's memory and CPU time.
func ReadProc(pid int) (Proc, error) {
	var p Proc
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return Proc{}, err
	}
	sc := bufio.NewScanner(bytes.NewReader(status))
	for sc.Scan() {
		f := bytes.Fields(sc.Bytes())
		if len(f) < 2 {
			continue
		}
		var dst *uint64
		switch string(f[0]) {
		case "VmRSS:":
			dst = &p.RSS
		case "VmHWM:":
			dst = &p.PeakRSS
		default:
			continue
		}
		kb, err := strconv.ParseUint(string(f[1]), 10, 64)
		if err != nil {
			return Proc{}, fmt.Errorf("/proc/%d/status: %s: %w", pid, f[0], err)
		}
		*dst = kb << 10
	}
	if p.RSS == 0 {
		return Proc{}, fmt.Errorf("/proc/%d/status: no VmRSS", pid)
	}

	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return Proc{}, err
	}
	// The command name (field 2) may hold spaces; fields count from after it.
	end := bytes.LastIndexByte(stat, ')')
	f := bytes.Fields(stat[end+1:])
	if len(f) < 13 {
		return Proc{}, fmt.Errorf("/proc/%d/stat: %d fields", pid, len(f))
	}
	for _, field := range f[11:13] { // utime and stime, fields 14 and 15
		ticks, err := strconv.ParseUint(string(field), 10, 64)
		if err != nil {
			return Proc{}, fmt.Errorf("/proc/%d/stat: %w", pid, err)
		}
		p.CPU += time.Duration(ticks) * clockTick
	}
	return p, nil
}
