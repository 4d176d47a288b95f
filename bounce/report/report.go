// Package report reads the reports that come back about a sent mail:
// delivery status notifications (RFC 3464, and RFC 6533's UTF-8 form) and
// feedback reports of complaints (RFC 5965, ARF), both multipart/report
// (RFC 6522). It reads the few fields verifyq acts on, within fixed
// bounds, and believes none of them: what a report says is worth what the
// token of its return path proves (package returnpath).
package report

import (
	"bufio"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"mime"
	"mime/multipart"
	"net/mail"
	"net/textproto"
	"regexp"
	"strconv"
	"strings"
)

// Type is the kind of a report, its multipart/report report-type.
type Type string

// The reports read.
const (
	// Delivery is a delivery status notification (RFC 3464).
	Delivery Type = "delivery-status"
	// Feedback is a feedback report (RFC 5965): a complaint.
	Feedback Type = "feedback-report"
)

// Actions of a DSN's recipient (RFC 3464 section 2.3.3), as Recipient has
// them.
const (
	ActionFailed    = "failed"
	ActionDelayed   = "delayed"
	ActionDelivered = "delivered"
	ActionRelayed   = "relayed"
	ActionExpanded  = "expanded"
)

// FeedbackAbuse is the feedback type of a complaint: the recipient
// reported the mail as spam.
const FeedbackAbuse = "abuse"

// Bounds of what Read reads: the rest is left out.
const (
	// MaxParts bounds the parts of a report read.
	MaxParts = 8
	// MaxRecipients bounds the recipients of a DSN read.
	MaxRecipients = 16
	// MaxAddresses bounds the addresses read from one field (a feedback
	// report's Original-Rcpt-To, the original's To).
	MaxAddresses = 4
	// maxBlocks bounds the field blocks of a delivery-status part,
	// blank ones included.
	maxBlocks = 4 * MaxRecipients
)

// Errors of Read.
var (
	// ErrNotReport: not a multipart/report of a type Read knows, such as
	// an auto-reply or a bounce in free text.
	ErrNotReport = errors.New("report: not a delivery status notification nor a feedback report")
	// ErrMalformed: a report that does not parse, or lacks its report part.
	ErrMalformed = errors.New("report: malformed")
)

// Report is what a report says.
type Report struct {
	// Type is Delivery or Feedback.
	Type Type
	// Recipients are a DSN's recipients (at most MaxRecipients).
	Recipients []Recipient
	// Feedback is a feedback report's fields.
	Feedback FeedbackFields
	// Original is what the report carries of the original message's
	// header, when it does.
	Original Original
}

// Recipient is a DSN's verdict on one recipient.
type Recipient struct {
	// Final and Original are the Final-Recipient and Original-Recipient
	// addresses ("" when absent or of a type other than rfc822 or utf-8).
	Final, Original string
	// Action is failed, delayed, delivered, relayed or expanded, in lower
	// case.
	Action string
	// Status is the status code, e.g. "5.1.1" ("" when not one).
	Status string
	// Reply is the SMTP reply code the Diagnostic-Code quotes, e.g. 550;
	// 0 when it quotes none.
	Reply int
	// Diagnostic is the Diagnostic-Code's text, without its type and
	// reply code. It can hold addresses: keep it only masked
	// (delivery.Diagnostic).
	Diagnostic string
}

// FeedbackFields are the fields of a feedback report verifyq reads.
type FeedbackFields struct {
	// Type is the Feedback-Type, in lower case: FeedbackAbuse for a
	// complaint.
	Type string
	// MailFrom is the Original-Mail-From: the return path of the mail
	// complained of ("" when absent).
	MailFrom string
	// RcptTo are the Original-Rcpt-To addresses (at most MaxAddresses).
	RcptTo []string
}

// Original is what a report carries of the original message's header.
type Original struct {
	// To are the addresses of its To field (at most MaxAddresses).
	To []string
	// ReturnPath is its Return-Path, the envelope sender that the final
	// MTA wrote into it ("" when absent).
	ReturnPath string
}

// Read reads a report: a whole message, as DATA carries it. The caller
// bounds its size.
func Read(r io.Reader) (*Report, error) {
	msg, err := mail.ReadMessage(bufio.NewReader(r))
	if err != nil {
		return nil, fmt.Errorf("%w: header: %w", ErrMalformed, err)
	}
	media, params, err := mime.ParseMediaType(msg.Header.Get("Content-Type"))
	if err != nil || media != "multipart/report" {
		return nil, ErrNotReport
	}
	rep := &Report{Type: Type(strings.ToLower(params["report-type"]))}
	if rep.Type != Delivery && rep.Type != Feedback {
		return nil, ErrNotReport
	}
	if params["boundary"] == "" {
		return nil, fmt.Errorf("%w: no boundary", ErrMalformed)
	}
	parts := multipart.NewReader(msg.Body, params["boundary"])
	found := false
	for range MaxParts {
		part, err := parts.NextPart()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("%w: %w", ErrMalformed, err)
		}
		ok, err := rep.readPart(part)
		if err != nil {
			return nil, err
		}
		found = found || ok
	}
	if !found {
		return nil, fmt.Errorf("%w: no %s part", ErrMalformed, rep.Type)
	}
	return rep, nil
}

// readPart reads one part, and reports whether it was the report's own.
func (rep *Report) readPart(part *multipart.Part) (bool, error) {
	media, _, err := mime.ParseMediaType(part.Header.Get("Content-Type"))
	if err != nil {
		return false, nil // a part of no type: nothing verifyq reads
	}
	var body io.Reader = part
	if strings.EqualFold(strings.TrimSpace(part.Header.Get("Content-Transfer-Encoding")), "base64") {
		body = base64.NewDecoder(base64.StdEncoding, part)
	}
	fields := textproto.NewReader(bufio.NewReader(body))
	switch media {
	case "message/delivery-status", "message/global-delivery-status":
		if rep.Type != Delivery {
			return false, nil
		}
		return true, rep.readDeliveryStatus(fields)
	case "message/feedback-report":
		if rep.Type != Feedback {
			return false, nil
		}
		h, err := fields.ReadMIMEHeader()
		switch {
		case err != nil && !errors.Is(err, io.EOF):
			return false, fmt.Errorf("%w: feedback report: %w", ErrMalformed, err)
		case len(h) == 0:
			return false, fmt.Errorf("%w: feedback report: no fields", ErrMalformed)
		}
		rep.Feedback = FeedbackFields{
			Type:     strings.ToLower(firstWord(h.Get("Feedback-Type"))),
			MailFrom: bare(h.Get("Original-Mail-From")),
		}
		for _, a := range h.Values("Original-Rcpt-To") {
			if len(rep.Feedback.RcptTo) < MaxAddresses {
				rep.Feedback.RcptTo = append(rep.Feedback.RcptTo, bare(a))
			}
		}
		return true, nil
	case "message/rfc822", "message/global", "text/rfc822-headers", "message/global-headers":
		h, err := fields.ReadMIMEHeader()
		if err != nil && !errors.Is(err, io.EOF) {
			return false, nil // the original is a courtesy: a broken one is left out
		}
		rep.Original.ReturnPath = bare(h.Get("Return-Path"))
		if list, err := mail.ParseAddressList(h.Get("To")); err == nil {
			for _, a := range list[:min(len(list), MaxAddresses)] {
				rep.Original.To = append(rep.Original.To, a.Address)
			}
		}
	}
	return false, nil
}

// readDeliveryStatus reads the blocks of a delivery-status part: the
// per-message fields, then one block per recipient, each ended by a blank
// line. A block with a Final-Recipient is a recipient's.
func (rep *Report) readDeliveryStatus(fields *textproto.Reader) error {
	for range maxBlocks {
		h, err := fields.ReadMIMEHeader()
		if err != nil && !errors.Is(err, io.EOF) {
			return fmt.Errorf("%w: delivery status: %w", ErrMalformed, err)
		}
		if h.Get("Final-Recipient") != "" && len(rep.Recipients) < MaxRecipients {
			rep.Recipients = append(rep.Recipients, recipient(h))
		}
		if err != nil {
			break
		}
	}
	if len(rep.Recipients) == 0 {
		return fmt.Errorf("%w: delivery status: no recipient", ErrMalformed)
	}
	return nil
}

// statusRE matches a DSN's status code (RFC 3463).
var statusRE = regexp.MustCompile(`^[245]\.[0-9]{1,3}\.[0-9]{1,3}$`)

func recipient(h textproto.MIMEHeader) Recipient {
	r := Recipient{
		Final:    address(h.Get("Final-Recipient")),
		Original: address(h.Get("Original-Recipient")),
		Action:   strings.ToLower(firstWord(h.Get("Action"))),
	}
	if s := firstWord(h.Get("Status")); statusRE.MatchString(s) {
		r.Status = s
	}
	r.Reply, r.Diagnostic = diagnostic(h.Get("Diagnostic-Code"), r.Status)
	return r
}

// address reads an address field, "type; address": the address of an
// rfc822 or utf-8 one (RFC 6533's \x{HHHH} escapes undone), else "".
func address(field string) string {
	typ, addr, ok := strings.Cut(field, ";")
	if !ok {
		return ""
	}
	switch strings.ToLower(strings.TrimSpace(typ)) {
	case "rfc822":
		return bare(addr)
	case "utf-8":
		return bare(unescape(addr))
	}
	return ""
}

// unitextRE matches an escaped character of RFC 6533's utf-8 address type.
var unitextRE = regexp.MustCompile(`\\x\{([0-9A-Fa-f]{2,6})\}`)

func unescape(s string) string {
	return unitextRE.ReplaceAllStringFunc(s, func(m string) string {
		n, err := strconv.ParseUint(unitextRE.FindStringSubmatch(m)[1], 16, 32)
		if err != nil || n > 0x10FFFF {
			return m
		}
		return string(rune(n))
	})
}

// diagnostic reads a Diagnostic-Code, "type; text": for an smtp one the
// reply code it quotes, and the text without the reply code (a multi-line
// reply's repeated "550-5.1.1" markers dropped too).
func diagnostic(field, status string) (int, string) {
	typ, text, ok := strings.Cut(field, ";")
	if !ok {
		return 0, strings.TrimSpace(field)
	}
	text = strings.TrimSpace(text)
	if !strings.EqualFold(strings.TrimSpace(typ), "smtp") || len(text) < 4 || (text[3] != ' ' && text[3] != '-') {
		return 0, text
	}
	code, err := strconv.Atoi(text[:3])
	if err != nil || code < 200 || code > 599 {
		return 0, text
	}
	text = text[4:]
	if status != "" {
		for _, sep := range []string{"-", " "} {
			text = strings.ReplaceAll(text, " "+strconv.Itoa(code)+sep+status+" ", " ")
		}
	}
	return code, text
}

// bare is an address without the angle brackets and spaces around it.
func bare(s string) string {
	s = strings.TrimSpace(s)
	if strings.HasPrefix(s, "<") && strings.HasSuffix(s, ">") {
		s = strings.TrimSpace(s[1 : len(s)-1])
	}
	return s
}

// firstWord is s up to the first space or "(" (a comment), trimmed.
func firstWord(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.IndexAny(s, " \t("); i >= 0 {
		s = s[:i]
	}
	return s
}
