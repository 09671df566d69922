package cluster

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"testing"
	"time"
)

// TestDNSAnswersAsCoreDNSWould asks the stand-in through Go's own resolver,
// as a pod's medops-api does, with a pod's search path.
func TestDNSAnswersAsCoreDNSWould(t *testing.T) {
	services := map[string]string{"medops-demo/medops-backed-up": "10.252.0.17"}
	lookup := func(_ context.Context, ns, name string) (netip.Addr, bool, error) {
		if name == "broken" {
			return netip.Addr{}, false, errors.New("apiserver down")
		}
		ip, ok := services[ns+"/"+name]
		if !ok {
			return netip.Addr{}, false, nil
		}
		return netip.MustParseAddr(ip), true, nil
	}
	d, err := serveDNS("127.0.0.1:0", lookup, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	r := &net.Resolver{PreferGo: true, Dial: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var dl net.Dialer
		return dl.DialContext(ctx, "udp", d.Addr())
	}}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, tc := range []struct {
		name    string
		want    []string
		wantErr bool
	}{
		{"medops-backed-up.medops-demo.svc.cluster.local.", []string{"10.252.0.17"}, false},
		{"MEDOPS-BACKED-UP.medops-demo.svc.cluster.local.", []string{"10.252.0.17"}, false},
		{"other.medops-demo.svc.cluster.local.", nil, true},
		{"medops-backed-up.other.svc.cluster.local.", nil, true},
		{"pod.medops-demo.pod.cluster.local.", nil, true},
		{"broken.medops-demo.svc.cluster.local.", nil, true},
		{"example.org.", nil, true}, // refused: nothing is forwarded
	} {
		got, err := r.LookupHost(ctx, tc.name)
		if (err != nil) != tc.wantErr || !slices.Equal(got, tc.want) {
			t.Errorf("LookupHost(%s) = %v, %v; want %v, error %v", tc.name, got, err, tc.want, tc.wantErr)
		}
	}
	var dnsErr *net.DNSError
	if _, err := r.LookupHost(ctx, "other.medops-demo.svc.cluster.local."); !errors.As(err, &dnsErr) || !dnsErr.IsNotFound {
		t.Errorf("a missing Service: %v, want not found (NXDOMAIN), so the next search domain is tried", err)
	}
}
