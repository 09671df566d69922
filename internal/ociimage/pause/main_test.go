package main

import (
	"bufio"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestMain lets the test binary play the pause program in a child process.
func TestMain(m *testing.M) {
	if os.Getenv("MEDOPS_PAUSE_CHILD") == "1" {
		run(func() { os.Stdout.WriteString("ready\n") })
		return
	}
	os.Exit(m.Run())
}

func TestExitsCleanlyOnSIGTERMAndSIGINT(t *testing.T) {
	for _, sig := range []syscall.Signal{syscall.SIGTERM, syscall.SIGINT} {
		t.Run(sig.String(), func(t *testing.T) {
			cmd := exec.Command(os.Args[0], "-test.run=^$")
			cmd.Env = append(os.Environ(), "MEDOPS_PAUSE_CHILD=1")
			out, err := cmd.StdoutPipe()
			if err != nil {
				t.Fatal(err)
			}
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			// Signalled only once it catches the signals.
			if line, err := bufio.NewReader(out).ReadString('\n'); err != nil || line != "ready\n" {
				_ = cmd.Process.Kill()
				t.Fatalf("pause did not get ready: %q %v", line, err)
			}
			if err := cmd.Process.Signal(sig); err != nil {
				t.Fatal(err)
			}
			if err := cmd.Wait(); err != nil {
				t.Errorf("after %s: %v, want exit status 0", sig, err)
			}
		})
	}
}

func TestReapCollectsExitedChildren(t *testing.T) {
	// A child this process started and never waited for stays a zombie
	// until reap collects it.
	pid, err := syscall.ForkExec("/bin/true", []string{"true"}, &syscall.ProcAttr{})
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
		if err != nil {
			t.Fatal(err)
		}
		if strings.Contains(string(b), ") Z ") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("child %d never exited: %s", pid, b)
		}
		time.Sleep(10 * time.Millisecond)
	}
	reap()
	if _, err := os.Stat("/proc/" + strconv.Itoa(pid)); !os.IsNotExist(err) {
		t.Errorf("child %d is still there after reap: %v", pid, err)
	}
}
