// Package grpctest calls verifyq's gRPC server the way the old gateway does:
// through descriptors parsed at run time from the old service's .proto file
// (proto/message/message.proto), not through the generated Go package. A
// test that passes with it shows wire compatibility with any client built
// from that file.
package grpctest

import (
	"context"
	"fmt"
	"path/filepath"
	"runtime"
	"sync"
	"testing"

	"github.com/bufbuild/protocompile"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/dynamicpb"
)

// OldProto is the old service's .proto file, relative to the repository's
// proto/ directory.
const OldProto = "message/message.proto"

// LegacyMethod is the full method name the old gateway calls.
const LegacyMethod = "/message.VarifyService/GetVarifyCode"

// LegacyReply is a GetVarifyRsp as the old gateway reads it.
type LegacyReply struct {
	Error int32
	Email string
	Code  string
}

var parsed = sync.OnceValues(func() (protoreflect.MethodDescriptor, error) {
	_, file, _, _ := runtime.Caller(0)
	root := filepath.Join(filepath.Dir(file), "..", "..", "proto")
	c := protocompile.Compiler{Resolver: &protocompile.SourceResolver{ImportPaths: []string{root}}}
	files, err := c.Compile(context.Background(), OldProto)
	if err != nil {
		return nil, err
	}
	svc := files[0].Services().ByName("VarifyService")
	if svc == nil {
		return nil, fmt.Errorf("%s: no service VarifyService", OldProto)
	}
	m := svc.Methods().ByName("GetVarifyCode")
	if m == nil {
		return nil, fmt.Errorf("%s: no method GetVarifyCode", OldProto)
	}
	return m, nil
})

// LegacyMethodDescriptor returns GetVarifyCode as parsed from OldProto.
func LegacyMethodDescriptor(t testing.TB) protoreflect.MethodDescriptor {
	t.Helper()
	m, err := parsed()
	if err != nil {
		t.Fatalf("grpctest: parse %s: %v", OldProto, err)
	}
	return m
}

// Dial returns an insecure client connection to addr, closed when the test
// ends. Like the old gateway's channel, it sets no deadline of its own.
func Dial(t testing.TB, addr string) *grpc.ClientConn {
	t.Helper()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatalf("grpctest: dial %s: %v", addr, err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return conn
}

// GetVarifyCode calls the old service with dynamic messages built from
// OldProto. The error is the call's gRPC status error; domain outcomes are
// in the reply.
func GetVarifyCode(ctx context.Context, t testing.TB, conn *grpc.ClientConn, email string, opts ...grpc.CallOption) (LegacyReply, error) {
	t.Helper()
	m := LegacyMethodDescriptor(t)
	method := fmt.Sprintf("/%s/%s", m.Parent().FullName(), m.Name())
	if method != LegacyMethod {
		t.Fatalf("grpctest: %s declares %s, want %s", OldProto, method, LegacyMethod)
	}
	req := dynamicpb.NewMessage(m.Input())
	req.Set(field(t, m.Input(), "email", 1), protoreflect.ValueOfString(email))
	rsp := dynamicpb.NewMessage(m.Output())
	if err := conn.Invoke(ctx, method, req, rsp, opts...); err != nil {
		return LegacyReply{}, err
	}
	return LegacyReply{
		Error: int32(rsp.Get(field(t, m.Output(), "error", 1)).Int()),
		Email: rsp.Get(field(t, m.Output(), "email", 2)).String(),
		Code:  rsp.Get(field(t, m.Output(), "code", 3)).String(),
	}, nil
}

// field returns the field name of md and checks that it has number n, as in
// the old service.
func field(t testing.TB, md protoreflect.MessageDescriptor, name protoreflect.Name, n protoreflect.FieldNumber) protoreflect.FieldDescriptor {
	t.Helper()
	fd := md.Fields().ByName(name)
	if fd == nil || fd.Number() != n {
		t.Fatalf("grpctest: %s.%s is not field %d", md.FullName(), name, n)
	}
	return fd
}
