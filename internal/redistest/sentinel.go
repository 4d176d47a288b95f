package redistest

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// SentinelMasterName is the name under which the sentinels of a Sentinel
// monitor its primary: the master_name of its URL.
const SentinelMasterName = "verifyq"

// SentinelCount is how many sentinels a Sentinel runs; two of them (the
// quorum) must agree that the primary is down before a failover.
const SentinelCount = 3

const (
	sentinelQuorum = 2
	// sentinelDownAfter is the sentinels' down-after-milliseconds unless
	// WithDownAfter says otherwise: how long the primary may be silent
	// before it counts as down. Small, so failover tests are quick.
	sentinelDownAfter = time.Second
	// sentinelFailoverTimeout is the sentinels' failover-timeout in
	// milliseconds; a failover attempt that lost its leader election is
	// retried after twice this.
	sentinelFailoverTimeout = 2000
	// sentinelReadyTimeout bounds the wait for a deployment to be healthy
	// (see WaitHealthy) after its start.
	sentinelReadyTimeout = 20 * time.Second
)

// Sentinel is a Redis Sentinel deployment: a primary, one replica of it and
// SentinelCount sentinels (redis-server --sentinel) monitoring the primary
// as SentinelMasterName, every process on its own free loopback port with
// its own directory. Before StartSentinel returns the replica is in sync and
// every sentinel names the primary, sees the replica up and knows the other
// sentinels (its links to them may take up to a second more, less than a
// primary must be silent before anything is decided). That takes well under
// a second.
type Sentinel struct {
	dir       string
	data      []*node // the nodes that hold data: first the primary, then the replica, as started
	sentinels []*node
	aof       bool // WithAOF, for Restart
	// link fronts the first primary (linked) with WithReplicationDelay:
	// everyone knows that primary by the link's address.
	link   *link
	linked *node

	mu     sync.Mutex
	killed string // the primary KillPrimary killed last
}

var _ Deployment = (*Sentinel)(nil)

// StartSentinel starts a Sentinel deployment and closes it when the test
// ends. It reads WithAOF (for the primary and the replica),
// WithReplicationDelay and WithDownAfter. The test fails if the deployment
// does not come up; the message quotes the logs.
func StartSentinel(t testing.TB, opts ...Option) *Sentinel {
	t.Helper()
	s, err := NewSentinel(opts...)
	if err != nil {
		t.Fatalf("redistest: %v", err)
	}
	t.Cleanup(s.Close)
	return s
}

// NewSentinel starts a Sentinel deployment. Callers must Close it.
func NewSentinel(opts ...Option) (*Sentinel, error) {
	o := collect(opts)
	for attempt := 1; ; attempt++ {
		s, err := bootSentinel(o)
		if err == nil {
			return s, nil
		}
		if !errors.Is(err, errPortTaken) || attempt == portAttempts {
			return nil, fmt.Errorf("sentinel: %w", err)
		}
	}
}

func bootSentinel(o options) (_ *Sentinel, err error) {
	dir, err := os.MkdirTemp("", "verifyq-redis-sentinel-*")
	if err != nil {
		return nil, err
	}
	s := &Sentinel{dir: dir, aof: o.aof}
	defer func() {
		if err != nil {
			s.Close()
		}
	}()
	ports, err := freePorts(3 + SentinelCount)
	if err != nil {
		return nil, err
	}
	linkPort := ports[len(ports)-1]
	ports = ports[:len(ports)-1]
	mkdir := func(role string, port int) (*node, error) {
		n := &node{role: role, port: port, dir: filepath.Join(dir, strconv.Itoa(port))}
		return n, os.Mkdir(n.dir, 0o700)
	}
	primary, err := mkdir("data node", ports[0])
	if err != nil {
		return nil, err
	}
	primary.args = dataArgs(primary, o.aof)
	replica, err := mkdir("data node", ports[1])
	if err != nil {
		return nil, err
	}
	// The primary as everyone knows it: itself, or its link.
	known := primary.port
	if o.delay > 0 {
		if s.link, err = newLink(linkPort, primary.addr(), o.delay); err != nil {
			return nil, err
		}
		s.linked, known = primary, linkPort
	}
	replica.args = append(dataArgs(replica, o.aof), "--replicaof", "127.0.0.1", strconv.Itoa(known))
	s.data = []*node{primary, replica}
	downAfter := cmp.Or(o.downAfter, sentinelDownAfter)
	for _, p := range ports[2:] {
		n, err := mkdir("sentinel", p)
		if err != nil {
			return nil, err
		}
		s.sentinels = append(s.sentinels, n)
	}
	for _, n := range s.sentinels {
		conf := filepath.Join(n.dir, "sentinel.conf")
		// Sentinel rewrites its configuration file, so each has its own.
		if err := os.WriteFile(conf, []byte(sentinelConf(n, known, replica, s.sentinels, downAfter)), 0o600); err != nil {
			return nil, err
		}
		n.args = []string{conf, "--sentinel"}
	}
	for _, n := range append(slices.Clone(s.data), s.sentinels...) {
		if err := n.start(); err != nil {
			return nil, err
		}
	}
	if err := s.WaitHealthy(sentinelReadyTimeout); err != nil {
		return nil, err
	}
	return s, nil
}

// sentinelConf is the configuration file of the sentinel n monitoring the
// primary on port primary, counting it down after downAfter. It names the
// replica and the other sentinels as known already, as a sentinel's own
// rewritten file would, so that the sentinels need not wait for the
// primary's INFO (every ten seconds) and each other's hello messages
// (every two) to find them.
func sentinelConf(n *node, primary int, replica *node, sentinels []*node, downAfter time.Duration) string {
	lines := []string{
		"port " + strconv.Itoa(n.port),
		"bind 127.0.0.1",
		"daemonize no",
		"dir " + n.dir,
		"logfile " + n.logPath(),
		"loglevel notice",
		"sentinel myid " + sentinelID(n),
		"sentinel resolve-hostnames no",
		"sentinel announce-hostnames no",
		fmt.Sprintf("sentinel monitor %s 127.0.0.1 %d %d", SentinelMasterName, primary, sentinelQuorum),
		fmt.Sprintf("sentinel down-after-milliseconds %s %d", SentinelMasterName, downAfter.Milliseconds()),
		fmt.Sprintf("sentinel failover-timeout %s %d", SentinelMasterName, sentinelFailoverTimeout),
		fmt.Sprintf("sentinel parallel-syncs %s 1", SentinelMasterName),
		fmt.Sprintf("sentinel known-replica %s 127.0.0.1 %d", SentinelMasterName, replica.port),
	}
	for _, o := range sentinels {
		if o != n {
			lines = append(lines, fmt.Sprintf("sentinel known-sentinel %s 127.0.0.1 %d %s", SentinelMasterName, o.port, sentinelID(o)))
		}
	}
	return strings.Join(lines, "\n") + "\n"
}

// sentinelID is the run id (40 hex digits) of the sentinel n, made from its
// port so each is distinct.
func sentinelID(n *node) string { return fmt.Sprintf("%040x", n.port) }

// MasterName is the name the sentinels know the primary by.
func (s *Sentinel) MasterName() string { return SentinelMasterName }

// SentinelAddrs is host:port of every sentinel.
func (s *Sentinel) SentinelAddrs() []string {
	addrs := make([]string, 0, len(s.sentinels))
	for _, n := range s.sentinels {
		addrs = append(addrs, n.addr())
	}
	return addrs
}

// URL is the failover URL of go-redis's ParseFailoverURL for database 0:
// the first sentinel in the host, the others as addr parameters, and the
// master name,
// redis://127.0.0.1:S1/0?addr=127.0.0.1:S2&addr=127.0.0.1:S3&master_name=verifyq.
func (s *Sentinel) URL() string {
	addrs := s.SentinelAddrs()
	q := url.Values{"master_name": {SentinelMasterName}, "addr": addrs[1:]}
	return (&url.URL{Scheme: "redis", Host: addrs[0], Path: "/0", RawQuery: q.Encode()}).String()
}

// Mode is ModeSentinel.
func (s *Sentinel) Mode() string { return ModeSentinel }

// Client returns a go-redis failover client: it asks the sentinels for the
// primary and follows a failover. It is closed when the test ends.
func (s *Sentinel) Client(t testing.TB) *redis.Client {
	t.Helper()
	c := redis.NewFailoverClient(&redis.FailoverOptions{MasterName: SentinelMasterName, SentinelAddrs: s.SentinelAddrs()})
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// UniversalClient is Client as a redis.UniversalClient.
func (s *Sentinel) UniversalClient(t testing.TB) redis.UniversalClient {
	t.Helper()
	return s.Client(t)
}

// PrimaryAddr asks the sentinels (the first that answers) for the address
// of the primary.
func (s *Sentinel) PrimaryAddr() (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), checkTimeout)
	defer cancel()
	var errs []error
	for _, n := range s.sentinels {
		addr, err := primaryOf(ctx, n.addr())
		if err == nil {
			return addr, nil
		}
		errs = append(errs, err)
	}
	return "", fmt.Errorf("sentinel: no sentinel named the primary: %w", errors.Join(errs...))
}

// FlushAll empties the primary (FLUSHALL), so that tests sharing one
// deployment start from no keys. The replica follows its primary.
func (s *Sentinel) FlushAll(ctx context.Context) error {
	addr, err := s.PrimaryAddr()
	if err != nil {
		return err
	}
	p := probe(addr)
	defer func() { _ = p.Close() }()
	if err := p.FlushAll(ctx).Err(); err != nil {
		return fmt.Errorf("sentinel: FLUSHALL on %s: %w", addr, err)
	}
	return nil
}

// DataAddrs is host:port of the two nodes that hold data, the first
// primary first. After a failover the roles are swapped; PrimaryAddr says
// which is the primary now. With WithReplicationDelay the first primary is
// known to everyone else by its link's address (LinkAddr); these are the
// nodes' own.
func (s *Sentinel) DataAddrs() []string {
	return []string{s.data[0].addr(), s.data[1].addr()}
}

// LinkAddr is the address of the link in front of the first primary with
// WithReplicationDelay, by which the sentinels, the replica and the
// clients know it; "" without.
func (s *Sentinel) LinkAddr() string {
	if s.link == nil {
		return ""
	}
	return s.link.addr()
}

// KillPrimary ends the current primary (as the sentinels name it) with
// SIGKILL, as a crash would, and returns its address. The sentinels count
// it down after down-after (a second unless WithDownAfter) and promote the
// replica; WaitFailover waits for that. A primary behind a link
// (WithReplicationDelay) loses its link too, with the bytes the link held
// for the replica: the crash of its host.
func (s *Sentinel) KillPrimary() (string, error) {
	addr, err := s.PrimaryAddr()
	if err != nil {
		return "", err
	}
	n, err := s.dataNode(addr)
	if err != nil {
		return "", err
	}
	n.kill()
	if n == s.linked {
		s.link.cut()
	}
	s.mu.Lock()
	s.killed = addr
	s.mu.Unlock()
	return addr, nil
}

// WaitFailover waits up to timeout, after KillPrimary, until every sentinel
// names the same new primary, other than the killed one, and that node is
// a master that accepts writes. It returns the new primary's address; the
// error says what was last missing and quotes the logs.
func (s *Sentinel) WaitFailover(timeout time.Duration) (string, error) {
	s.mu.Lock()
	killed := s.killed
	s.mu.Unlock()
	if killed == "" {
		return "", errors.New("sentinel: WaitFailover without KillPrimary")
	}
	var primary string
	err := waitFor(timeout, "sentinel failover from "+killed, func(ctx context.Context) error {
		addr, err := s.agreedPrimary(ctx)
		if err != nil {
			return err
		}
		if addr == killed {
			return fmt.Errorf("the sentinels still name %s", killed)
		}
		if err := acceptsWrites(ctx, addr); err != nil {
			return err
		}
		primary = addr
		return nil
	}, s.logs)
	return primary, err
}

// Restart starts the data node at addr (one of DataAddrs) again on its port
// and directory: as a replica of the primary the sentinels name, as they
// would make it (they wait some eight seconds before turning a returning
// primary into a replica, so it is not left to them), or as the primary if
// they still name it. WaitHealthy waits until it is in sync and the
// sentinels see it.
func (s *Sentinel) Restart(addr string) error {
	n, err := s.dataNode(addr)
	if err != nil {
		return err
	}
	if n.running() {
		return fmt.Errorf("sentinel: %s %s: already running", n.role, addr)
	}
	primary, err := s.PrimaryAddr()
	if err != nil {
		return err
	}
	args := dataArgs(n, s.aof)
	if primary != addr {
		host, port, err := net.SplitHostPort(primary)
		if err != nil {
			return fmt.Errorf("sentinel: primary %q: %w", primary, err)
		}
		args = append(args, "--replicaof", host, port)
	}
	n.mu.Lock()
	n.args = args
	n.mu.Unlock()
	if err := n.start(); err != nil {
		return fmt.Errorf("sentinel: %w", err)
	}
	if n == s.linked {
		if err := s.link.open(); err != nil {
			return fmt.Errorf("sentinel: %w", err)
		}
	}
	return nil
}

// dataNode is the data node at addr: its own address, or its link's.
func (s *Sentinel) dataNode(addr string) (*node, error) {
	for _, n := range s.data {
		if s.addrOf(n) == addr || n.addr() == addr {
			return n, nil
		}
	}
	return nil, fmt.Errorf("sentinel: no data node at %q (have %s)", addr, strings.Join(s.DataAddrs(), ", "))
}

// WaitHealthy waits up to timeout until every sentinel names the same
// running primary, which is a master; every other running data node is its
// replica and in sync; and every sentinel sees those replicas up, the other
// sentinels up and a quorum (SENTINEL CKQUORUM). Killed nodes are left out.
func (s *Sentinel) WaitHealthy(timeout time.Duration) error {
	return waitFor(timeout, "sentinel deployment healthy", s.healthy, s.logs)
}

// addrOf is the address by which the sentinels and the other nodes know
// n: its link's, if it has one.
func (s *Sentinel) addrOf(n *node) string {
	if n == s.linked {
		return s.link.addr()
	}
	return n.addr()
}

func (s *Sentinel) healthy(ctx context.Context) error {
	primary, err := s.agreedPrimary(ctx)
	if err != nil {
		return err
	}
	pn, err := s.dataNode(primary)
	if err != nil {
		return err
	}
	if !pn.running() {
		return fmt.Errorf("the sentinels name %s, which is down", primary)
	}
	if err := acceptsWrites(ctx, primary); err != nil {
		return err
	}
	var replicas []string
	for _, n := range s.data {
		if n.running() && n != pn {
			if err := replicaOf(ctx, n.addr(), primary); err != nil {
				return err
			}
			replicas = append(replicas, s.addrOf(n))
		}
	}
	for _, n := range s.sentinels {
		if err := sentinelSees(ctx, n.addr(), replicas); err != nil {
			return fmt.Errorf("sentinel %s: %w", n.addr(), err)
		}
	}
	return nil
}

// agreedPrimary is the primary every sentinel names, or an error if one
// does not answer or they differ.
func (s *Sentinel) agreedPrimary(ctx context.Context) (string, error) {
	var agreed string
	for _, n := range s.sentinels {
		addr, err := primaryOf(ctx, n.addr())
		if err != nil {
			return "", err
		}
		if agreed != "" && addr != agreed {
			return "", fmt.Errorf("sentinels disagree on the primary: %s and %s", agreed, addr)
		}
		agreed = addr
	}
	return agreed, nil
}

func (s *Sentinel) logs() string { return logTails(append(slices.Clone(s.data), s.sentinels...)) }

// Close kills every process and removes the deployment's directory.
func (s *Sentinel) Close() {
	if s.link != nil {
		s.link.cut()
	}
	for _, n := range s.sentinels {
		n.kill()
	}
	for _, n := range s.data {
		n.kill()
	}
	_ = os.RemoveAll(s.dir)
}

// pids is the process id of every running process.
func (s *Sentinel) pids() []int { return pidsOf(append(slices.Clone(s.data), s.sentinels...)) }

// sentinelClient is a client for one look at the sentinel at addr (see
// probeOptions).
func sentinelClient(addr string) *redis.SentinelClient {
	return redis.NewSentinelClient(probeOptions(addr))
}

// primaryOf asks the sentinel at addr for the primary's address.
func primaryOf(ctx context.Context, addr string) (string, error) {
	sc := sentinelClient(addr)
	defer func() { _ = sc.Close() }()
	hp, err := sc.GetMasterAddrByName(ctx, SentinelMasterName).Result()
	if err != nil {
		return "", fmt.Errorf("sentinel %s: get-master-addr-by-name: %w", addr, err)
	}
	if len(hp) != 2 {
		return "", fmt.Errorf("sentinel %s: get-master-addr-by-name: %q", addr, hp)
	}
	return net.JoinHostPort(hp[0], hp[1]), nil
}

// sentinelSees checks that the sentinel at addr sees exactly the replicas
// up, the other sentinels up, and a quorum.
func sentinelSees(ctx context.Context, addr string, replicas []string) error {
	sc := sentinelClient(addr)
	defer func() { _ = sc.Close() }()
	rs, err := sc.Replicas(ctx, SentinelMasterName).Result()
	if err != nil {
		return fmt.Errorf("replicas: %w", err)
	}
	var up []string
	for _, r := range rs {
		if !strings.Contains(r["flags"], "s_down") && !strings.Contains(r["flags"], "disconnected") {
			up = append(up, net.JoinHostPort(r["ip"], r["port"]))
		}
	}
	slices.Sort(up)
	want := slices.Sorted(slices.Values(replicas))
	if !slices.Equal(up, want) {
		return fmt.Errorf("sees replicas %v up, want %v", up, want)
	}
	ss, err := sc.Sentinels(ctx, SentinelMasterName).Result()
	if err != nil {
		return fmt.Errorf("sentinels: %w", err)
	}
	// A sentinel started before another may take up to a second to
	// reconnect to it (flag disconnected); that is within the second a
	// primary must be silent before anything is decided, so it is not
	// waited for.
	others := 0
	for _, o := range ss {
		if !strings.Contains(o["flags"], "s_down") {
			others++
		}
	}
	if others != SentinelCount-1 {
		return fmt.Errorf("sees %d other sentinels, not down, want %d", others, SentinelCount-1)
	}
	if err := sc.CkQuorum(ctx, SentinelMasterName).Err(); err != nil {
		return fmt.Errorf("ckquorum: %w", err)
	}
	return nil
}

// replicaOf checks that the node at addr is a replica of primary, in sync.
func replicaOf(ctx context.Context, addr, primary string) error {
	p := probe(addr)
	defer func() { _ = p.Close() }()
	info, err := p.Info(ctx, "replication").Result()
	if err != nil {
		return fmt.Errorf("replica %s: %w", addr, err)
	}
	f := infoFields(info)
	if f["role"] != "slave" {
		return fmt.Errorf("%s is a %s, want a replica of %s", addr, f["role"], primary)
	}
	if got := net.JoinHostPort(f["master_host"], f["master_port"]); got != primary {
		return fmt.Errorf("%s replicates %s, want %s", addr, got, primary)
	}
	if f["master_link_status"] != "up" || f["master_sync_in_progress"] != "0" {
		return fmt.Errorf("replica %s not in sync: master_link_status:%s master_sync_in_progress:%s",
			addr, f["master_link_status"], f["master_sync_in_progress"])
	}
	return nil
}

// acceptsWrites checks that the node at addr is a master and takes a write:
// a DEL of a key no one uses, which a replica refuses (READONLY) and which
// leaves no key behind.
func acceptsWrites(ctx context.Context, addr string) error {
	p := probe(addr)
	defer func() { _ = p.Close() }()
	if err := p.Del(ctx, "redistest:write-probe").Err(); err != nil {
		return fmt.Errorf("%s takes no write: %w", addr, err)
	}
	return nil
}

// FailoverLog is what the first sentinel logged about the primaries since
// the start, in order: each one counted down (+sdown and +odown master),
// each failover's end (+failover-end) and each change of primary
// (+switch-master, naming the old and the new). A test can tell one
// failover from two by its +switch-master lines, and the lines before a
// second one say when it began.
func (s *Sentinel) FailoverLog() ([]string, error) {
	n := s.sentinels[0]
	b, err := os.ReadFile(n.logPath())
	if err != nil {
		return nil, fmt.Errorf("sentinel %s: %w", n.addr(), err)
	}
	var lines []string
	for line := range strings.Lines(string(b)) {
		for _, ev := range failoverEvents {
			if strings.Contains(line, ev) {
				lines = append(lines, strings.TrimSpace(line))
				break
			}
		}
	}
	return lines, nil
}

// failoverEvents are the sentinel log events FailoverLog keeps.
var failoverEvents = []string{"+sdown master ", "+odown master ", "+failover-end ", switchEvent + " "}

// switchEvent begins the part of a sentinel's log line that announces a
// change of primary.
const switchEvent = "+switch-master"

// Switches is the changes of primary in log (from FailoverLog), each as
// "+switch-master <master name> <old host> <old port> <new host> <new
// port>": one for each failover.
func Switches(log []string) []string {
	var out []string
	for _, l := range log {
		if _, sw, ok := strings.Cut(l, switchEvent); ok {
			out = append(out, switchEvent+sw)
		}
	}
	return out
}
