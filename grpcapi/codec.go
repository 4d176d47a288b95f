package grpcapi

import (
	"fmt"

	"google.golang.org/grpc/encoding"
	grpcproto "google.golang.org/grpc/encoding/proto"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// lenientCodec is gRPC's proto codec, except that a request whose string
// field holds invalid UTF-8 is still decoded, bytes as sent, instead of
// failing the call with INTERNAL before any handler runs. The service then
// refuses the value as it refuses any bad input: INVALID_ARGUMENT on v1,
// an OK reply with error 3 on the old service, which must answer in band.
// Replies are marshalled by gRPC's own codec, which never lets invalid
// UTF-8 out.
type lenientCodec struct{ encoding.CodecV2 }

func newLenientCodec() lenientCodec {
	return lenientCodec{CodecV2: encoding.GetCodecV2(grpcproto.Name)}
}

// Unmarshal decodes data into v, a proto message.
func (c lenientCodec) Unmarshal(data mem.BufferSlice, v any) error {
	err := c.CodecV2.Unmarshal(data, v)
	if err == nil {
		return nil
	}
	m, ok := v.(proto.Message)
	if !ok {
		return err
	}
	buf := data.Materialize()
	proto.Reset(m)
	if lerr := unmarshalLenient(buf, m.ProtoReflect()); lerr != nil {
		return err
	}
	return nil
}

// unmarshalLenient decodes b into m, taking singular string fields' bytes
// as they are and leaving every other field to proto.Unmarshal.
func unmarshalLenient(b []byte, m protoreflect.Message) error {
	fields := m.Descriptor().Fields()
	var rest []byte
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return protowire.ParseError(n)
		}
		size := protowire.ConsumeFieldValue(num, typ, b[n:])
		if size < 0 {
			return protowire.ParseError(size)
		}
		fd := fields.ByNumber(num)
		if fd != nil && fd.Kind() == protoreflect.StringKind && fd.Cardinality() != protoreflect.Repeated && typ == protowire.BytesType {
			v, _ := protowire.ConsumeBytes(b[n:])
			m.Set(fd, protoreflect.ValueOfString(string(v)))
		} else {
			rest = append(rest, b[:n+size]...)
		}
		b = b[n+size:]
	}
	if err := (proto.UnmarshalOptions{Merge: true}).Unmarshal(rest, m.Interface()); err != nil {
		return fmt.Errorf("grpcapi: decode request: %w", err)
	}
	return nil
}
