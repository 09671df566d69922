package cluster

import (
	"log/slog"
	"os/exec"
	"path/filepath"
	"slices"
	"syscall"
	"testing"
)

// What a containerd leaves behind is found by its folder anywhere in a
// command line, as a stuck fork of an emulated containerd shows it
// (--config <folder>/config.toml), and killed; a process naming another
// folder is left alone.
func TestKillShimsTakesEveryProcessNamingTheFolder(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "containerd")
	other := filepath.Join(t.TempDir(), "containerd")
	start := func(arg0 string) *exec.Cmd {
		cmd := exec.Command("sh", "-c", "sleep 600", arg0) // arg0 shows in the command line
		// A group of its own: the cleanup takes the shell's sleep too,
		// which outlives a shell killed alone.
		cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL); _ = cmd.Wait() })
		return cmd
	}
	stuck := start(filepath.Join(dir, "config.toml"))
	bystander := start(filepath.Join(other, "config.toml"))
	if got := pidsNaming(dir); !slices.Contains(got, stuck.Process.Pid) || slices.Contains(got, bystander.Process.Pid) {
		t.Fatalf("pidsNaming(%s) = %v, want %d and not %d", dir, got, stuck.Process.Pid, bystander.Process.Pid)
	}
	killShims(slog.New(slog.DiscardHandler), filepath.Join(dir, "containerd.sock"))
	if err := stuck.Wait(); err == nil {
		t.Fatal("the process naming the folder exited cleanly; want it killed")
	}
	if !slices.Contains(pidsNaming(other), bystander.Process.Pid) {
		t.Fatal("the process naming another folder was killed too")
	}
}
