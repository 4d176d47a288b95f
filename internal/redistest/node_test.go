package redistest

import (
	"errors"
	"net"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// A port taken between freePorts and redis-server is told apart (the
// starters then pick new ports), and the error quotes the node's log.
func TestNodeStartOnATakenPort(t *testing.T) {
	t.Parallel()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer l.Close()
	dir := t.TempDir()
	n := &node{role: "redis-server", port: l.Addr().(*net.TCPAddr).Port, dir: dir}
	n.args = dataArgs(n, false)

	err = n.start()
	require.Error(t, err)
	assert.True(t, errors.Is(err, errPortTaken), "%v", err)
	assert.Contains(t, err.Error(), "Address already in use", "the log is quoted")
	assert.False(t, n.running())
}

// A port another redis-server took first is taken, although that server
// answers PING in the node's place: the node checks that the server that
// answers is its own process.
func TestNodeStartOnAPortAnotherRedisHolds(t *testing.T) {
	t.Parallel()
	ports, err := freePorts(1)
	require.NoError(t, err)
	other := &node{role: "redis-server", port: ports[0], dir: t.TempDir()}
	other.args = dataArgs(other, false)
	require.NoError(t, other.start())
	t.Cleanup(other.kill)

	n := &node{role: "redis-server", port: ports[0], dir: t.TempDir()}
	n.args = dataArgs(n, false)
	err = n.start()
	require.Error(t, err)
	assert.True(t, errors.Is(err, errPortTaken), "%v", err)
	assert.False(t, n.running())
	assert.True(t, other.running(), "the other server is left alone")
}

// A redis-server that exits at start fails at once with its log quoted.
func TestNodeStartWithABadArgument(t *testing.T) {
	t.Parallel()
	ports, err := freePorts(1)
	require.NoError(t, err)
	n := &node{role: "redis-server", port: ports[0], dir: t.TempDir()}
	n.args = append(dataArgs(n, false), "--no-such-directive", "1")

	err = n.start()
	require.Error(t, err)
	assert.False(t, errors.Is(err, errPortTaken))
	assert.Contains(t, err.Error(), "exited at start")
	assert.Contains(t, err.Error(), "no-such-directive")
}
