package smtptest

import (
	"bytes"
	"encoding/base64"
	"io"
	"mime"
	"mime/multipart"
	"mime/quotedprintable"
	"net/mail"
	"strings"
	"time"
)

// Message is a message accepted by the server.
type Message struct {
	// From is the envelope sender (MAIL FROM).
	From string
	// To holds the envelope recipients (RCPT TO).
	To []string
	// Raw is the message data as received, headers included.
	Raw []byte
	// Header is the parsed top-level header; nil if Raw is not a valid
	// message.
	Header mail.Header
	// Subject is the decoded Subject header.
	Subject string
	// Text is the decoded body of the first text/plain part.
	Text string
	// HTML is the decoded body of the first text/html part.
	HTML string
	// TLS reports whether the message arrived over TLS (implicit or
	// STARTTLS).
	TLS bool
	// Accepted is when the server accepted the message: the moment it
	// recorded it, just before answering the end of DATA (after any
	// latency set with SetLatency).
	Accepted time.Time
}

// ParseMessage decodes raw message data the way the server does for
// recorded messages: it fills Raw, Header, Subject, Text and HTML (not the
// envelope or TLS fields). A malformed message keeps its Raw bytes and leaves
// the other fields empty. It lets tests inspect a composed message without
// sending it.
func ParseMessage(raw []byte) Message {
	m := Message{Raw: raw}
	msg, err := mail.ReadMessage(bytes.NewReader(raw))
	if err != nil {
		return m
	}
	m.Header = msg.Header
	dec := new(mime.WordDecoder)
	if subj, err := dec.DecodeHeader(msg.Header.Get("Subject")); err == nil {
		m.Subject = subj
	} else {
		m.Subject = msg.Header.Get("Subject")
	}
	m.walk(msg.Header.Get("Content-Type"), msg.Header.Get("Content-Transfer-Encoding"), msg.Body)
	return m
}

// walk decodes one MIME entity and fills Text and HTML, recursing into
// multipart entities.
func (m *Message) walk(contentType, encoding string, body io.Reader) {
	mediaType, params, err := mime.ParseMediaType(contentType)
	if err != nil || contentType == "" {
		mediaType = "text/plain"
	}
	if strings.HasPrefix(mediaType, "multipart/") {
		mr := multipart.NewReader(body, params["boundary"])
		for {
			p, err := mr.NextRawPart()
			if err != nil {
				return
			}
			m.walk(p.Header.Get("Content-Type"), p.Header.Get("Content-Transfer-Encoding"), p)
		}
	}

	r := body
	switch strings.ToLower(strings.TrimSpace(encoding)) {
	case "quoted-printable":
		r = quotedprintable.NewReader(body)
	case "base64":
		r = base64.NewDecoder(base64.StdEncoding, &newlineStripper{r: body})
	}
	data, err := io.ReadAll(r)
	if err != nil {
		return
	}
	switch mediaType {
	case "text/plain":
		if m.Text == "" {
			m.Text = string(data)
		}
	case "text/html":
		if m.HTML == "" {
			m.HTML = string(data)
		}
	}
}

// newlineStripper drops CR and LF so that line-wrapped base64 decodes.
type newlineStripper struct{ r io.Reader }

func (n *newlineStripper) Read(p []byte) (int, error) {
	for {
		c, err := n.r.Read(p)
		j := 0
		for _, b := range p[:c] {
			if b != '\r' && b != '\n' {
				p[j] = b
				j++
			}
		}
		if j > 0 || err != nil {
			return j, err
		}
	}
}
