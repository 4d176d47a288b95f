package redistest

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// ClusterMasters is how many masters a Cluster has.
const ClusterMasters = 3

// MaxReplicas bounds WithReplicas.
const MaxReplicas = 2

// clusterSlots is the number of hash slots of every Redis Cluster.
const clusterSlots = 16384

const (
	// clusterNodeTimeout is the nodes' cluster-node-timeout, in
	// milliseconds: how long a node may be unreachable before it is failed
	// (and its replica promoted). Small, so fault tests are quick.
	clusterNodeTimeout = 1000
	// clusterCreateTimeout bounds redis-cli --cluster create.
	clusterCreateTimeout = 30 * time.Second
	// clusterReadyTimeout bounds the wait for every node to report the
	// cluster healthy after it was created.
	clusterReadyTimeout = 15 * time.Second
)

// Cluster is a Redis Cluster of ClusterMasters masters, and with
// WithReplicas that many replicas for each, every node a redis-server child
// process on its own free loopback port (and cluster bus port) with its own
// directory. It is created with redis-cli --cluster create; before
// StartCluster returns, every node reports cluster_state:ok with all 16384
// slots assigned and knows every other, and every replica is in sync. That
// takes some two seconds, most of it the wait every new master keeps before
// it reports the cluster ok.
type Cluster struct {
	dir   string
	nodes []*node
}

var _ Deployment = (*Cluster)(nil)

// WithReplicas gives each master of a Cluster n replicas (0, the default, to
// MaxReplicas): WithReplicas(1) makes a cluster of six nodes. Only
// StartCluster and NewCluster read it.
func WithReplicas(n int) Option { return func(o *options) { o.replicas = n } }

// StartCluster starts a Cluster and closes it when the test ends. It reads
// WithReplicas and WithAOF. The test fails if the cluster does not come up;
// the message quotes the nodes' logs.
func StartCluster(t testing.TB, opts ...Option) *Cluster {
	t.Helper()
	c, err := NewCluster(opts...)
	if err != nil {
		t.Fatalf("redistest: %v", err)
	}
	t.Cleanup(c.Close)
	return c
}

// NewCluster starts a Cluster. Callers must Close it.
func NewCluster(opts ...Option) (*Cluster, error) {
	o := collect(opts)
	if o.replicas < 0 || o.replicas > MaxReplicas {
		return nil, fmt.Errorf("cluster: WithReplicas(%d): want 0 to %d replicas per master", o.replicas, MaxReplicas)
	}
	cli, err := exec.LookPath("redis-cli")
	if err != nil {
		return nil, fmt.Errorf("cluster: redis-cli not found on PATH (apt-get install redis-tools): %w", err)
	}
	for attempt := 1; ; attempt++ {
		c, err := bootCluster(cli, o)
		if err == nil {
			return c, nil
		}
		if !errors.Is(err, errPortTaken) || attempt == portAttempts {
			return nil, fmt.Errorf("cluster: %w", err)
		}
	}
}

func bootCluster(cli string, o options) (_ *Cluster, err error) {
	total := ClusterMasters * (1 + o.replicas)
	dir, err := os.MkdirTemp("", "verifyq-redis-cluster-*")
	if err != nil {
		return nil, err
	}
	c := &Cluster{dir: dir}
	defer func() {
		if err != nil {
			c.Close()
		}
	}()
	ports, err := freePorts(2 * total) // a client port and a cluster bus port each
	if err != nil {
		return nil, err
	}
	for i := range total {
		n := &node{role: "cluster node", port: ports[2*i], dir: filepath.Join(dir, strconv.Itoa(ports[2*i]))}
		if err := os.Mkdir(n.dir, 0o700); err != nil {
			return nil, err
		}
		n.args = append(dataArgs(n, o.aof),
			"--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
			"--cluster-node-timeout", strconv.Itoa(clusterNodeTimeout),
			"--cluster-port", strconv.Itoa(ports[2*i+1]))
		c.nodes = append(c.nodes, n)
	}
	for _, n := range c.nodes {
		if err := n.start(); err != nil {
			return nil, err
		}
	}

	args := append(c.Addrs(), "--cluster-replicas", strconv.Itoa(o.replicas), "--cluster-yes")
	ctx, cancel := context.WithTimeout(context.Background(), clusterCreateTimeout)
	defer cancel()
	create := exec.CommandContext(ctx, cli, append([]string{"--cluster", "create"}, args...)...) //nolint:gosec // G204: cli is redis-cli from PATH, the arguments are the nodes started here
	if out, err := create.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("redis-cli --cluster create: %w\n%s\n%s", err, out, logTails(c.nodes))
	}
	if err := c.WaitHealthy(clusterReadyTimeout); err != nil {
		return nil, err
	}
	return c, nil
}

// Addrs is host:port of every node, masters and replicas, in the order the
// cluster was created: the seed addresses of a cluster client.
func (c *Cluster) Addrs() []string {
	addrs := make([]string, 0, len(c.nodes))
	for _, n := range c.nodes {
		addrs = append(addrs, n.addr())
	}
	return addrs
}

// URL is the cluster URL of go-redis's ParseClusterURL: the first node in
// the host, the others as addr parameters,
// redis://127.0.0.1:P1?addr=127.0.0.1:P2&addr=127.0.0.1:P3.
func (c *Cluster) URL() string {
	addrs := c.Addrs()
	q := url.Values{"addr": addrs[1:]}
	return (&url.URL{Scheme: "redis", Host: addrs[0], RawQuery: q.Encode()}).String()
}

// Mode is ModeCluster.
func (c *Cluster) Mode() string { return ModeCluster }

// Client returns a go-redis cluster client seeded with every node, closed
// when the test ends. Its options are go-redis's defaults, so it reloads its
// slot map on a MOVED reply but not when a master stops answering: after
// Kill of a master, commands for its slots fail until ReloadState is called
// or ClusterStateReloadInterval (60 s by default) has passed.
func (c *Cluster) Client(t testing.TB) *redis.ClusterClient {
	t.Helper()
	cc := redis.NewClusterClient(&redis.ClusterOptions{Addrs: c.Addrs()})
	t.Cleanup(func() { _ = cc.Close() })
	return cc
}

// UniversalClient is Client as a redis.UniversalClient.
func (c *Cluster) UniversalClient(t testing.TB) redis.UniversalClient {
	t.Helper()
	return c.Client(t)
}

// Masters asks every running node which nodes are masters now, holding
// slots and not failed, and returns their addresses, sorted, when all of
// them agree; else an error names two that do not (WaitHealthy waits until
// they do). After a failover the promoted replica is among them and the
// master it replaced is not.
func (c *Cluster) Masters() ([]string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), checkTimeout)
	defer cancel()
	var masters []string
	from := ""
	for _, n := range c.nodes {
		if !n.running() {
			continue
		}
		lines, err := clusterNodes(ctx, n.addr())
		if err != nil {
			return nil, fmt.Errorf("cluster: %w", err)
		}
		var seen []string
		for _, l := range lines {
			if l.has("master") && len(l.slots) > 0 && !l.has("fail") {
				seen = append(seen, l.addr)
			}
		}
		slices.Sort(seen)
		if from == "" {
			masters, from = seen, n.addr()
		} else if !slices.Equal(masters, seen) {
			return nil, fmt.Errorf("cluster: the nodes disagree on the masters: %s sees %v, %s sees %v", from, masters, n.addr(), seen)
		}
	}
	if from == "" {
		return nil, errors.New("cluster: no node is running")
	}
	return masters, nil
}

// FlushAll empties every master (FLUSHALL), so that tests sharing one
// cluster start from no keys. The replicas follow their masters.
func (c *Cluster) FlushAll(ctx context.Context) error {
	masters, err := c.Masters()
	if err != nil {
		return err
	}
	for _, addr := range masters {
		p := probe(addr)
		err := p.FlushAll(ctx).Err()
		_ = p.Close()
		if err != nil {
			return fmt.Errorf("cluster: FLUSHALL on %s: %w", addr, err)
		}
	}
	return nil
}

// Kill ends the node at addr with SIGKILL, as a crash would. The others
// mark it failed after the node timeout (about a second); a replica of a
// killed master is then promoted, and without one the cluster reports
// cluster_state:fail until Restart.
func (c *Cluster) Kill(addr string) error {
	n, err := c.node(addr)
	if err != nil {
		return err
	}
	n.kill()
	return nil
}

// Restart starts the node at addr again on its port, with its directory
// and so its nodes.conf: it rejoins the cluster (a master that was failed
// over comes back as a replica of the master that replaced it). WaitHealthy
// waits for the cluster to settle.
func (c *Cluster) Restart(addr string) error {
	n, err := c.node(addr)
	if err != nil {
		return err
	}
	if err := n.start(); err != nil {
		return fmt.Errorf("cluster: %w", err)
	}
	return nil
}

func (c *Cluster) node(addr string) (*node, error) {
	for _, n := range c.nodes {
		if n.addr() == addr {
			return n, nil
		}
	}
	return nil, fmt.Errorf("cluster: no node at %q (have %s)", addr, strings.Join(c.Addrs(), ", "))
}

// WaitHealthy waits up to timeout until every running node reports
// cluster_state:ok with all 16384 slots assigned and sees every other
// running node connected and not failed, every killed node failed, and
// every running replica is in sync with its master; and until the running
// nodes agree on the topology: each sees the same role, master and slots
// for every running node. (Each node learns of a failover, or of a node
// that rejoined, in its own time: one node's CLUSTER NODES may say a
// replica was promoted while another's still says it was not.) The error
// says what was last missing and quotes the nodes' logs.
func (c *Cluster) WaitHealthy(timeout time.Duration) error {
	return waitFor(timeout, "cluster healthy", c.healthy, func() string { return logTails(c.nodes) })
}

func (c *Cluster) healthy(ctx context.Context) error {
	var up []string
	for _, n := range c.nodes {
		if n.running() {
			up = append(up, n.addr())
		}
	}
	var first, firstView string
	for _, addr := range up {
		p := probe(addr)
		view, err := nodeHealthy(ctx, p, addr, up)
		_ = p.Close()
		if err != nil {
			return fmt.Errorf("node %s: %w", addr, err)
		}
		if first == "" {
			first, firstView = addr, view
		} else if view != firstView {
			return fmt.Errorf("nodes %s and %s disagree: %s sees %s; %s sees %s", first, addr, first, firstView, addr, view)
		}
	}
	return nil
}

// nodeHealthy checks the node at addr, one of the running nodes up, and
// returns its view of the running nodes' topology, to compare with the
// others' views.
func nodeHealthy(ctx context.Context, p *redis.Client, addr string, up []string) (string, error) {
	info, err := p.ClusterInfo(ctx).Result()
	if err != nil {
		return "", err
	}
	fields := infoFields(info)
	if fields["cluster_state"] != "ok" {
		return "", fmt.Errorf("cluster_state:%s", fields["cluster_state"])
	}
	if got := fields["cluster_slots_assigned"]; got != strconv.Itoa(clusterSlots) {
		return "", fmt.Errorf("cluster_slots_assigned:%s, want %d", got, clusterSlots)
	}
	lines, err := clusterNodes(ctx, addr)
	if err != nil {
		return "", err
	}
	addrOf := map[string]string{}
	for _, l := range lines {
		addrOf[l.id] = l.addr
	}
	seen := map[string]bool{}
	var view []string
	for _, l := range lines {
		if !slices.Contains(up, l.addr) {
			// A killed node: failed by agreement of the masters (fail),
			// not only suspected by this one (fail?).
			if !l.has("fail") {
				return "", fmt.Errorf("sees the stopped %s as %s, not fail", l.addr, strings.Join(l.flags, ","))
			}
			continue
		}
		if l.failed() || l.has("handshake") || l.has("noaddr") || l.link != "connected" {
			return "", fmt.Errorf("sees %s as %s, link %s", l.addr, strings.Join(l.flags, ","), l.link)
		}
		seen[l.addr] = true
		switch {
		case l.has("master"):
			view = append(view, fmt.Sprintf("%s master %s", l.addr, strings.Join(l.slots, " ")))
		case l.has("slave"):
			view = append(view, fmt.Sprintf("%s replica of %s", l.addr, addrOf[l.master]))
		default:
			return "", fmt.Errorf("sees %s as %s, neither master nor replica", l.addr, strings.Join(l.flags, ","))
		}
		if l.has("myself") && l.has("slave") {
			repl, err := p.Info(ctx, "replication").Result()
			if err != nil {
				return "", err
			}
			if f := infoFields(repl); f["master_link_status"] != "up" || f["master_sync_in_progress"] != "0" {
				return "", fmt.Errorf("replica not in sync: master_link_status:%s master_sync_in_progress:%s",
					f["master_link_status"], f["master_sync_in_progress"])
			}
		}
	}
	for _, a := range up {
		if !seen[a] {
			return "", fmt.Errorf("does not know %s yet", a)
		}
	}
	slices.Sort(view)
	return "[" + strings.Join(view, "; ") + "]", nil
}

// Close kills every node and removes the cluster's directory.
func (c *Cluster) Close() {
	for _, n := range c.nodes {
		n.kill()
	}
	_ = os.RemoveAll(c.dir)
}

// pids is the process id of every running node.
func (c *Cluster) pids() []int { return pidsOf(c.nodes) }

// clusterNode is one line of CLUSTER NODES.
type clusterNode struct {
	id     string   // the node's ID
	addr   string   // ip:port, without the bus port
	flags  []string // myself, master, slave, fail?, fail, handshake, noaddr ...
	master string   // a replica's master's ID; "-" for a master
	link   string   // connected or disconnected
	slots  []string // a master's slots and ranges (0-5460), as listed
}

func (l clusterNode) has(flag string) bool { return slices.Contains(l.flags, flag) }

func (l clusterNode) failed() bool { return l.has("fail") || l.has("fail?") }

// clusterNodes asks the node at addr for CLUSTER NODES and parses it.
func clusterNodes(ctx context.Context, addr string) ([]clusterNode, error) {
	p := probe(addr)
	defer func() { _ = p.Close() }()
	out, err := p.ClusterNodes(ctx).Result()
	if err != nil {
		return nil, err
	}
	var nodes []clusterNode
	for line := range strings.SplitSeq(strings.TrimSpace(out), "\n") {
		// <id> <ip:port@cport[,hostname]> <flags> <master> <ping-sent> <pong-recv> <epoch> <link-state> <slot>...
		f := strings.Fields(line)
		if len(f) < 8 {
			return nil, fmt.Errorf("CLUSTER NODES of %s: short line %q", addr, line)
		}
		a, _, _ := strings.Cut(f[1], "@")
		nodes = append(nodes, clusterNode{id: f[0], addr: a, flags: strings.Split(f[2], ","), master: f[3], link: f[7], slots: f[8:]})
	}
	return nodes, nil
}

// infoFields parses the field:value lines of INFO and CLUSTER INFO.
func infoFields(info string) map[string]string {
	m := map[string]string{}
	for line := range strings.SplitSeq(info, "\n") {
		if k, v, ok := strings.Cut(strings.TrimSpace(line), ":"); ok {
			m[k] = v
		}
	}
	return m
}
