package tasks

import (
	"encoding/json"
	"fmt"

	"github.com/verifyq/verifyq/mail"
)

// FormatPayload renders a task payload for people, as in the queue
// dashboard, with the address masked (mail.MaskAddress) and a sealed code
// shown as "(sealed)". It fits asynqmon's
// PayloadFormatterFunc. Payloads of other task types, or that cannot be
// decoded, are shown as their size only: they might hold anything.
func FormatPayload(taskType string, payload []byte) string {
	if taskType != TypeSendCode {
		return fmt.Sprintf("(%d bytes)", len(payload))
	}
	var p SendCodePayload
	if err := json.Unmarshal(payload, &p); err != nil {
		return fmt.Sprintf("(%d bytes, not a valid %s payload)", len(payload), TypeSendCode)
	}
	p.Email = mail.MaskAddress(p.Email)
	if p.SealedCode != "" {
		p.SealedCode = "(sealed)"
	}
	b, err := json.Marshal(p)
	if err != nil {
		return fmt.Sprintf("(%d bytes)", len(payload))
	}
	return string(b)
}
