package cluster

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"sync"
	"time"

	"golang.org/x/net/dns/dnsmessage"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
)

// ClusterDomain is the cluster's DNS domain, as k3s and kubeadm set it.
const ClusterDomain = "cluster.local"

// dnsTTL is short: a Service recreated by a check gets a new ClusterIP.
const dnsTTL = 5

// serviceIPs answers which ClusterIP a Service has; ok is false when the
// Service does not exist (or is headless).
type serviceIPs func(ctx context.Context, namespace, name string) (ip netip.Addr, ok bool, err error)

// dnsServer stands in for the CoreDNS of a k3s cluster, for what pods here
// ask of it: <service>.<namespace>.svc.cluster.local resolves to the
// Service's ClusterIP. Other names in the cluster domain do not exist;
// names outside it are refused, because pod traffic never leaves this
// machine, so there is nothing to forward to.
type dnsServer struct {
	conn   net.PacketConn
	lookup serviceIPs
	log    *slog.Logger
	wg     sync.WaitGroup
}

// startDNS serves the cluster's DNS on the node address, port 53, where
// the kubelets' clusterDNS sends the pods of both nodes.
func (c *Cluster) startDNS(ctx context.Context) error {
	cfg, err := clientcmd.BuildConfigFromFlags("", c.Kubeconfig)
	if err != nil {
		return fmt.Errorf("dns: kubeconfig: %w", err)
	}
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return fmt.Errorf("dns: client: %w", err)
	}
	d, err := serveDNS(net.JoinHostPort(NodeIP, "53"), apiServiceIPs(cs), c.log)
	if err != nil {
		return err
	}
	c.dns = d
	return nil
}

// apiServiceIPs reads Services from the apiserver at each question: the
// suite asks few, and an answer is then never stale.
func apiServiceIPs(cs kubernetes.Interface) serviceIPs {
	return func(ctx context.Context, namespace, name string) (netip.Addr, bool, error) {
		svc, err := cs.CoreV1().Services(namespace).Get(ctx, name, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			return netip.Addr{}, false, nil
		}
		if err != nil {
			return netip.Addr{}, false, err
		}
		ip, err := netip.ParseAddr(svc.Spec.ClusterIP)
		if err != nil { // "None": headless, which no check uses
			return netip.Addr{}, false, nil
		}
		return ip, true, nil
	}
}

func serveDNS(addr string, lookup serviceIPs, log *slog.Logger) (*dnsServer, error) {
	conn, err := net.ListenPacket("udp", addr)
	if err != nil {
		return nil, fmt.Errorf("dns: listen %s: %w", addr, err)
	}
	d := &dnsServer{conn: conn, lookup: lookup, log: log}
	d.wg.Add(1)
	go d.serve()
	return d, nil
}

// Addr is where the server listens.
func (d *dnsServer) Addr() string { return d.conn.LocalAddr().String() }

// Close stops the server and waits for its loop.
func (d *dnsServer) Close() error {
	err := d.conn.Close()
	d.wg.Wait()
	return err
}

func (d *dnsServer) serve() {
	defer d.wg.Done()
	buf := make([]byte, 1500)
	for {
		n, from, err := d.conn.ReadFrom(buf)
		if err != nil {
			if !errors.Is(err, net.ErrClosed) {
				d.log.Warn("dns: read", "err", err)
			}
			return
		}
		out, err := d.answer(buf[:n])
		if err != nil {
			d.log.Warn("dns: bad question", "from", from, "err", err)
			continue
		}
		if _, err := d.conn.WriteTo(out, from); err != nil {
			d.log.Warn("dns: write", "to", from, "err", err)
		}
	}
}

// answer builds the reply to one query message.
func (d *dnsServer) answer(query []byte) ([]byte, error) {
	var p dnsmessage.Parser
	h, err := p.Start(query)
	if err != nil {
		return nil, err
	}
	q, err := p.Question()
	if err != nil {
		return nil, err
	}
	rh := dnsmessage.Header{ID: h.ID, Response: true, OpCode: h.OpCode, RecursionDesired: h.RecursionDesired}
	var ip netip.Addr
	rh.RCode, ip = d.resolve(q)
	rh.Authoritative = rh.RCode != dnsmessage.RCodeRefused
	b := dnsmessage.NewBuilder(make([]byte, 0, 512), rh)
	b.EnableCompression()
	if err := b.StartQuestions(); err != nil {
		return nil, err
	}
	if err := b.Question(q); err != nil {
		return nil, err
	}
	if err := b.StartAnswers(); err != nil {
		return nil, err
	}
	if ip.IsValid() {
		rr := dnsmessage.ResourceHeader{Name: q.Name, Type: dnsmessage.TypeA, Class: dnsmessage.ClassINET, TTL: dnsTTL}
		if err := b.AResource(rr, dnsmessage.AResource{A: ip.As4()}); err != nil {
			return nil, err
		}
	}
	return b.Finish()
}

// resolve maps a question to a reply code and, for an A question about an
// existing Service, its address.
func (d *dnsServer) resolve(q dnsmessage.Question) (dnsmessage.RCode, netip.Addr) {
	name := strings.ToLower(strings.TrimSuffix(q.Name.String(), "."))
	if q.Class != dnsmessage.ClassINET {
		return dnsmessage.RCodeRefused, netip.Addr{}
	}
	if name != ClusterDomain && !strings.HasSuffix(name, "."+ClusterDomain) {
		return dnsmessage.RCodeRefused, netip.Addr{}
	}
	labels := strings.Split(strings.TrimSuffix(name, "."+ClusterDomain), ".")
	if len(labels) != 3 || labels[2] != "svc" {
		return dnsmessage.RCodeNameError, netip.Addr{}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	ip, ok, err := d.lookup(ctx, labels[1], labels[0])
	switch {
	case err != nil:
		d.log.Warn("dns: service lookup", "name", name, "err", err)
		return dnsmessage.RCodeServerFailure, netip.Addr{}
	case !ok:
		return dnsmessage.RCodeNameError, netip.Addr{}
	case q.Type == dnsmessage.TypeA && ip.Is4():
		return dnsmessage.RCodeSuccess, ip
	default: // the name exists, with no record of that type (AAAA here)
		return dnsmessage.RCodeSuccess, netip.Addr{}
	}
}
