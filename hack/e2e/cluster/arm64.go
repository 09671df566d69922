package cluster

import (
	"bufio"
	"context"
	"debug/elf"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// pi-1 is a real arm64 node on this amd64 machine: an arm64 containerd, run
// by qemu-user through binfmt_misc, beside the amd64 node. Its containerd's
// CRI picks the linux/arm64 variant of each image, so its pods run our arm64
// binaries (emulated, on this kernel). Its kubelet is the amd64 node's, the
// pinned v1.37 kubelet with one patch (hack/tools/kube/kubelet-node-arch.patch):
// it reports the architecture of the runtime it drives, read from
// containerd's ELF header, instead of its own GOARCH. None of our code runs
// in the kubelet, and cross-compiling it for arm64 cost a CI run ~15
// CPU-minutes.
const (
	PiName       = "pi-1"
	PiIP         = "10.250.0.2"    // a /32 on lo, as the amd64 node's
	PiPodCIDR    = "10.251.1.0/24" // the second /24 of ClusterCIDR, on pi-1's own bridge
	piPodGateway = "10.251.1.1"
	PiBridge     = "medopspi0"
	// piCgroupRoot is pi-1's kubelet's cgroupRoot: its pods live under
	// /pi1/kubepods, out of the amd64 kubelet's way (each removes pod
	// cgroups it does not know).
	piCgroupRoot = "pi1"
	// Debian's statically linked qemu for aarch64, from qemu-user-static.
	qemuAarch64 = "/usr/bin/qemu-aarch64-static"
	binfmtName  = "medops-e2e-aarch64"
)

// A Raspberry Pi 4 Model B with 8 GB and a 32 GB SD card, as pi-1 tells the
// scheduler: the kubelet reserves the rest of this machine, so allocatable
// is what a Pi has left for pods. This machine has fewer CPUs than a Pi; all
// of them stay (emulation makes each one slower than a Pi's core anyway).
const (
	piMemory  = 7680 << 20 // 7.5 GiB: 8 GB less the firmware's and kernel's share
	piStorage = 28 << 30   // a 32 GB card less the OS
)

// Arm64Node says what runs pi-1, from hack/tools.sh node and
// containerd-arm64, and what it imports.
type Arm64Node struct {
	Kubelet    string // hack/tools.sh node's kubelet (amd64, KUBELET_NODE_ARCH patch)
	Containerd string // containerd for linux/arm64, built with hack/tools/containerd's patch
	// Images are the archives with a linux/arm64 variant (the pause image
	// among them), imported for that platform.
	Images []string
}

func (c *Cluster) piDir(rel ...string) string {
	return filepath.Join(append([]string{c.Work, PiName}, rel...)...)
}

// PiContainerdSocket is pi-1's containerd's socket.
func (c *Cluster) PiContainerdSocket() string { return c.piDir("containerd", "containerd.sock") }

// startPi brings pi-1 up: binfmt_misc for aarch64, its cgroup root, its
// containerd with the images imported, its kubelet.
func (c *Cluster) startPi(ctx context.Context) error {
	a := c.opts.Arm64
	if err := c.host.registerBinfmt(binfmtName, qemuAarch64, aarch64Magic, aarch64Mask); err != nil {
		return err
	}
	if err := c.host.makeCgroupRoot(piCgroupRoot); err != nil {
		return err
	}
	cfg, err := c.write(PiName+"/containerd/config.toml", c.piContainerdConfig(), 0o644)
	if err != nil {
		return err
	}
	if _, err := c.write(PiName+"/cni/net.d/10-medops-pi.conflist", c.piCNIConfig(), 0o644); err != nil {
		return err
	}
	// Its shims are Debian's amd64 containerd-shim-runc-v2, found on PATH
	// (qemu refuses the prctl(PR_SET_CHILD_SUBREAPER) of an arm64 shim);
	// the shim protocol is the same. They run the amd64 runc.
	if err := c.host.record(change{Kind: kindShims, What: "pi-1's containerd shims", Path: c.PiContainerdSocket()}); err != nil {
		return err
	}
	ctrd, err := c.start("containerd-"+PiName, nil, a.Containerd, "--config", cfg)
	if err != nil {
		return err
	}
	go watchHungForks(c.log.With("node", PiName), ctrd.Cmd.Process.Pid, forkHangAfter, forkCheck, ctrd.Done())
	if err := waitFor(ctx, 60*time.Second, "pi-1's containerd socket", func(context.Context) error {
		return exec.Command("ctr", "--address", c.PiContainerdSocket(), "version").Run()
	}, ctrd); err != nil {
		return err
	}
	if err := c.importImages(ctx, c.PiContainerdSocket(), "linux/arm64", a.Images); err != nil {
		return err
	}
	kcfg, err := c.write(PiName+"/kubelet/config.yaml", c.piKubeletConfig(), 0o644)
	if err != nil {
		return err
	}
	if err := c.host.record(change{Kind: kindUnmount, What: "pi-1's kubelet mounts", Path: c.piDir("kubelet")}); err != nil {
		return err
	}
	arch, err := elfArch(a.Containerd)
	if err != nil {
		return err
	}
	if arch != "arm64" {
		return fmt.Errorf("pi-1's containerd %s is %s, want an arm64 build", a.Containerd, arch)
	}
	kubelet, err := c.start("kubelet-"+PiName, []string{"KUBELET_NODE_ARCH=" + arch}, a.Kubelet,
		"--config", kcfg, "--kubeconfig", filepath.Join(c.Work, "kubelet-"+PiName+".kubeconfig"),
		"--root-dir", c.piDir("kubelet", "root"),
		"--hostname-override", PiName, "--node-ip", PiIP,
		"--node-labels", "topology.kubernetes.io/zone=zone-a,topology.kubernetes.io/region=home-lab,node.kubernetes.io/instance-type=raspberrypi-4b")
	if err != nil {
		return err
	}
	return waitFor(ctx, 120*time.Second, "pi-1's kubelet /healthz", httpOK(fmt.Sprintf("http://127.0.0.1:%d/healthz", c.ports.piKubeletHealthz), nil), kubelet, ctrd)
}

// elfArch is the GOARCH of an executable, from its ELF header.
func elfArch(path string) (string, error) {
	f, err := elf.Open(path)
	if err != nil {
		return "", fmt.Errorf("reading the architecture of %s: %w", path, err)
	}
	defer f.Close()
	switch f.Machine {
	case elf.EM_AARCH64:
		return "arm64", nil
	case elf.EM_X86_64:
		return "amd64", nil
	case elf.EM_ARM:
		return "arm", nil
	}
	return "", fmt.Errorf("%s: ELF machine %s is none of amd64, arm64, arm", path, f.Machine)
}

// importImages imports image archives into a containerd, unpacked for
// platform (empty: every platform, unpacked for containerd's own).
func (c *Cluster) importImages(ctx context.Context, socket, platform string, images []string) error {
	for _, img := range images {
		args := []string{"--address", socket, "-n", "k8s.io", "images", "import"}
		if platform != "" {
			args = append(args, "--platform", platform)
		} else {
			args = append(args, "--all-platforms")
		}
		out, err := exec.CommandContext(ctx, "ctr", append(args, img)...).CombinedOutput()
		if err != nil {
			return fmt.Errorf("ctr images import %s: %w: %s", img, err, out)
		}
		c.log.Info("imported", "archive", filepath.Base(img), "containerd", socket, "ctr", strings.TrimSpace(string(out)))
	}
	return nil
}

// The ELF header of an aarch64 executable, and the bits of it that count
// (as Debian's qemu-user-static registers it).
var (
	aarch64Magic = []byte{0x7f, 'E', 'L', 'F', 0x02, 0x01, 0x01, 0x00, 0, 0, 0, 0, 0, 0, 0, 0, 0x02, 0x00, 0xb7, 0x00}
	aarch64Mask  = []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x00, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xfe, 0xff, 0xff, 0xff}
)

const binfmtDir = "/proc/sys/fs/binfmt_misc"

// registerBinfmt makes the kernel run ELF files of another architecture
// with a qemu-user interpreter. The F flag has the kernel open the
// interpreter now, so it also runs programs inside containers' mount
// namespaces, which do not hold it. binfmt_misc is mounted if it is not.
func (h *host) registerBinfmt(name, interpreter string, magic, mask []byte) error {
	if _, err := os.Stat(interpreter); err != nil {
		return fmt.Errorf("%s is missing (apt-get install qemu-user-static): %w", interpreter, err)
	}
	_, err := os.Stat(filepath.Join(binfmtDir, "register"))
	mount := err != nil
	if err := h.record(change{Kind: kindBinfmt, What: "binfmt_misc entry " + name, Arg: name, Flag: mount}); err != nil {
		return err
	}
	if mount {
		if err := syscall.Mount("binfmt_misc", binfmtDir, "binfmt_misc", 0, ""); err != nil {
			return fmt.Errorf("mount binfmt_misc: %w", err)
		}
	}
	if _, err := os.Stat(filepath.Join(binfmtDir, name)); err == nil {
		return fmt.Errorf("binfmt_misc entry %s exists: another run holds it (hack/e2e/cluster.sh --cleanup undoes a killed one)", name)
	}
	hex := func(b []byte) string {
		var s strings.Builder
		for _, x := range b {
			fmt.Fprintf(&s, `\x%02x`, x)
		}
		return s.String()
	}
	rule := fmt.Sprintf(":%s:M::%s:%s:%s:F", name, hex(magic), hex(mask), interpreter)
	if err := os.WriteFile(filepath.Join(binfmtDir, "register"), []byte(rule), 0); err != nil {
		return fmt.Errorf("binfmt_misc register %s: %w", name, err)
	}
	return nil
}

func unregisterBinfmt(name string, unmount bool) error {
	var errs []error
	entry := filepath.Join(binfmtDir, name)
	if _, err := os.Stat(entry); err == nil {
		if err := os.WriteFile(entry, []byte("-1"), 0); err != nil {
			errs = append(errs, fmt.Errorf("binfmt_misc remove %s: %w", name, err))
		}
	}
	if unmount {
		if _, err := os.Stat(filepath.Join(binfmtDir, "register")); err == nil {
			if err := syscall.Unmount(binfmtDir, 0); err != nil {
				errs = append(errs, fmt.Errorf("umount binfmt_misc: %w", err))
			}
		}
	}
	return errors.Join(errs...)
}

// makeCgroupRoot makes /NAME in every cgroup v1 hierarchy (a kubelet's
// cgroupRoot must exist), with cpuset's CPUs and memory nodes set, which a
// new cpuset cgroup lacks; the undo removes the tree and kills what is left.
func (h *host) makeCgroupRoot(name string) error {
	if err := h.record(change{Kind: kindCgroups, What: "cgroups /" + name, Arg: name}); err != nil {
		return err
	}
	hs, err := cgroupHierarchies()
	if err != nil {
		return err
	}
	for _, dir := range hs {
		if err := os.MkdirAll(filepath.Join(dir, name), 0o755); err != nil {
			return fmt.Errorf("cgroup %s: %w", name, err)
		}
		if filepath.Base(dir) == "cpuset" {
			for _, f := range []string{"cpuset.cpus", "cpuset.mems"} {
				b, err := os.ReadFile(filepath.Join(dir, f))
				if err == nil {
					err = os.WriteFile(filepath.Join(dir, name, f), b, 0o644)
				}
				if err != nil {
					return fmt.Errorf("cgroup %s: %s: %w", name, f, err)
				}
			}
		}
	}
	return nil
}

// cgroupHierarchies are the mount points of the cgroup v1 hierarchies.
func cgroupHierarchies() ([]string, error) {
	f, err := os.Open("/proc/self/mounts")
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if fs := strings.Fields(sc.Text()); len(fs) > 2 && fs[2] == "cgroup" {
			out = append(out, fs[1])
		}
	}
	return out, sc.Err()
}

// memTotal is this machine's memory in bytes.
func memTotal() (int64, error) {
	b, err := os.ReadFile("/proc/meminfo")
	if err != nil {
		return 0, err
	}
	for _, l := range strings.Split(string(b), "\n") {
		if f := strings.Fields(l); len(f) >= 2 && f[0] == "MemTotal:" {
			kb, err := strconv.ParseInt(f[1], 10, 64)
			return kb << 10, err
		}
	}
	return 0, errors.New("/proc/meminfo: no MemTotal")
}

// diskSize is the size of the file system holding dir, in bytes.
func diskSize(dir string) (int64, error) {
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err != nil {
		return 0, err
	}
	return int64(st.Blocks) * st.Bsize, nil
}
