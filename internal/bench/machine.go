package bench

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strings"
)

// Machine describes where the numbers were taken.
type Machine struct {
	CPUs     int
	CPUModel string
	MemTotal string
	Kernel   string
	Go       string
	Redis    string
}

func describeMachine(ctx context.Context) (Machine, error) {
	m := Machine{CPUs: runtime.NumCPU()}
	if f, err := os.Open("/proc/cpuinfo"); err == nil {
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			if k, v, ok := strings.Cut(sc.Text(), ":"); ok && strings.TrimSpace(k) == "model name" {
				m.CPUModel = strings.TrimSpace(v)
				break
			}
		}
		f.Close()
	}
	if f, err := os.Open("/proc/meminfo"); err == nil {
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			if v, ok := strings.CutPrefix(sc.Text(), "MemTotal:"); ok {
				var kb int64
				fmt.Sscanf(strings.TrimSpace(v), "%d", &kb)
				m.MemTotal = fmt.Sprintf("%.1f GiB", float64(kb)/(1<<20))
				break
			}
		}
		f.Close()
	}
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		m.Kernel = strings.TrimSpace(string(b))
	}
	out, err := exec.CommandContext(ctx, "go", "version").Output()
	if err != nil {
		return m, fmt.Errorf("go version: %w", err)
	}
	m.Go = strings.TrimPrefix(strings.TrimSpace(string(out)), "go version ")
	out, err = exec.CommandContext(ctx, "redis-server", "--version").Output()
	if err != nil {
		return m, fmt.Errorf("redis-server --version: %w", err)
	}
	m.Redis = strings.TrimSpace(string(out))
	if f := strings.Fields(m.Redis); len(f) >= 3 {
		m.Redis = strings.TrimPrefix(f[2], "v=") // "Redis server v=7.0.15 sha=..."
	}
	return m, nil
}

// goBenchmarks runs the benchmarks that live next to the code and returns
// their result lines.
func goBenchmarks(ctx context.Context, root, benchtime string) (string, error) {
	cmd := exec.CommandContext(ctx, "go", "test", "-run", "^$", "-bench", ".", "-benchtime", benchtime, "./codes", "./mail")
	cmd.Dir = root
	out, err := cmd.CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("go test -bench: %w\n%s", err, out)
	}
	var keep []string
	for line := range strings.SplitSeq(string(out), "\n") {
		if strings.HasPrefix(line, "Benchmark") || strings.HasPrefix(line, "pkg:") {
			keep = append(keep, strings.TrimRight(line, " \t"))
		}
	}
	return strings.Join(keep, "\n"), nil
}
