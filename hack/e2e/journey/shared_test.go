//go:build e2e

package journey

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/medops/medops/hack/e2e/cluster"
	"github.com/medops/medops/hack/e2e/upstream"
)

// sharedName is the 3-replica gateway of issue 21's journey.
const sharedName = "medops-shared"

// Its budget: Ensembl asks for 15/s; a smaller one is quicker to exceed.
const (
	sharedRPS   = 5
	sharedBurst = 5
)

// sharedGatewayChecks: issue 21 on real pods. Debian's memcached on the
// node's address (as PostgreSQL is) is the shared tier of a 3-replica
// gateway MedOpsAPI whose upstream has a mirror and whose second upstream
// has a call budget.
func (s *suite) sharedGatewayChecks(t *testing.T) {
	var (
		mc                  string // memcached host:port
		primary, mirror, rl *upstream.Server
		pods                []realPod
	)
	// Stopped when the group ends, not when the check that started them does.
	t.Cleanup(func() {
		for _, u := range []*upstream.Server{primary, mirror, rl} {
			if u != nil {
				u.Close()
			}
		}
	})
	if !s.check(t, "memcached (Debian's) on the node's address, and three upstream stubs: genes with its mirror, and a budgeted one", func(t *testing.T) {
		bin, err := exec.LookPath("memcached")
		if err != nil {
			t.Fatalf("memcached: %v (apt-get install memcached)", err)
		}
		ports, err := cluster.FreePorts(1)
		if err != nil {
			t.Fatal(err)
		}
		mc = net.JoinHostPort(cluster.NodeIP, strconv.Itoa(ports[0]))
		if err := s.c.StartProcess("memcached", nil, bin, "-l", cluster.NodeIP, "-p", strconv.Itoa(ports[0]), "-U", "0", "-u", "nobody", "-m", "64"); err != nil {
			t.Fatal(err)
		}
		s.waitFor(t, "memcached answers", 30*time.Second, func() error {
			_, err := memcachedCommand(mc, "version\r\n", "VERSION")
			return err
		})
		for _, u := range []**upstream.Server{&primary, &mirror, &rl} {
			srv, err := upstream.Start(cluster.NodeIP + ":0")
			if err != nil {
				t.Fatal(err)
			}
			*u = srv
		}
	}) {
		return
	}
	if !s.check(t, sharedName+": kubectl apply of a 3-replica gateway with cache.shared.memcached, a mirror and a rateLimit: 3 Ready pods", func(t *testing.T) {
		manifest := fmt.Sprintf(`apiVersion: medops.io/v1alpha1
kind: MedOpsAPI
metadata:
  name: %s
spec:
  replicas: 3
  # On the amd64 node only: the budget is a matter of timing, and pi-1's
  # emulated CPU, on a busy machine, delays a reserved call's send by up to
  # seconds, which bunches calls at the upstream (22:09, 30 clients: 17 in
  # one second with two replicas on pi-1).
  architectures: [amd64]
  storage: {ephemeral: true}
  cache:
    shared:
      memcached:
        addresses: [%q]
  modules:
    gateway:
      enabled: true
      upstreams:
      - name: genes
        url: http://%s
        mirrors: [{url: "http://%s"}]
        timeout: 5s
      - name: limited
        url: http://%s
        rateLimit: {requestsPerSecond: %d, burst: %d}
`, sharedName, mc, primary.Addr(), mirror.Addr(), rl.Addr(), sharedRPS, sharedBurst)
		if err := s.applyNS(manifest); err != nil {
			t.Fatal(err)
		}
		s.waitReadyNow(t, sharedName)
		s.kt(t, "-n", ns, "rollout", "status", "deploy/"+sharedName, "--timeout="+timeoutFlag.String())
		pods = s.realPods(t, sharedName)
		if len(pods) != 3 {
			t.Fatalf("%d pods, want 3", len(pods))
		}
		nodes := map[string]int{}
		for _, p := range pods {
			nodes[p.pod.Spec.NodeName]++
		}
		t.Logf("pods per node: %v", nodes)
	}) {
		return
	}
	get := func(p realPod, path string) (int, string, error) {
		resp, err := podClient().Get(podURL(p.pod, path))
		if err != nil {
			return 0, "", err
		}
		defer resp.Body.Close()
		_, _ = io.Copy(io.Discard, resp.Body)
		return resp.StatusCode, resp.Header.Get("X-Cache"), nil
	}
	s.check(t, sharedName+": a key filled through one pod is a second-level (memcached) hit on each other pod, with one upstream call in all", func(t *testing.T) {
		calls := primary.Hits() + mirror.Hits()
		path := "/api/v1/gateway/genes/lookup/BRCA2"
		code, xc, err := get(pods[0], path)
		if err != nil || code != 200 || xc != "MISS" {
			t.Fatalf("first GET on %s: %d %q %v", pods[0].pod.Name, code, xc, err)
		}
		for _, p := range pods[1:] {
			code, xc, err := get(p, path)
			if err != nil || code != 200 || xc != "HIT-L2" {
				t.Errorf("GET on %s (%s): %d, X-Cache %q, %v; want 200 HIT-L2", p.pod.Name, p.pod.Spec.NodeName, code, xc, err)
			}
		}
		eq(t, "upstream calls for 3 pods", int64(1), primary.Hits()+mirror.Hits()-calls)
	})
	s.check(t, sharedName+": 3 pods under a load far above the budget of limited: the stub never gets more than requestsPerSecond + burst calls in any second; the rest get JSON 429s with Retry-After", func(t *testing.T) {
		since := time.Now()
		var ok, limited, other atomic.Int64
		var wg sync.WaitGroup
		stop := time.Now().Add(4 * time.Second)
		var n atomic.Int64
		for w := range 30 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				p := pods[w%len(pods)]
				for time.Now().Before(stop) {
					i := n.Add(1)
					resp, err := podClient().Get(podURL(p.pod, fmt.Sprintf("/api/v1/gateway/limited/item/%d", i)))
					if err != nil {
						other.Add(1)
						continue
					}
					_, _ = io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					switch {
					case resp.StatusCode == 200:
						ok.Add(1)
					case resp.StatusCode == 429 && resp.Header.Get("Retry-After") != "" && strings.HasPrefix(resp.Header.Get("Content-Type"), "application/json"):
						limited.Add(1)
					default:
						other.Add(1)
					}
				}
			}()
		}
		wg.Wait()
		peak := rl.MaxPerSecond(since)
		token := s.secretValue(t, sharedName+"-token", "token")
		var fallbacks float64
		for _, p := range pods {
			fallbacks += s.podMetricSum(t, p, token, "medops_gateway_budget_fallbacks_total")
		}
		s.measure(t, "shared budget %d/s + burst %d, 3 pods, 30 clients for 4 s: %d served, %d JSON 429s, %d other; the upstream's busiest second: %d calls; calls budgeted locally because memcached failed: %v", sharedRPS, sharedBurst, ok.Load(), limited.Load(), other.Load(), peak, fallbacks)
		// The cap holds whether or not memcached kept up: a replica whose
		// calls to it time out budgets on its share (ratelimit.NewShared).
		if peak > sharedRPS+sharedBurst {
			t.Errorf("the upstream got %d calls in one second, over %d + %d (%v calls budgeted locally)", peak, sharedRPS, sharedBurst, fallbacks)
		}
		if ok.Load() == 0 || limited.Load() == 0 || other.Load() != 0 {
			t.Errorf("served %d, 429 %d, other %d: want some of each of the first two, none else", ok.Load(), limited.Load(), other.Load())
		}
	})
	s.check(t, sharedName+": genes' url stopped under load: its mirror takes over, every cacheable GET through the 3 pods is served", func(t *testing.T) {
		primary.Close()
		var failed []string
		var mu sync.Mutex
		var wg sync.WaitGroup
		for w := range 6 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := range 20 {
					p := pods[(w+i)%len(pods)]
					code, _, err := get(p, fmt.Sprintf("/api/v1/gateway/genes/after-stop/%d/%d", w, i))
					if err != nil || code != 200 {
						mu.Lock()
						failed = append(failed, fmt.Sprintf("%s: %d %v", p.pod.Name, code, err))
						mu.Unlock()
					}
				}
			}()
		}
		wg.Wait()
		s.measure(t, "mirror failover: 120 GETs through 3 pods after genes' url stopped: %d failed; the mirror served %d calls in all", len(failed), mirror.Hits())
		if len(failed) > 0 {
			t.Errorf("%d of 120 failed, e.g. %s", len(failed), failed[0])
		}
	})
	s.check(t, sharedName+": an entry changed in memcached by someone without the key is refused (not served, counted), and the upstream answers instead", func(t *testing.T) {
		token := s.secretValue(t, sharedName+"-token", "token")
		// The reader is a pod on the amd64 node: under emulation pi-1's pods
		// can miss the tier's 50ms timeout and skip it for a back-off.
		filler, reader := pods[0], pods[1]
		for _, p := range pods {
			if p.pod.Spec.NodeName == s.c.NodeName {
				reader = p
			}
		}
		for _, p := range pods {
			if p.pod.Name != reader.pod.Name {
				filler = p
				break
			}
		}
		// First, the reader reads the tier: an untouched entry is a HIT-L2.
		if code, xc, err := get(filler, "/api/v1/gateway/genes/forged/warm"); err != nil || code != 200 {
			t.Fatalf("fill: %d %q %v", code, xc, err)
		}
		if code, xc, err := get(reader, "/api/v1/gateway/genes/forged/warm"); err != nil || code != 200 || xc != "HIT-L2" {
			t.Fatalf("untouched entry on %s: %d, X-Cache %q, %v; want a HIT-L2", reader.pod.Name, code, xc, err)
		}
		forged := s.podMetric(t, reader, token, "medops_memcached_forged_total")
		path := "/api/v1/gateway/genes/forged/TP53"
		if code, xc, err := get(filler, path); err != nil || code != 200 || xc != "MISS" {
			t.Fatalf("fill: %d %q %v", code, xc, err)
		}
		n, err := tamperAll(mc)
		if err != nil || n == 0 {
			t.Fatalf("tampered with %d items: %v", n, err)
		}
		before := mirror.Hits()
		code, xc, err := get(reader, path)
		if err != nil || code != 200 || xc == "HIT-L2" {
			t.Errorf("GET on %s after the tampering: %d, X-Cache %q, %v; want 200 from the upstream", reader.pod.Name, code, xc, err)
		}
		if m := s.podMetric(t, reader, token, "medops_memcached_forged_total"); m <= forged {
			t.Errorf("%s: medops_memcached_forged_total %v before, %v after; want it counted", reader.pod.Name, forged, m)
		}
		if mirror.Hits() == before {
			t.Error("the upstream was not called: the forged entry was served")
		}
	})
}

// memcachedCommand sends one text-protocol command and reads up to the
// line that starts with end.
func memcachedCommand(addr, cmd, end string) ([]string, error) {
	c, err := net.DialTimeout("tcp", addr, 3*time.Second)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(c, cmd); err != nil {
		return nil, err
	}
	var lines []string
	sc := bufio.NewScanner(c)
	sc.Buffer(make([]byte, 0, 64<<10), 4<<20)
	for sc.Scan() {
		l := sc.Text()
		if strings.HasPrefix(l, end) {
			return lines, nil
		}
		if strings.HasPrefix(l, "ERROR") || strings.HasPrefix(l, "CLIENT_ERROR") || strings.HasPrefix(l, "SERVER_ERROR") {
			return lines, fmt.Errorf("memcached: %q: %s", strings.TrimSpace(cmd), l)
		}
		lines = append(lines, l)
	}
	return lines, fmt.Errorf("memcached: %q: no %s: %v", strings.TrimSpace(cmd), end, sc.Err())
}

// tamperAll does what one who can reach memcached but has no key could:
// it changes one byte of every stored value (keeping its flags, length
// and expiry). It returns how many items it changed.
func tamperAll(addr string) (int, error) {
	dump, err := memcachedCommand(addr, "lru_crawler metadump all\r\n", "END")
	if err != nil {
		return 0, err
	}
	c, err := net.DialTimeout("tcp", addr, 3*time.Second)
	if err != nil {
		return 0, err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(30 * time.Second))
	r := bufio.NewReader(c)
	n := 0
	for _, line := range dump {
		var key string
		for _, f := range strings.Fields(line) {
			if v, ok := strings.CutPrefix(f, "key="); ok {
				key, _ = url.QueryUnescape(v)
			}
		}
		if key == "" {
			continue
		}
		if _, err := fmt.Fprintf(c, "get %s\r\n", key); err != nil {
			return n, err
		}
		head, err := r.ReadString('\n')
		if err != nil {
			return n, err
		}
		if strings.HasPrefix(head, "END") {
			continue // expired since the dump
		}
		var k string
		var flags, size int
		if _, err := fmt.Sscanf(head, "VALUE %s %d %d", &k, &flags, &size); err != nil {
			return n, fmt.Errorf("get %s: %q: %w", key, head, err)
		}
		val := make([]byte, size+2)
		if _, err := io.ReadFull(r, val); err != nil {
			return n, err
		}
		if end, err := r.ReadString('\n'); err != nil || !strings.HasPrefix(end, "END") {
			return n, fmt.Errorf("get %s: no END: %q %v", key, end, err)
		}
		val = val[:size]
		if size < 2 {
			continue
		}
		val[size/2] ^= 0x01
		if _, err := fmt.Fprintf(c, "set %s %d 300 %d\r\n%s\r\n", key, flags, size, val); err != nil {
			return n, err
		}
		if l, err := r.ReadString('\n'); err != nil || !strings.HasPrefix(l, "STORED") {
			return n, fmt.Errorf("set %s: %q %v", key, l, err)
		}
		n++
	}
	return n, nil
}

// podMetric reads one unlabelled sample from a pod's /metrics.
func (s *suite) podMetric(t *testing.T, p realPod, token, name string) float64 {
	t.Helper()
	v, found := s.scrape(t, p, token, name)
	if !found {
		t.Fatalf("%s: no %s in /metrics", p.pod.Name, name)
	}
	return v
}

// podMetricSum adds up every sample of a metric, whatever its labels; a
// vector nothing has been counted in yet has none, which is 0.
func (s *suite) podMetricSum(t *testing.T, p realPod, token, name string) float64 {
	t.Helper()
	v, _ := s.scrape(t, p, token, name)
	return v
}

// scrape sums the samples of name in a pod's /metrics.
func (s *suite) scrape(t *testing.T, p realPod, token, name string) (float64, bool) {
	t.Helper()
	req, err := http.NewRequestWithContext(s.ctx, http.MethodGet, podURL(p.pod, "/metrics"), nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := podClient().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("%s /metrics: %s", p.pod.Name, resp.Status)
	}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	sum, found := 0.0, false
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) == 2 && (f[0] == name || strings.HasPrefix(f[0], name+"{")) {
			v, _ := strconv.ParseFloat(f[1], 64)
			sum, found = sum+v, true
		}
	}
	return sum, found
}
