package grpcapi_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"io"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/connectivity"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/verifyq/verifyq/grpcapi"
	"github.com/verifyq/verifyq/internal/grpctest"
	"github.com/verifyq/verifyq/internal/servicetest"
	verifyqv1 "github.com/verifyq/verifyq/proto/verifyq/v1"
	"github.com/verifyq/verifyq/service"
)

// watches opens n health Watch streams on conn, from a few goroutines at
// once, and returns how many the server took (their first status arrived)
// and the status codes of those it refused. The streams it took stay open
// until ctx ends. A stream whose first reply takes over two seconds (the
// client waits for a stream slot of the connection: nothing refused it)
// counts as Canceled and ends the run.
func watches(ctx context.Context, t *testing.T, conn *grpc.ClientConn, n int) (taken int, refused map[codes.Code]int) {
	t.Helper()
	const workers = 16
	var (
		mu      sync.Mutex
		wg      sync.WaitGroup
		next    = make(chan struct{})
		stalled atomic.Bool
	)
	refused = map[codes.Code]int{}
	client := healthpb.NewHealthClient(conn)
	for range workers {
		wg.Go(func() {
			for range next {
				sctx, cancel := context.WithCancel(ctx)
				stall := time.AfterFunc(2*time.Second, cancel)
				w, err := client.Watch(sctx, &healthpb.HealthCheckRequest{})
				if err == nil {
					_, err = w.Recv()
				}
				if !stall.Stop() {
					stalled.Store(true)
				}
				if err != nil {
					cancel()
				}
				mu.Lock()
				if err == nil {
					taken++
				} else {
					refused[status.Code(err)]++
				}
				mu.Unlock()
			}
		})
	}
	for i := 0; i < n && !stalled.Load(); i++ {
		next <- struct{}{}
	}
	close(next)
	wg.Wait()
	return taken, refused
}

// 10,000 health Watch streams on one connection, with the default limits:
// the server keeps DefaultMaxWatchesPerConn of them and ends every other
// one at once with RESOURCE_EXHAUSTED; the connection still serves calls,
// and a stream closed frees its slot.
func TestWatchStreamsOnOneConnectionAreBounded(t *testing.T) {
	t.Parallel()
	conn := serve(t, grpcapi.New(servicetest.Fake{}, discard, grpcapi.Config{}))
	healthOf(t, conn, "") // connected and serving

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	const n = 10_000
	taken, refused := watches(ctx, t, conn, n)
	assert.Equal(t, grpcapi.DefaultMaxWatchesPerConn, taken)
	assert.Equal(t, map[codes.Code]int{codes.ResourceExhausted: n - grpcapi.DefaultMaxWatchesPerConn}, refused)

	checkCtx, checkCancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer checkCancel()
	res, err := healthpb.NewHealthClient(conn).Check(checkCtx, &healthpb.HealthCheckRequest{})
	require.NoError(t, err, "unary calls still pass")
	assert.Equal(t, healthpb.HealthCheckResponse_SERVING, res.GetStatus())

	cancel()
	require.Eventually(t, func() bool {
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		taken, _ := watches(ctx, t, conn, 1)
		return taken == 1
	}, 5*time.Second, 20*time.Millisecond, "closed streams give their slots back")
}

// MaxWatches bounds the streams across connections, MaxWatchesPerConn on
// each.
func TestWatchStreamsAcrossConnectionsAreBounded(t *testing.T) {
	t.Parallel()
	a := serve(t, grpcapi.New(servicetest.Fake{}, discard, grpcapi.Config{
		Limits: grpcapi.Limits{MaxWatches: 5, MaxWatchesPerConn: 3},
	}))
	b := grpctest.Dial(t, a.Target())
	c := grpctest.Dial(t, a.Target())

	ctxA, cancelA := context.WithCancel(context.Background())
	defer cancelA()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	taken, refused := watches(ctxA, t, a, 20)
	assert.Equal(t, 3, taken, "the bound per connection")
	assert.Equal(t, 17, refused[codes.ResourceExhausted])
	taken, _ = watches(ctx, t, b, 20)
	assert.Equal(t, 2, taken, "what the server-wide bound leaves")
	taken, _ = watches(ctx, t, c, 20)
	assert.Equal(t, 0, taken, "the server-wide bound")

	cancelA()
	require.Eventually(t, func() bool {
		taken, _ := watches(ctx, t, c, 1)
		return taken == 1
	}, 5*time.Second, 20*time.Millisecond, "a's slots are free again")
}

// A connection with no call open for MaxConnectionIdle is closed (the
// client's channel goes idle and reconnects for its next call); one older
// than MaxConnectionAge is closed after the grace, open streams and all.
func TestConnectionsIdleOrOldAreClosed(t *testing.T) {
	t.Parallel()
	t.Run("idle", func(t *testing.T) {
		t.Parallel()
		assert.LessOrEqual(t, grpcapi.DefaultMaxConnectionIdle, time.Minute,
			"by default tens of seconds: idle connections hold a listener's slots briefly")
		conn := serve(t, grpcapi.New(servicetest.Fake{}, discard, grpcapi.Config{
			Limits: grpcapi.Limits{MaxConnectionIdle: 200 * time.Millisecond},
		}))
		healthOf(t, conn, "")
		// The channel's state can still read Connecting just after a call
		// that went through (grpc-go hands out the new picker before it
		// publishes the state), so the loop waits for Idle from whatever
		// state it finds; a server that never closes the idle connection
		// leaves it Ready until the deadline.
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		for s := conn.GetState(); s != connectivity.Idle; s = conn.GetState() {
			require.True(t, conn.WaitForStateChange(ctx, s), "still %s", s)
		}
		assert.Equal(t, healthpb.HealthCheckResponse_SERVING, healthOf(t, conn, ""), "the next call reconnects")
	})
	t.Run("old", func(t *testing.T) {
		t.Parallel()
		conn := serve(t, grpcapi.New(servicetest.Fake{}, discard, grpcapi.Config{
			Limits: grpcapi.Limits{MaxConnectionAge: 200 * time.Millisecond, MaxConnectionAgeGrace: 200 * time.Millisecond},
		}))
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		w, err := healthpb.NewHealthClient(conn).Watch(ctx, &healthpb.HealthCheckRequest{})
		require.NoError(t, err)
		for {
			if _, err = w.Recv(); err != nil {
				break
			}
		}
		assert.Equal(t, codes.Unavailable, status.Code(err), "the stream is cut with its connection: %v", err)
		assert.NoError(t, ctx.Err(), "cut by the server, not by the test's deadline")
	})
}

// rawCall makes one SendCode call on a raw HTTP/2 connection to addr, with
// a metadata entry of extra bytes, ignoring whatever the server advertises
// (as a hostile client does). It returns the server's
// SETTINGS_MAX_HEADER_LIST_SIZE (0 when it sent none) and how the call
// ended: the grpc-status of its trailers, or "reset" when the server reset
// the stream or the connection.
func rawCall(t *testing.T, addr string, extra int) (advertised uint32, ended string) {
	t.Helper()
	conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
	require.NoError(t, err)
	defer func() { _ = conn.Close() }()
	require.NoError(t, conn.SetDeadline(time.Now().Add(10*time.Second)))
	_, err = io.WriteString(conn, http2.ClientPreface)
	require.NoError(t, err)
	fr := http2.NewFramer(conn, conn)
	fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
	require.NoError(t, fr.WriteSettings())
	// The server's SETTINGS come first, before anything of the call.
	settings, err := fr.ReadFrame()
	require.NoError(t, err)
	require.IsType(t, &http2.SettingsFrame{}, settings)
	advertised, _ = settings.(*http2.SettingsFrame).Value(http2.SettingMaxHeaderListSize)
	require.NoError(t, fr.WriteSettingsAck())

	var block bytes.Buffer
	enc := hpack.NewEncoder(&block)
	for _, f := range [][2]string{
		{":method", "POST"}, {":scheme", "http"}, {":authority", addr},
		{":path", verifyqv1.CodeService_SendCode_FullMethodName},
		{"content-type", "application/grpc"}, {"te", "trailers"},
		{"x-padding", strings.Repeat("p", extra)},
	} {
		require.NoError(t, enc.WriteField(hpack.HeaderField{Name: f[0], Value: f[1]}))
	}
	const frame = 16 << 10 // HTTP/2's least SETTINGS_MAX_FRAME_SIZE
	b := block.Bytes()
	first := b[:min(len(b), frame)]
	b = b[len(first):]
	err = fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: first, EndHeaders: len(b) == 0})
	for err == nil && len(b) > 0 {
		n := min(len(b), frame)
		err = fr.WriteContinuation(1, n == len(b), b[:n])
		b = b[n:]
	}
	msg, merr := proto.Marshal(&verifyqv1.SendCodeRequest{Email: "user@example.com"})
	require.NoError(t, merr)
	if err == nil {
		data := binary.BigEndian.AppendUint32([]byte{0}, uint32(len(msg))) //nolint:gosec // G115: a few bytes
		err = fr.WriteData(1, true, append(data, msg...))
	}
	if err != nil {
		return advertised, "reset" // the server closed the connection
	}

	for {
		f, err := fr.ReadFrame()
		if err != nil {
			return advertised, "reset" // the connection closed
		}
		switch f := f.(type) {
		case *http2.PingFrame:
			if !f.IsAck() {
				_ = fr.WritePing(true, f.Data)
			}
		case *http2.RSTStreamFrame:
			if f.StreamID == 1 {
				return advertised, "reset"
			}
		case *http2.GoAwayFrame:
			return advertised, "reset"
		case *http2.MetaHeadersFrame:
			if f.StreamID == 1 && f.StreamEnded() {
				for _, hf := range f.RegularFields() {
					if hf.Name == "grpc-status" {
						return advertised, "grpc-status " + hf.Value
					}
				}
				return advertised, "no grpc-status"
			}
		}
	}
}

// A call's metadata is bounded as an HTTP request's headers are
// (MaxHeaderListSize, not gRPC's 16 MB default): the server advertises the
// bound, and a client that ignores it has its call reset (here its
// connection closed) before any handler runs, so that calls left waiting for their message cannot hold
// megabytes each. Metadata within the bound is served.
func TestOversizedMetadataIsRefused(t *testing.T) {
	t.Parallel()
	var sends atomic.Int32
	srv := grpcapi.New(servicetest.Fake{Send: func(context.Context, service.SendRequest) (service.Sent, error) {
		sends.Add(1)
		return service.Sent{ExpiresIn: time.Minute}, nil
	}}, discard, grpcapi.Config{})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		assert.NoError(t, srv.Shutdown(ctx))
		assert.NoError(t, <-served)
	})
	addr := ln.Addr().String()

	advertised, ended := rawCall(t, addr, 1<<20)
	assert.Equal(t, uint32(grpcapi.MaxHeaderListSize), advertised, "the server advertises its bound")
	assert.Equal(t, "reset", ended, "a call with 1 MiB of metadata")
	assert.Zero(t, sends.Load(), "the service never ran")

	_, ended = rawCall(t, addr, 1<<10)
	assert.Contains(t, ended, "grpc-status 0", "a call with 1 KiB of metadata")
	assert.Equal(t, int32(1), sends.Load())
}
