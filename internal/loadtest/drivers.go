package loadtest

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	messagepb "github.com/verifyq/verifyq/proto/message"
	verifyqv1 "github.com/verifyq/verifyq/proto/verifyq/v1"
)

// Driver sends one code request for an address and returns its outcome.
type Driver interface {
	Send(ctx context.Context, email string) string
	Close() error
}

// Targets a Driver can be made for.
const (
	TargetHTTP       = "http"        // POST /v1/codes
	TargetGRPCLegacy = "grpc-legacy" // message.VarifyService/GetVarifyCode
	TargetGRPCV1     = "grpc-v1"     // verifyq.v1.CodeService/SendCode
)

// Targets lists the targets in a stable order.
var Targets = []string{TargetGRPCLegacy, TargetGRPCV1, TargetHTTP}

// NewDriver returns a driver for target at addr (host:port). conns is the
// number of connections: for HTTP the most kept open (one per caller is
// right), for gRPC the number of channels the calls are spread over.
func NewDriver(target, addr string, conns int) (Driver, error) {
	conns = max(conns, 1)
	switch target {
	case TargetHTTP:
		return newHTTPDriver(addr, conns), nil
	case TargetGRPCLegacy, TargetGRPCV1:
		return newGRPCDriver(target, addr, conns)
	}
	return nil, fmt.Errorf("unknown target %q: want one of %v", target, Targets)
}

// Addresses returns the address of request i of a run: distinct for every
// request and run, so that no send limit of a production configuration (the
// cooldown and the per-address cap) refuses one.
func Addresses(run string) func(i int) string {
	return func(i int) string { return "lt-" + run + "-" + strconv.Itoa(i) + "@bench.verifyq.test" }
}

// Index returns i for an address made by Addresses(run), or -1.
func Index(run, email string) int {
	prefix, suffix := "lt-"+run+"-", "@bench.verifyq.test"
	if len(email) <= len(prefix)+len(suffix) || email[:len(prefix)] != prefix || email[len(email)-len(suffix):] != suffix {
		return -1
	}
	i, err := strconv.Atoi(email[len(prefix) : len(email)-len(suffix)])
	if err != nil {
		return -1
	}
	return i
}

// Drive returns the Request that sends request i for addr(i) with d.
func Drive(d Driver, addr func(int) string) Request {
	return func(ctx context.Context, i int) string { return d.Send(ctx, addr(i)) }
}

type httpDriver struct {
	url    string
	client *http.Client
}

func newHTTPDriver(addr string, conns int) *httpDriver {
	tr := &http.Transport{
		DialContext:         (&net.Dialer{Timeout: 5 * time.Second}).DialContext,
		MaxIdleConns:        conns,
		MaxIdleConnsPerHost: conns,
		MaxConnsPerHost:     conns,
		IdleConnTimeout:     time.Minute,
	}
	return &httpDriver{url: "http://" + addr + "/v1/codes", client: &http.Client{Transport: tr}}
}

func (d *httpDriver) Send(ctx context.Context, email string) string {
	body, _ := json.Marshal(struct {
		Email string `json:"email"`
	}{email})
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, d.url, bytes.NewReader(body))
	if err != nil {
		return "error"
	}
	req.Header.Set("Content-Type", "application/json")
	res, err := d.client.Do(req)
	if err != nil {
		return transportOutcome(err)
	}
	defer res.Body.Close()
	if res.StatusCode == http.StatusAccepted {
		_, _ = io.Copy(io.Discard, res.Body)
		return OK
	}
	var e struct {
		Error struct {
			Code string `json:"code"`
		} `json:"error"`
	}
	_ = json.NewDecoder(io.LimitReader(res.Body, 4096)).Decode(&e)
	_, _ = io.Copy(io.Discard, res.Body)
	return "http_" + strconv.Itoa(res.StatusCode) + "_" + e.Error.Code
}

func (d *httpDriver) Close() error {
	d.client.CloseIdleConnections()
	return nil
}

type grpcDriver struct {
	conns  []*grpc.ClientConn
	legacy []messagepb.VarifyServiceClient
	v1     []verifyqv1.CodeServiceClient
	next   atomic.Uint64
}

func newGRPCDriver(target, addr string, n int) (*grpcDriver, error) {
	d := &grpcDriver{}
	for range n {
		// Like the old gateway's channel: plaintext on a private network,
		// no deadline of its own.
		cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			_ = d.Close()
			return nil, err
		}
		d.conns = append(d.conns, cc)
		if target == TargetGRPCLegacy {
			d.legacy = append(d.legacy, messagepb.NewVarifyServiceClient(cc))
		} else {
			d.v1 = append(d.v1, verifyqv1.NewCodeServiceClient(cc))
		}
	}
	return d, nil
}

// Legacy error numbers of message.GetVarifyRsp.
var legacyOutcomes = map[int32]string{0: OK, 1: "redis_error", 2: "exception", 3: "invalid_address", 4: "rate_limited"}

func (d *grpcDriver) Send(ctx context.Context, email string) string {
	k := int(d.next.Add(1) % uint64(len(d.conns)))
	if d.legacy != nil {
		rsp, err := d.legacy[k].GetVarifyCode(ctx, &messagepb.GetVarifyReq{Email: email})
		if err != nil {
			return transportOutcome(err)
		}
		if out, ok := legacyOutcomes[rsp.GetError()]; ok {
			return out
		}
		return "legacy_error_" + strconv.Itoa(int(rsp.GetError()))
	}
	_, err := d.v1[k].SendCode(ctx, &verifyqv1.SendCodeRequest{Email: email})
	if err != nil {
		return transportOutcome(err)
	}
	return OK
}

func (d *grpcDriver) Close() error {
	var err error
	for _, c := range d.conns {
		err = errors.Join(err, c.Close())
	}
	return err
}

// transportOutcome labels an error of the call itself.
func transportOutcome(err error) string {
	if st, ok := status.FromError(err); ok {
		return "grpc_" + st.Code().String()
	}
	switch {
	case errors.Is(err, context.DeadlineExceeded):
		return "timeout"
	case errors.Is(err, context.Canceled):
		return "canceled"
	}
	return "transport_error"
}
