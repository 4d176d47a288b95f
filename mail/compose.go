package mail

import (
	"bytes"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"mime"
	netmail "net/mail"
	"slices"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"gopkg.in/gomail.v2"

	"github.com/verifyq/verifyq/codes"
)

// ErrInvalidMessage is wrapped by Compose and Send errors about a Message
// that can never be sent as is (bad code, lifetime or purpose).
var ErrInvalidMessage = errors.New("invalid message")

// maxCodeLen bounds the length of a verification code.
const maxCodeLen = 64

// Message is one verification mail.
type Message struct {
	// To is the recipient, a bare address (see ValidateAddress).
	To string
	// Locale selects the language; empty means DefaultLocale.
	Locale Locale
	// Code is the verification code: 1 to 64 printable ASCII characters
	// without spaces. It only ever appears in the body.
	Code string
	// ExpiresIn is the code's remaining lifetime; it must be positive. The
	// mail states it in whole minutes, rounded up.
	ExpiresIn time.Duration
	// Purpose is what the code is for (see codes.ValidatePurpose); it picks
	// the wording of that purpose (TemplateData.Phrases) and its templates
	// when there are any. Empty is the default purpose.
	Purpose string
}

// Compose builds the verification mail for m with the embedded templates,
// without an app name, a link or a Reply-To; see Templates.Compose.
func Compose(from string, m Message) (*Composed, error) {
	return DefaultTemplates().Compose(from, "", m)
}

// Composed is one composed verification mail. Its WriteTo writes it as it
// is sent in DATA, the header fields in a fixed order (see Compose).
type Composed struct {
	// raw is the whole mail, when it was made from prepared parts
	// (prepare); otherwise msg is, built with gomail.
	raw  []byte
	msg  *gomail.Message
	size int // about the size written, to size the buffer once
}

// headerOrder is the order of the header fields of every mail; gomail
// writes them from a map, in an order that changes from one write to the
// next. A field missing from a mail (Reply-To) is skipped.
var headerOrder = []string{
	"From", "To", "Subject", "Date", "Message-ID", "Mime-Version",
	"Content-Language", "Auto-Submitted", "Reply-To", "Content-Type",
}

// WriteTo writes the mail to w: its prepared bytes, or gomail's message
// with its header fields put in headerOrder (each such write has a new
// MIME boundary).
func (c *Composed) WriteTo(w io.Writer) (int64, error) {
	if c.raw != nil {
		n, err := w.Write(c.raw)
		return int64(n), err
	}
	var buf bytes.Buffer
	buf.Grow(c.size)
	if _, err := c.msg.WriteTo(&buf); err != nil {
		return 0, fmt.Errorf("mail: write: %w", err)
	}
	head, body, ok := bytes.Cut(buf.Bytes(), []byte("\r\n\r\n"))
	if !ok {
		return 0, errors.New("mail: write: no end of header")
	}
	fields := headerFields(head)
	slices.SortStableFunc(fields, func(a, b []byte) int { return headerRank(a) - headerRank(b) })
	header := make([]byte, 0, len(head)+4)
	for _, f := range fields {
		header = append(append(header, f...), "\r\n"...)
	}
	header = append(header, "\r\n"...)
	n, err := w.Write(header)
	if err != nil {
		return int64(n), err
	}
	m, err := w.Write(body)
	return int64(n + m), err
}

// headerFields splits a header block into its fields, each with its folded
// continuation lines and without the final CRLF.
func headerFields(head []byte) [][]byte {
	var fields [][]byte
	for len(head) > 0 {
		end := 0
		for {
			i := bytes.Index(head[end:], []byte("\r\n"))
			if i < 0 {
				end = len(head)
				break
			}
			end += i
			if end+2 >= len(head) || (head[end+2] != ' ' && head[end+2] != '\t') {
				break
			}
			end += 2 // a continuation line
		}
		fields = append(fields, head[:end])
		head = head[min(end+2, len(head)):]
	}
	return fields
}

// headerRank is the place of field's name in headerOrder; a field not in it
// goes last.
func headerRank(field []byte) int {
	name, _, _ := bytes.Cut(field, []byte(":"))
	for i, h := range headerOrder {
		if strings.EqualFold(string(name), h) {
			return i
		}
	}
	return len(headerOrder)
}

// Compose builds the verification mail for m from t's templates for
// m.Purpose and m.Locale, sent from from (a bare address or "Name
// <address>") with an optional Reply-To, replyTo (the same forms; "" for
// none). The result is multipart/alternative with a text/plain and a
// text/html part, both stating the code and the lifetime in whole minutes,
// rounded up, and the link when t has one; each part is quoted-printable
// or, when that is shorter (Chinese text), base64. The header fields are,
// in this order, From, To, Subject, Date, Message-ID, Mime-Version,
// Content-Language (m's locale), Auto-Submitted, Reply-To when set, and
// Content-Type; the code and the link are never put in a header.
//
// Errors wrap ErrInvalidAddress (From, Reply-To or To), ErrUnknownLocale or
// ErrInvalidMessage.
func (t *Templates) Compose(from, replyTo string, m Message) (*Composed, error) {
	s, err := t.sender(from, replyTo)
	if err != nil {
		return nil, err
	}
	return t.compose(s, m)
}

// compose builds the mail of m from s, parsed (Templates.Compose).
func (t *Templates) compose(s *sender, m Message) (*Composed, error) {
	if err := ValidateAddress(m.To); err != nil {
		return nil, fmt.Errorf("mail: recipient: %w", err)
	}
	loc, err := ParseLocale(string(m.Locale))
	if err != nil {
		return nil, fmt.Errorf("mail: %w", err)
	}
	if err := validateCode(m.Code); err != nil {
		return nil, err
	}
	if m.ExpiresIn <= 0 {
		return nil, fmt.Errorf("mail: %w: non-positive lifetime", ErrInvalidMessage)
	}
	if err := codes.ValidatePurpose(m.Purpose); err != nil {
		return nil, fmt.Errorf("mail: %w: purpose: %w", ErrInvalidMessage, err)
	}
	minutes := minutesUp(m.ExpiresIn)
	if p := t.prepared(s, m.Purpose, loc, minutes); p.fits(m.To, m.Code) {
		return p.compose(m.To, m.Code)
	}
	msgID, err := messageID(s.from.Address)
	if err != nil {
		return nil, err
	}
	return t.renderMail(s, m.To, m.Code, m.Purpose, loc, minutes, time.Now(), msgID)
}

// renderMail builds the mail with gomail, rendering its templates: every mail
// whose templates cannot be prepared (see prepare) is built this way.
func (t *Templates) renderMail(s *sender, to, code, purpose string, loc Locale, minutes int64, date time.Time, msgID string) (*Composed, error) {
	var replyAddr string
	if s.reply != nil {
		replyAddr = s.reply.Address
	}
	data := t.data(purpose, loc, to, code, minutes, replyAddr)
	subject, text, html, err := t.render(t.lookup(purpose, loc), data)
	if err != nil {
		return nil, fmt.Errorf("mail: render: %w", err)
	}
	g := gomail.NewMessage(gomail.SetCharset("UTF-8"), gomail.SetEncoding(gomail.QuotedPrintable))
	g.SetAddressHeader("From", formatAddress(g, "From", s.from), "")
	if s.reply != nil {
		g.SetAddressHeader("Reply-To", formatAddress(g, "Reply-To", s.reply), "")
	}
	g.SetAddressHeader("To", ASCIIDomain(to), "")
	g.SetHeader("Subject", encodeSubject(subject))
	g.SetDateHeader("Date", date)
	g.SetHeader("Message-ID", msgID)
	g.SetHeader("Content-Language", string(loc))
	g.SetHeader("Auto-Submitted", "auto-generated")
	text, html = canonicalLines(text), canonicalLines(html)
	g.SetBody("text/plain", text, gomail.SetPartEncoding(partEncoding(text)))
	g.AddAlternative("text/html", html, gomail.SetPartEncoding(partEncoding(html)))
	// Each part takes at most about 4/3 of its size once encoded (base64,
	// or quoted-printable when shorter); the header about 1 KiB.
	return &Composed{msg: g, size: (len(text)+len(html))*3/2 + 1024}, nil
}

// encodeSubject returns the subject as RFC 2047 encoded words, Q or B
// encoding, whichever is shorter; printable ASCII stays as it is. The
// words are separated by a space, where gomail folds the field when a
// line would pass 76 characters: the first word fits after "Subject: "
// and each other one after the fold's space, so that no line of the field
// is longer than 76 characters (RFC 2047, 2). mime's encoder makes words
// of up to 75 characters, which gomail cannot fold within that.
func encodeSubject(s string) string {
	if mime.QEncoding.Encode("UTF-8", s) == s {
		return s
	}
	const first = 76 - len("Subject: ") - 1
	q, b := encodeWords(s, 'q', first), encodeWords(s, 'b', first)
	if len(b) < len(q) {
		return b
	}
	return q
}

// formatAddress returns a as the value of the header field named field,
// for gomail to write as it is: the address alone without a name, a name
// of printable ASCII as gomail quotes it, and any other name as B-encoded
// words folded as the subject's are (encodeWords). gomail's own encoding
// of a name makes words it cannot fold within 76 characters, and leaves
// in Q-encoded words characters that RFC 2047 (5) keeps out of a name.
func formatAddress(g *gomail.Message, field string, a *netmail.Address) string {
	if a.Name == "" || mime.QEncoding.Encode("UTF-8", a.Name) == a.Name {
		return g.FormatAddress(a.Address, a.Name)
	}
	return encodeWords(a.Name, 'b', 76-len(field+": ")-1) + " <" + a.Address + ">"
}

// wordLen bounds an encoded word past the first of a header field: gomail
// folds a line at the last space before its 76th character, counting the
// fold's space, so each word and the space after it must fit there.
const wordLen = 76 - len(" ") - 1

// encodeWords returns s as encoded words of the UTF-8 charset in the
// encoding enc ('q' or 'b'), separated by a space, the first at most
// first characters (what is left of the field's first line but the
// space after it) and the others wordLen; each word ends where a
// character does, and so decodes on its own.
func encodeWords(s string, enc byte, first int) string {
	var words []string
	limit, start := first, 0
	for i := 0; i < len(s); {
		_, size := utf8.DecodeRuneInString(s[i:])
		if i > start && encodedWordLen(s[start:i+size], enc) > limit {
			words = append(words, encodeWord(s[start:i], enc))
			start, limit = i, wordLen
		}
		i += size
	}
	return strings.Join(append(words, encodeWord(s[start:], enc)), " ")
}

// encodeWord returns chunk as one encoded word; in Q encoding, a space is
// "_" and printable ASCII but "=", "?" and "_" stays as it is, as mime's
// encoder has it.
func encodeWord(chunk string, enc byte) string {
	b := make([]byte, 0, encodedWordLen(chunk, enc))
	b = append(append(b, "=?UTF-8?"...), enc, '?')
	if enc == 'b' {
		b = base64.StdEncoding.AppendEncode(b, []byte(chunk))
	} else {
		const hex = "0123456789ABCDEF"
		for i := 0; i < len(chunk); i++ {
			switch c := chunk[i]; {
			case c == ' ':
				b = append(b, '_')
			case qPlain(c):
				b = append(b, c)
			default:
				b = append(b, '=', hex[c>>4], hex[c&15])
			}
		}
	}
	return string(append(b, "?="...))
}

// encodedWordLen is len(encodeWord(chunk, enc)).
func encodedWordLen(chunk string, enc byte) int {
	n := len("=?UTF-8?q??=")
	if enc == 'b' {
		return n + base64.StdEncoding.EncodedLen(len(chunk))
	}
	for i := 0; i < len(chunk); i++ {
		if c := chunk[i]; c == ' ' || qPlain(c) {
			n++
		} else {
			n += 3
		}
	}
	return n
}

// qPlain reports whether c stands for itself in a Q-encoded word.
func qPlain(c byte) bool { return c > ' ' && c <= '~' && c != '=' && c != '?' && c != '_' }

// canonicalLines ends every line of a rendered part with CRLF, as a text
// part is sent (RFC 2045, 6.8); the quoted-printable writer would do the
// same, base64 keeps what it is given.
func canonicalLines(s string) string {
	if !strings.ContainsAny(s, "\r\n") {
		return s
	}
	s = strings.ReplaceAll(s, "\r\n", "\n")
	s = strings.ReplaceAll(s, "\r", "\n")
	return strings.ReplaceAll(s, "\n", "\r\n")
}

// qpLineLen is the longest encoded line of quoted-printable before its soft
// line break "=" (RFC 2045, 6.7: 76 characters in all).
const qpLineLen = 75

// partEncoding returns the shorter transfer encoding of body, a part with
// CRLF line ends: quoted-printable, where printable ASCII stays as it is,
// or base64, where every 3 bytes take 4 whatever they are. It counts the
// encoded length of both without encoding.
func partEncoding[T string | []byte](body T) gomail.Encoding {
	qp, line := 0, 0
	for i := 0; i < len(body); i++ {
		c := body[i]
		if c == '\r' && i+1 < len(body) && body[i+1] == '\n' {
			qp, line = qp+2, 0
			i++
			continue
		}
		n := 1
		if c == '=' || c > '~' || (c < ' ' && c != '\t') {
			n = 3 // =XX
		}
		if line+n > qpLineLen {
			qp, line = qp+3, 0 // =CRLF
		}
		qp, line = qp+n, line+n
	}
	b64 := base64.StdEncoding.EncodedLen(len(body))
	b64 += (b64 + maxBase64Line - 1) / maxBase64Line * 2 // CRLF after each line
	if b64 < qp {
		return gomail.Base64
	}
	return gomail.QuotedPrintable
}

// maxBase64Line is the length of a line of base64 (RFC 2045, 6.8).
const maxBase64Line = 76

// parseFrom parses a sender given as a bare address or "Name <address>".
// Its address has its domain as an A-label (ASCIIDomain), as the
// recipient's: the envelope sender then needs no SMTPUTF8 for its domain
// alone, and the From, the Reply-To and the Message-ID (in From's domain)
// stay ASCII.
func parseFrom(from string) (*netmail.Address, error) {
	if strings.ContainsFunc(from, unicode.IsControl) {
		return nil, fmt.Errorf("%w: contains a control character", ErrInvalidAddress)
	}
	a, err := netmail.ParseAddress(from)
	if err != nil {
		return nil, fmt.Errorf("%w: malformed", ErrInvalidAddress)
	}
	if err := ValidateAddress(a.Address); err != nil {
		return nil, err
	}
	a.Address = ASCIIDomain(a.Address)
	return a, nil
}

func validateCode(code string) error {
	if code == "" || len(code) > maxCodeLen {
		return fmt.Errorf("mail: %w: code must be 1 to %d characters", ErrInvalidMessage, maxCodeLen)
	}
	for i := 0; i < len(code); i++ {
		if c := code[i]; c <= ' ' || c > '~' {
			return fmt.Errorf("mail: %w: code must be printable ASCII without spaces", ErrInvalidMessage)
		}
	}
	return nil
}

// minutesUp returns d in whole minutes, rounded up, at least 1.
func minutesUp(d time.Duration) int64 {
	m := int64(d / time.Minute)
	if d%time.Minute != 0 {
		m++
	}
	return max(m, 1)
}

// messageID returns a random RFC 5322 Message-ID in the sender's domain.
func messageID(sender string) (string, error) {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", fmt.Errorf("mail: message id: %w", err)
	}
	domain := sender[strings.LastIndexByte(sender, '@')+1:]
	return "<" + hex.EncodeToString(b[:]) + "@" + domain + ">", nil
}
