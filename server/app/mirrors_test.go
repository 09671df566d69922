package app

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/medops/medops/api/v1alpha1"
)

// mirrorStub is one upstream endpoint on loopback; calls counts what
// reached it, and each call is announced on hit (without blocking).
type mirrorStub struct {
	srv   *httptest.Server
	calls atomic.Int64
	hit   chan struct{}
}

func newMirrorStub(t *testing.T, name string) *mirrorStub {
	s := &mirrorStub{hit: make(chan struct{}, 1)}
	s.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.calls.Add(1)
		select {
		case s.hit <- struct{}{}:
		default:
		}
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintf(w, `{"from":%q,"path":%q}`, name, r.URL.Path)
	}))
	t.Cleanup(s.srv.Close)
	return s
}

// waitCalls waits until s has seen at least n calls, on its announcements.
func (s *mirrorStub) waitCalls(t *testing.T, n int64, failed *atomic.Int64) {
	t.Helper()
	for s.calls.Load() < n {
		<-s.hit
		if failed.Load() > 0 {
			t.Fatalf("%d client requests failed", failed.Load())
		}
	}
}

// TestMirrorFailoverUnderLoad runs the real app on a real listener with an
// upstream on three local servers in two regions, and a replica in
// eu-west. Under a concurrent load of cacheable GETs (each a new key, so
// each reaches an upstream) one eu-west server is stopped: no client
// request fails, the other eu-west server takes the load, and the server
// in us-east, the other region, is never needed.
func TestMirrorFailoverUnderLoad(t *testing.T) {
	us := newMirrorStub(t, "us")
	eu1 := newMirrorStub(t, "eu1")
	eu2 := newMirrorStub(t, "eu2")

	e := newTestEnvOptions(t, nil, func(cfg *v1alpha1.WorkloadConfig) {
		on := true
		cfg.Modules.Gateway.Enabled = &on
		cfg.Modules.Gateway.Upstreams = []v1alpha1.Upstream{{Name: "ensembl", URL: us.srv.URL + "/rest", Region: "us-east",
			Mirrors: []v1alpha1.Mirror{{URL: eu1.srv.URL + "/rest", Region: "eu-west"}, {URL: eu2.srv.URL + "/rest", Region: "eu-west"}}}}
		cfg.Modules.SetDefaults()
	}, func(o *Options) { o.Region = "eu-west" })
	a, srv := e.app, e.srv

	stop := make(chan struct{})
	var wg sync.WaitGroup
	var served, failed atomic.Int64
	var firstFailure atomic.Value
	for g := range 12 {
		wg.Go(func() {
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				path := fmt.Sprintf("/api/v1/gateway/ensembl/lookup/g%d-%d", g, i)
				resp, err := srv.Client().Get(srv.URL + path)
				if err != nil {
					failed.Add(1)
					firstFailure.CompareAndSwap(nil, err.Error())
					continue
				}
				body, err := io.ReadAll(resp.Body)
				resp.Body.Close()
				var b struct{ From, Path string }
				if err != nil || resp.StatusCode != 200 || json.Unmarshal(body, &b) != nil || b.Path != "/rest/lookup/"+path[len("/api/v1/gateway/ensembl/lookup/"):] {
					failed.Add(1)
					firstFailure.CompareAndSwap(nil, fmt.Sprintf("%d %s", resp.StatusCode, body))
					continue
				}
				served.Add(1)
			}
		})
	}
	defer func() {
		select {
		case <-stop:
		default:
			close(stop)
		}
		wg.Wait()
	}()

	// Both eu-west servers have been measured and one is carrying the
	// load: stop the busier one.
	eu1.waitCalls(t, 1, &failed)
	eu2.waitCalls(t, 1, &failed)
	victim, other := eu1, eu2
	for victim.calls.Load() < 20 && other.calls.Load() < 20 {
		select {
		case <-eu1.hit:
		case <-eu2.hit:
		}
	}
	if other.calls.Load() > victim.calls.Load() {
		victim, other = other, victim
	}
	victim.srv.CloseClientConnections()
	victim.srv.Close()
	before := other.calls.Load()
	// The survivor takes the load, through at least one probe of the
	// stopped server when its first back-off (1s) runs out: the second
	// ejection is that probe failing.
	other.waitCalls(t, before+200, &failed)
	for ejections(t, a, victim.srv.URL+"/rest") < 2 {
		<-other.hit
		if failed.Load() > 0 {
			break
		}
	}
	ix := getIndexUpstreams(t, srv)
	close(stop)
	wg.Wait()

	if n := failed.Load(); n != 0 {
		t.Fatalf("%d of %d client requests failed; first: %v", n, n+served.Load(), firstFailure.Load())
	}
	if us.calls.Load() != 0 {
		t.Errorf("the us-east server got %d calls while an eu-west one was healthy", us.calls.Load())
	}
	var victimState string
	for _, m := range ix[0].Mirrors {
		if m.URL == victim.srv.URL+"/rest" {
			victimState = m.State
		}
	}
	if victimState != "ejected" && victimState != "probing" {
		t.Errorf("the stopped server is %q in the index: %+v", victimState, ix)
	}
	t.Logf("%d requests served, 0 failed; calls: us %d, eu1 %d, eu2 %d; ejections of the stopped one %v", served.Load(), us.calls.Load(), eu1.calls.Load(), eu2.calls.Load(), ejections(t, a, victim.srv.URL+"/rest"))
}

// ejections reads medops_gateway_mirror_ejections_total of one endpoint.
func ejections(t *testing.T, a *App, mirror string) float64 {
	t.Helper()
	mfs, err := a.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "medops_gateway_mirror_ejections_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "mirror" && l.GetValue() == mirror {
					return m.GetCounter().GetValue()
				}
			}
		}
	}
	return 0
}

type indexUpstream struct {
	Name    string `json:"name"`
	Mirrors []struct {
		URL, Region, State string
		EWMA               float64 `json:"ewmaMs"`
	} `json:"mirrors"`
}

func getIndexUpstreams(t *testing.T, srv *httptest.Server) []indexUpstream {
	t.Helper()
	resp, err := srv.Client().Get(srv.URL + "/")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var ix struct {
		Upstreams []indexUpstream `json:"upstreams"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&ix); err != nil || len(ix.Upstreams) != 1 || len(ix.Upstreams[0].Mirrors) != 3 {
		t.Fatalf("index upstreams: %+v, %v", ix.Upstreams, err)
	}
	if !strings.HasSuffix(ix.Upstreams[0].Mirrors[0].URL, "/rest") || ix.Upstreams[0].Mirrors[0].Region != "us-east" {
		t.Fatalf("index: the url comes first with its region: %+v", ix.Upstreams[0])
	}
	return ix.Upstreams
}
