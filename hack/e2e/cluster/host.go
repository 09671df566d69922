package cluster

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// host records every change the cluster makes to this machine and undoes
// them, newest first. Some changes are ours (an address on lo, DROP rules, a
// binfmt_misc entry); others are made by containerd, the kubelet, kube-proxy
// and the CNI plugins (iptables chains, sysctls, a bridge, mounts, folders
// outside the work folder). For those, the state before the start is
// recorded, and the undo puts it back.
//
// Each change is written to the work folder's state file before it is made,
// so a run that was killed (kill -9, a lost terminal) can still be undone by
// Cleanup from another process: see state.go.
type host struct {
	log   *slog.Logger
	state *stateFile
	undos []undo
}

type undo struct {
	what string
	fn   func() error
}

// record writes ch to the state file and registers its undo.
func (h *host) record(ch change) error {
	if err := h.state.add(ch); err != nil {
		return err
	}
	h.undos = append(h.undos, undo{ch.What, func() error { return ch.undo(h.log) }})
	return nil
}

// undoAll runs every undo, newest first, and returns what failed. The state
// file goes when everything was undone.
func (h *host) undoAll() error {
	var errs []error
	for i := len(h.undos) - 1; i >= 0; i-- {
		u := h.undos[i]
		if err := u.fn(); err != nil {
			errs = append(errs, fmt.Errorf("undo %s: %w", u.what, err))
			h.log.Warn("undo failed", "what", u.what, "err", err)
		}
	}
	h.undos = nil
	if len(errs) == 0 {
		errs = append(errs, h.state.remove())
	}
	return errors.Join(errs...)
}

func run(name string, args ...string) error {
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, bytes.TrimSpace(out))
	}
	return nil
}

// The sysctls the node's components set: the bridge plugin turns forwarding
// on, kube-proxy sets route_localnet and conntrack limits, the kubelet sets
// its kernel tunables (overcommit, panic on oops).
var nodeSysctls = []string{
	"net/ipv4/ip_forward",
	"net/ipv4/conf/all/forwarding",
	"net/ipv4/conf/all/route_localnet",
	"net/ipv6/conf/all/forwarding",
	"net/bridge/bridge-nf-call-iptables",
	"net/bridge/bridge-nf-call-ip6tables",
	"net/netfilter/nf_conntrack_max",
	"net/netfilter/nf_conntrack_tcp_timeout_established",
	"net/netfilter/nf_conntrack_tcp_timeout_close_wait",
	"vm/overcommit_memory",
	"vm/panic_on_oom",
	"kernel/panic",
	"kernel/panic_on_oops",
	"kernel/keys/root_maxkeys",
	"kernel/keys/root_maxbytes",
}

// keepSysctls records the sysctls; the undo writes back the ones that changed.
func (h *host) keepSysctls() error {
	saved := map[string]string{}
	for _, k := range nodeSysctls {
		if b, err := os.ReadFile("/proc/sys/" + k); err == nil {
			saved[k] = strings.TrimSpace(string(b))
		}
	}
	return h.record(change{Kind: kindSysctls, What: "sysctls", Values: saved})
}

func restoreSysctls(log *slog.Logger, saved map[string]string) error {
	var errs []error
	for k, v := range saved {
		b, err := os.ReadFile("/proc/sys/" + k)
		if err != nil || strings.TrimSpace(string(b)) == v {
			continue
		}
		log.Info("restoring sysctl", "key", k, "value", v)
		if err := os.WriteFile("/proc/sys/"+k, []byte(v+"\n"), 0o644); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// keepIPTables saves the IPv4 and IPv6 rules (into the work folder) and
// restores them exactly: kube-proxy's and the kubelet's chains, the CNI
// plugins' NAT chains and our DROP rules all go at once, whatever state a
// failed run left them in.
func (h *host) keepIPTables(dir string) error {
	for _, fam := range []string{"iptables", "ip6tables"} {
		saved, err := exec.Command(fam + "-save").Output()
		if err != nil {
			return fmt.Errorf("%s-save: %w", fam, err)
		}
		// A table the save did not list (an unused one) is restored as empty:
		// iptables-restore replaces every table it names, user chains included.
		for _, table := range []string{"filter", "nat", "mangle", "raw"} {
			if !bytes.Contains(saved, []byte("*"+table+"\n")) {
				saved = append(saved, []byte("*"+table+"\nCOMMIT\n")...)
			}
		}
		file := filepath.Join(dir, fam+".rules")
		if err := os.WriteFile(file, saved, 0o600); err != nil {
			return fmt.Errorf("saving the %s rules: %w", fam, err)
		}
		if err := h.record(change{Kind: kindIPTables, What: fam + " rules", Arg: fam, Path: file}); err != nil {
			return err
		}
	}
	return nil
}

func restoreIPTables(family, file string) error {
	saved, err := os.ReadFile(file)
	if err != nil {
		return err
	}
	cmd := exec.Command(family + "-restore")
	cmd.Stdin = bytes.NewReader(saved)
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("%s-restore: %w: %s", family, err, out)
	}
	return nil
}

// isolate keeps pod and Service traffic on this machine: nothing from or to
// those ranges leaves through a link other than the nodes' bridges and lo.
// The rules sit in mangle's POSTROUTING, where the output link is final: a
// packet the host sends to a ClusterIP is routed to eth0 first and only
// rerouted to a bridge once kube-proxy's DNAT has made it a pod's. Traffic
// between the bridges (pod to pod across nodes) is routed by the host and
// stays. They go with the iptables restore recorded before.
func (h *host) isolate(bridges, ranges []string) error {
	const chain = "MEDOPS-E2E-ISOLATE"
	ipt := func(args ...string) error { return run("iptables", append([]string{"-t", "mangle"}, args...)...) }
	if err := ipt("-N", chain); err != nil {
		return err
	}
	for _, b := range bridges {
		if err := ipt("-A", chain, "-o", b, "-j", "RETURN"); err != nil {
			return err
		}
	}
	for _, r := range ranges {
		for _, dir := range []string{"-s", "-d"} {
			if err := ipt("-A", chain, dir, r, "-j", "DROP"); err != nil {
				return err
			}
		}
	}
	return ipt("-I", "POSTROUTING", "1", "!", "-o", "lo", "-j", chain)
}

// addLoAddress puts a node's IP on lo: this kernel cannot make dummy links,
// and a node needs a non-loopback address pods can reach.
func (h *host) addLoAddress(ip string) error {
	if err := h.record(change{Kind: kindLoAddress, What: "address " + ip + " on lo", Arg: ip}); err != nil {
		return err
	}
	return run("ip", "addr", "add", ip+"/32", "dev", "lo")
}

func hasLoAddress(ip string) bool {
	b, err := exec.Command("ip", "-o", "addr", "show", "dev", "lo").Output()
	return err == nil && bytes.Contains(b, []byte(" "+ip+"/32"))
}

// keepLinks records the links there are; the undo deletes the bridges and
// veths made after (the CNI bridges, the host ends of leftover pods' veths).
func (h *host) keepLinks() error {
	before, err := links()
	if err != nil {
		return err
	}
	return h.record(change{Kind: kindLinks, What: "network links", Names: before})
}

func deleteNewLinks(log *slog.Logger, before []string) error {
	now, err := links()
	if err != nil {
		return err
	}
	var errs []error
	// The veths first: a bridge goes only once nothing is attached.
	sort.SliceStable(now, func(i, j int) bool { return linkKind(now[i]) == "veth" && linkKind(now[j]) != "veth" })
	for _, l := range now {
		if contains(before, l) {
			continue
		}
		if k := linkKind(l); k != "veth" && k != "bridge" {
			continue
		}
		log.Info("deleting link", "name", l)
		if err := run("ip", "link", "del", l); err != nil && linkExists(l) {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// linkKind is "bridge", "veth" or "" for any other link.
func linkKind(name string) string {
	if _, err := os.Stat("/sys/class/net/" + name + "/bridge"); err == nil {
		return "bridge"
	}
	if b, err := exec.Command("ip", "-d", "-o", "link", "show", "dev", name).Output(); err == nil && bytes.Contains(b, []byte(" veth ")) {
		return "veth"
	}
	return ""
}

func links() ([]string, error) {
	ents, err := os.ReadDir("/sys/class/net")
	if err != nil {
		return nil, fmt.Errorf("list links: %w", err)
	}
	var out []string
	for _, e := range ents {
		out = append(out, e.Name())
	}
	return out, nil
}

func linkExists(name string) bool { _, err := os.Stat("/sys/class/net/" + name); return err == nil }

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// keepDirs removes those of dirs that do not exist yet, after unmounting
// anything below them: containerd 1.6 keeps its shims' sockets and the
// pods' shm under /run/containerd, CNI its results under /var/lib/cni, the
// pods' network namespaces are bind mounts under /run/netns.
func (h *host) keepDirs(dirs ...string) error {
	var fresh []string
	for _, d := range dirs {
		if _, err := os.Stat(d); errors.Is(err, os.ErrNotExist) {
			fresh = append(fresh, d)
		}
	}
	return h.record(change{Kind: kindDirs, What: "folders " + strings.Join(fresh, " "), Names: fresh})
}

func removeDirs(fresh []string) error {
	var errs []error
	for _, d := range fresh {
		if err := unmountUnder(d); err != nil {
			errs = append(errs, err)
		}
		if err := os.RemoveAll(d); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// keepNetns records the network namespaces (bind mounts in /run/netns);
// the undo removes those made after: CNI makes one per pod sandbox.
func (h *host) keepNetns() error {
	before, _ := filepath.Glob("/run/netns/*")
	return h.record(change{Kind: kindNetns, What: "network namespaces", Names: before})
}

func removeNewNetns(log *slog.Logger, before []string) error {
	now, _ := filepath.Glob("/run/netns/*")
	var errs []error
	for _, n := range now {
		if contains(before, n) {
			continue
		}
		log.Info("removing network namespace", "path", n)
		_ = syscall.Unmount(n, syscall.MNT_DETACH)
		if err := os.Remove(n); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// unmountUnder unmounts every mount point at or below dir, deepest first.
func unmountUnder(dir string) error {
	var errs []error
	for _, m := range mountsUnder(dir) {
		if err := syscall.Unmount(m, 0); err != nil {
			// Busy: a process still holds it. Detach it so the folder can go;
			// the process check after the run reports the holder.
			if err := syscall.Unmount(m, syscall.MNT_DETACH); err != nil && !errors.Is(err, syscall.EINVAL) {
				errs = append(errs, fmt.Errorf("umount %s: %w", m, err))
			}
		}
	}
	return errors.Join(errs...)
}

// mountsUnder lists the mount points at or below dir, deepest first.
func mountsUnder(dir string) []string {
	f, err := os.Open("/proc/self/mounts")
	if err != nil {
		return nil
	}
	defer f.Close()
	dir = filepath.Clean(dir)
	var out []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 2 {
			continue
		}
		mp := unescapeMount(fields[1])
		if mp == dir || strings.HasPrefix(mp, dir+"/") {
			out = append(out, mp)
		}
	}
	sort.Slice(out, func(i, j int) bool { return len(out[i]) > len(out[j]) })
	return out
}

// unescapeMount undoes the octal escapes of /proc/mounts (\040 for a space).
func unescapeMount(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if n, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(n))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// killShims stops what our containerd leaves running when it stops, found
// by its own folder (the socket's) in their command lines: its shims, and
// so the containers, and under qemu-user a fork of the emulated containerd
// that hung before its exec. Such a fork still shows containerd's command
// line (--config in that folder) but has a process group of its own (the
// shims' setpgid ran), so stopping containerd's group misses it; one was
// left after a teardown on 2026-12-07.
func killShims(log *slog.Logger, socket string) {
	dir := filepath.Dir(socket)
	for _, pid := range pidsNaming(dir) {
		if pid == os.Getpid() {
			continue
		}
		log.Info("killing a leftover process of a containerd", "pid", pid, "folder", dir)
		_ = syscall.Kill(pid, syscall.SIGKILL)
	}
	deadline := time.Now().Add(10 * time.Second)
	for len(pidsNaming(dir)) > 0 && time.Now().Before(deadline) {
		time.Sleep(200 * time.Millisecond)
	}
}

// pidsNaming lists the processes with dir, or a path in it, among the
// arguments of their command line.
func pidsNaming(dir string) []int {
	ents, _ := os.ReadDir("/proc")
	var out []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile("/proc/" + e.Name() + "/cmdline")
		if err != nil {
			continue
		}
		for _, a := range bytes.Split(b, []byte{0}) {
			if string(a) == dir || bytes.HasPrefix(a, []byte(dir+"/")) {
				out = append(out, pid)
				break
			}
		}
	}
	return out
}

// removeCgroups kills what is left in the kubelet's kubepods cgroups (a
// container whose shim was killed keeps running) and removes them, deepest
// first, in every v1 hierarchy.
func removeCgroups(log *slog.Logger, name string) error {
	roots, _ := filepath.Glob("/sys/fs/cgroup/*/" + name)
	var dirs []string
	for _, root := range roots {
		_ = filepath.WalkDir(root, func(p string, d os.DirEntry, err error) error {
			if err == nil && d.IsDir() {
				dirs = append(dirs, p)
			}
			return nil
		})
	}
	killed := false
	for _, d := range dirs {
		b, _ := os.ReadFile(filepath.Join(d, "cgroup.procs"))
		for _, f := range strings.Fields(string(b)) {
			if pid, err := strconv.Atoi(f); err == nil {
				log.Info("killing a leftover container process", "pid", pid, "cgroup", d)
				_ = syscall.Kill(pid, syscall.SIGKILL)
				killed = true
			}
		}
	}
	if killed {
		time.Sleep(time.Second)
	}
	sort.Slice(dirs, func(i, j int) bool { return len(dirs[i]) > len(dirs[j]) })
	var errs []error
	for _, d := range dirs {
		if err := syscall.Rmdir(d); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, fmt.Errorf("rmdir %s: %w", d, err))
		}
	}
	return errors.Join(errs...)
}

// Leftovers lists what a stopped cluster left on the machine: processes
// whose command line names the work folder, mounts under it or under the
// folders the nodes' components use, the CNI bridges, the nodes' addresses,
// the binfmt_misc entry, pi-1's cgroups, the state file.
func Leftovers(work string) []string {
	var out []string
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		b, err := os.ReadFile("/proc/" + e.Name() + "/cmdline")
		if err == nil && bytes.Contains(b, []byte(work+"/")) {
			out = append(out, fmt.Sprintf("process %d: %s", pid, bytes.ReplaceAll(b, []byte{0}, []byte{' '})))
		}
	}
	for _, d := range []string{work, "/var/lib/kubelet", "/run/containerd", "/run/netns"} {
		for _, m := range mountsUnder(d) {
			out = append(out, "mount "+m)
		}
	}
	for _, b := range []string{Bridge, PiBridge} {
		if linkExists(b) {
			out = append(out, "bridge "+b)
		}
	}
	for _, ip := range []string{NodeIP, PiIP} {
		if hasLoAddress(ip) {
			out = append(out, "address "+ip+" on lo")
		}
	}
	if _, err := os.Stat(filepath.Join(binfmtDir, binfmtName)); err == nil {
		out = append(out, "binfmt_misc entry "+binfmtName)
	}
	if roots, _ := filepath.Glob("/sys/fs/cgroup/*/" + piCgroupRoot); len(roots) > 0 {
		out = append(out, "cgroups "+strings.Join(roots, " "))
	}
	if _, err := os.Stat(filepath.Join(work, StateFile)); err == nil {
		out = append(out, "state file "+filepath.Join(work, StateFile))
	}
	return out
}
