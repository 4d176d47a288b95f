// Package grpctest calls verifyq's gRPC server the way outside clients do,
// never through the generated Go packages: GetVarifyCode through descriptors
// parsed at run time from the old service's .proto file
// (proto/message/message.proto), as the old gateway was built from it; any
// method through server reflection and JSON, as grpcurl does.
package grpctest

import (
	"context"
	"fmt"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/bufbuild/protocompile"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	reflectionpb "google.golang.org/grpc/reflection/grpc_reflection_v1"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protodesc"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/descriptorpb"
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
	errField := field(t, m.Output(), "error", 1)
	errNum, ok := rsp.Get(errField).Interface().(int32)
	if !ok {
		t.Fatalf("grpctest: %s is %s, want int32", errField.FullName(), errField.Kind())
	}
	return LegacyReply{
		Error: errNum,
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

// reflect sends one request on a server reflection stream and returns the
// answer.
func reflect(t testing.TB, conn *grpc.ClientConn, req *reflectionpb.ServerReflectionRequest) *reflectionpb.ServerReflectionResponse {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	stream, err := reflectionpb.NewServerReflectionClient(conn).ServerReflectionInfo(ctx)
	if err != nil {
		t.Fatalf("grpctest: reflection: %v", err)
	}
	if err := stream.Send(req); err != nil {
		t.Fatalf("grpctest: reflection: %v", err)
	}
	res, err := stream.Recv()
	if err != nil {
		t.Fatalf("grpctest: reflection: %v", err)
	}
	_ = stream.CloseSend()
	if e := res.GetErrorResponse(); e != nil {
		t.Fatalf("grpctest: reflection: %s", e.GetErrorMessage())
	}
	return res
}

// Services lists the services the server names through reflection, as
// `grpcurl list` does.
func Services(t testing.TB, conn *grpc.ClientConn) []string {
	t.Helper()
	res := reflect(t, conn, &reflectionpb.ServerReflectionRequest{
		MessageRequest: &reflectionpb.ServerReflectionRequest_ListServices{},
	})
	var names []string
	for _, s := range res.GetListServicesResponse().GetService() {
		names = append(names, s.GetName())
	}
	return names
}

// Method finds a method through reflection alone, as grpcurl does without
// .proto files. symbol is "package.Service/Method" or "package.Service.Method".
func Method(t testing.TB, conn *grpc.ClientConn, symbol string) protoreflect.MethodDescriptor {
	t.Helper()
	full := strings.Replace(symbol, "/", ".", 1)
	i := strings.LastIndexByte(full, '.')
	if i < 0 {
		t.Fatalf("grpctest: %q is not Service/Method", symbol)
	}
	svcName, methodName := full[:i], full[i+1:]
	res := reflect(t, conn, &reflectionpb.ServerReflectionRequest{
		MessageRequest: &reflectionpb.ServerReflectionRequest_FileContainingSymbol{FileContainingSymbol: svcName},
	})
	set := &descriptorpb.FileDescriptorSet{}
	for _, b := range res.GetFileDescriptorResponse().GetFileDescriptorProto() {
		fd := &descriptorpb.FileDescriptorProto{}
		if err := proto.Unmarshal(b, fd); err != nil {
			t.Fatalf("grpctest: reflection: %v", err)
		}
		set.File = append(set.File, fd)
	}
	files, err := protodesc.NewFiles(set)
	if err != nil {
		t.Fatalf("grpctest: reflection: %v", err)
	}
	d, err := files.FindDescriptorByName(protoreflect.FullName(svcName))
	if err != nil {
		t.Fatalf("grpctest: reflection: %s: %v", svcName, err)
	}
	svc, ok := d.(protoreflect.ServiceDescriptor)
	if !ok {
		t.Fatalf("grpctest: %s is not a service", svcName)
	}
	m := svc.Methods().ByName(protoreflect.Name(methodName))
	if m == nil {
		t.Fatalf("grpctest: %s has no method %s", svcName, methodName)
	}
	return m
}

// InvokeJSON calls m with a request given as JSON, as `grpcurl -d` does, and
// returns the reply as JSON.
func InvokeJSON(ctx context.Context, t testing.TB, conn *grpc.ClientConn, m protoreflect.MethodDescriptor, reqJSON string) (string, error) {
	t.Helper()
	req := dynamicpb.NewMessage(m.Input())
	if err := protojson.Unmarshal([]byte(reqJSON), req); err != nil {
		t.Fatalf("grpctest: %s: request %s: %v", m.FullName(), reqJSON, err)
	}
	rsp := dynamicpb.NewMessage(m.Output())
	method := fmt.Sprintf("/%s/%s", m.Parent().FullName(), m.Name())
	if err := conn.Invoke(ctx, method, req, rsp); err != nil {
		return "", err
	}
	b, err := protojson.Marshal(rsp)
	if err != nil {
		t.Fatalf("grpctest: %s: reply: %v", m.FullName(), err)
	}
	return string(b), nil
}
