package delivery_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"testing"

	"github.com/stretchr/testify/assert"

	"github.com/verifyq/verifyq/delivery"
	"github.com/verifyq/verifyq/mail"
)

func TestFailureOf(t *testing.T) {
	t.Parallel()
	tests := []struct {
		err  error
		want string
		code int
	}{
		{fmt.Errorf("send: %w", &mail.SMTPError{Code: 451, Msg: "4.7.1 try later"}), delivery.FailureTemporary, 451},
		{fmt.Errorf("send: %w", &mail.SMTPError{Code: 550, Msg: "5.1.1 no such user"}), delivery.FailurePermanent, 550},
		{fmt.Errorf("send: %w", mail.ErrInvalidAddress), delivery.FailurePermanent, 0},
		{fmt.Errorf("send: %w", context.DeadlineExceeded), delivery.FailureTimeout, 0},
		{fmt.Errorf("send: %w", os.ErrDeadlineExceeded), delivery.FailureTimeout, 0},
		{&net.OpError{Op: "dial", Err: errors.New("connection refused")}, delivery.FailureConnection, 0},
		{errors.New("EOF"), delivery.FailureConnection, 0},
	}
	for _, tt := range tests {
		assert.Equal(t, tt.want, delivery.FailureOf(tt.err), "%v", tt.err)
		assert.Equal(t, tt.code, delivery.ReplyCode(tt.err), "%v", tt.err)
	}
}
