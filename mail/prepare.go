package mail

import (
	"bytes"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"mime/quotedprintable"
	netmail "net/mail"
	"net/url"
	"slices"
	"strings"
	"text/template/parse"
	"time"

	"gopkg.in/gomail.v2"
)

// The mails of one sender, purpose, locale and lifetime in minutes differ
// only in the recipient, the code, the Date, the Message-ID and the MIME
// boundary. Templates render such a mail once, with stand-ins for the
// recipient and the code, and keep it as prepared parts: the header
// fields that stay the same, and the text and the HTML part as the pieces
// between the places of the code and of the address (which only the link
// holds). A mail is then those pieces put together and encoded, without
// running a template.
//
// A mail is made so only when that gives the very bytes rendering gives
// (but for the Date, the Message-ID and the boundary): its templates use
// the code and the link only as they are, or to test that they are set
// (splittable); the stand-ins land in both parts as they are and nowhere
// else (two renderings with different stand-ins agree); the header comes
// out as gomail writes it (one mail built both ways is the same); and the
// mail's own code and address are of the kinds the stand-ins stood for
// (prepared.fits). Any other mail is rendered.

// maxSenders bounds the senders (From and Reply-To) kept parsed, those
// of Authors (NewAuthor) and of Templates.Compose alike, and only their
// mails are prepared; maxPrepared and maxPreparedBytes bound the mails
// kept prepared, in number and in the bytes of their sample mails. Past
// them mails are still made, parsing (Templates.Compose) or rendering as
// they go. A worker with one sender, the default purposes and codes of 10
// minutes prepares 5 purposes x 10 locales x 10 lifetimes in minutes, 500
// mails of some 5 KB each; the bounds leave room for a few senders or
// longer lifetimes. Templates of MAIL_TEMPLATES_DIR may render parts of up
// to 256 KiB each, and a code of a day's lifetime has 1440 lifetimes in
// minutes: the bytes bound the memory such mails take.
const (
	maxSenders       = 16
	maxPrepared      = 2048
	maxPreparedBytes = 16 << 20
)

// sender is a mail's From and optional Reply-To, parsed.
type sender struct {
	key         senderKey
	from, reply *netmail.Address
	kept        bool // in Templates.senders: its mails may be prepared
}

type senderKey struct{ from, replyTo string }

// sender returns from and replyTo ("" for none) parsed: the sender t
// keeps of the pair, or the pair parsed now and kept when there is room
// (keep). Errors wrap ErrInvalidAddress.
func (t *Templates) sender(from, replyTo string) (*sender, error) {
	k := senderKey{from, replyTo}
	if v, ok := t.senders.Load(k); ok {
		return v.(*sender), nil
	}
	s := &sender{key: k}
	var err error
	if s.from, err = parseFrom(from); err != nil {
		return nil, fmt.Errorf("mail: from: %w", err)
	}
	if replyTo != "" {
		if s.reply, err = parseFrom(replyTo); err != nil {
			return nil, fmt.Errorf("mail: reply-to: %w", err)
		}
	}
	return t.keep(s), nil
}

// keep returns the sender t keeps of s's key: the one kept before, s
// itself kept when fewer than maxSenders are, or else s, not kept (its
// mails are rendered).
func (t *Templates) keep(s *sender) *sender {
	if v, ok := t.senders.Load(s.key); ok {
		return v.(*sender)
	}
	// Counted only while there is room: a count past the bound on every
	// sender not kept would wrap around after 2^31 of them.
	if t.nSenders.Load() < maxSenders && t.nSenders.Add(1) <= maxSenders {
		s.kept = true
		if v, loaded := t.senders.LoadOrStore(s.key, s); loaded {
			return v.(*sender)
		}
	}
	return s
}

// preparedKey names the mails one prepared stands for.
type preparedKey struct {
	sender  senderKey
	purpose string
	loc     Locale
	minutes int64
}

// prepared returns the prepared mail of s, purpose, loc and minutes, making
// it the first time; nil when such mails are rendered.
func (t *Templates) prepared(s *sender, purpose string, loc Locale, minutes int64) *prepared {
	if !s.kept {
		return nil
	}
	k := preparedKey{s.key, purpose, loc, minutes}
	if v, ok := t.mails.Load(k); ok {
		return v.(*prepared)
	}
	if t.nPrepared.Add(1) > maxPrepared {
		t.nPrepared.Add(-1)
		return nil
	}
	p := t.prepare(s, purpose, loc, minutes)
	if p != nil && t.preparedBytes.Add(int64(p.size)) > maxPreparedBytes {
		// Past the bytes' bound: such mails are rendered, and kept so.
		t.preparedBytes.Add(-int64(p.size))
		p = nil
	}
	v, loaded := t.mails.LoadOrStore(k, p)
	if loaded {
		t.nPrepared.Add(-1)
		if p != nil {
			t.preparedBytes.Add(-int64(p.size))
		}
	}
	return v.(*prepared)
}

// standIns are the codes and recipients a mail is prepared with: digits
// of two lengths for the code, and two addresses whose query-escaped forms
// (as the link holds them) have every kind of character one can have but
// "+" (from a space, which fits turns away).
var standIns = [2]struct{ code, to string }{
	{"5820193746", "a1.b-c_d~e+f@g2-h.example"},
	{"73019", "zq+9@x.example.org"},
}

// prepared is a mail with places for its recipient, code, Date,
// Message-ID and boundary.
type prepared struct {
	from    []byte // "From: ...\r\nTo: "
	subject []byte // "\r\nSubject: ...\r\nDate: "
	tail    []byte // "Mime-Version: ..." to "Content-Type: ...; boundary="
	domain  string // of the Message-ID
	link    bool   // the parts hold the address (in the link)
	text    pieces
	html    pieces
	size    int // of the sample mail, to size a mail's buffer once
}

// pieces is a part of a mail, CRLF line ends and all: segs with the code
// or the query-escaped address between each two.
type pieces struct {
	segs  []string
	holes []hole // len(segs)-1
	size  int    // of the segs
}

type hole uint8

const (
	holeCode hole = iota
	holeAddress
)

// fits reports whether p, when not nil, makes the mail to to of code:
// a code of digits (as verifyq makes them) and an address without a space.
func (p *prepared) fits(to, code string) bool {
	if p == nil || strings.IndexByte(to, ' ') >= 0 {
		return false
	}
	for i := 0; i < len(code); i++ {
		if code[i] < '0' || code[i] > '9' {
			return false
		}
	}
	return true
}

// compose makes the mail to to of code, dated now with a new Message-ID
// and MIME boundary.
func (p *prepared) compose(to, code string) (*Composed, error) {
	var r [16 + 30]byte // as messageID and mime/multipart take them
	if _, err := rand.Read(r[:]); err != nil {
		return nil, fmt.Errorf("mail: message id: %w", err)
	}
	msgID := "<" + hex.EncodeToString(r[:16]) + "@" + p.domain + ">"
	raw := p.write(make([]byte, 0, p.size+64), to, code, time.Now(), msgID, hex.EncodeToString(r[16:]))
	return &Composed{raw: raw}, nil
}

// write appends the mail to to of code to b, with date, msgID and
// boundary: the header fields, then the text and the HTML part as
// mime/multipart frames them.
func (p *prepared) write(b []byte, to, code string, date time.Time, msgID, boundary string) []byte {
	var addr string
	if p.link {
		addr = url.QueryEscape(to)
	}
	b = append(b, p.from...)
	b = append(b, ASCIIDomain(to)...)
	b = append(b, p.subject...)
	b = date.AppendFormat(b, time.RFC1123Z)
	b = append(b, "\r\nMessage-ID: "...)
	b = append(b, msgID...)
	b = append(b, "\r\n"...)
	b = append(b, p.tail...)
	b = append(b, boundary...)
	b = append(b, "\r\n\r\n--"...)
	var scratch [4096]byte
	part := p.text.fill(scratch[:0], code, addr)
	b = appendPart(b, boundary, "text/plain", part)
	b = append(b, "\r\n--"...)
	part = p.html.fill(part[:0], code, addr)
	b = appendPart(b, boundary, "text/html", part)
	b = append(b, "\r\n--"...)
	b = append(b, boundary...)
	return append(b, "--\r\n"...)
}

// appendPart appends to b the rest of the boundary line and the part of
// type typ with body in the encoding partEncoding picks, as gomail
// encodes it.
func appendPart(b []byte, boundary, typ string, body []byte) []byte {
	enc := partEncoding(body)
	b = append(b, boundary...)
	b = append(b, "\r\nContent-Transfer-Encoding: "...)
	b = append(b, enc...)
	b = append(b, "\r\nContent-Type: "...)
	b = append(b, typ...)
	b = append(b, "; charset=UTF-8\r\n\r\n"...)
	if enc == gomail.Base64 {
		// In lines of maxBase64Line characters, CRLF between them.
		const line = maxBase64Line / 4 * 3
		for len(body) > line {
			b = append(base64.StdEncoding.AppendEncode(b, body[:line]), "\r\n"...)
			body = body[line:]
		}
		return base64.StdEncoding.AppendEncode(b, body)
	}
	w := &appender{b: b}
	qp := quotedprintable.NewWriter(w)
	_, _ = qp.Write(body) // an appender takes every write
	_ = qp.Close()
	return w.b
}

// appender is an io.Writer that appends to b.
type appender struct{ b []byte }

func (a *appender) Write(p []byte) (int, error) {
	a.b = append(a.b, p...)
	return len(p), nil
}

// fill appends the part with code and addr in their places to dst.
func (ps *pieces) fill(dst []byte, code, addr string) []byte {
	dst = append(dst, ps.segs[0]...)
	for i, h := range ps.holes {
		if h == holeCode {
			dst = append(dst, code...)
		} else {
			dst = append(dst, addr...)
		}
		dst = append(dst, ps.segs[i+1]...)
	}
	return dst
}

// split cuts s at every code and addr ("" for none) in it.
func split(s, code, addr string) pieces {
	ps := pieces{size: len(s)}
	for {
		i, h, n := strings.Index(s, code), holeCode, len(code)
		if addr != "" {
			if j := strings.Index(s, addr); j >= 0 && (i < 0 || j < i) {
				i, h, n = j, holeAddress, len(addr)
			}
		}
		if i < 0 {
			ps.segs = append(ps.segs, s)
			return ps
		}
		ps.segs, ps.holes = append(ps.segs, s[:i]), append(ps.holes, h)
		ps.size -= n
		s = s[i+n:]
	}
}

// sampleDate is the Date of the mail prepare checks against one rendered.
var sampleDate = time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC)

// prepare prepares the mail of s, purpose, loc and minutes; it returns nil
// when such mails must be rendered (see above).
func (t *Templates) prepare(s *sender, purpose string, loc Locale, minutes int64) *prepared {
	set := t.lookup(purpose, loc)
	domain := s.from.Address[strings.LastIndexByte(s.from.Address, '@')+1:]
	if !set.splits || !IsASCII(domain) { // gomail would encode a Message-ID in another domain
		return nil
	}
	var replyAddr string
	if s.reply != nil {
		replyAddr = s.reply.Address
	}
	var subjects, texts, htmls [2]string
	for i, in := range standIns {
		subject, text, html, err := t.render(set, t.data(purpose, loc, in.to, in.code, minutes, replyAddr))
		if err != nil {
			return nil
		}
		subjects[i], texts[i], htmls[i] = subject, canonicalLines(text), canonicalLines(html)
	}
	addr := [2]string{url.QueryEscape(standIns[0].to), url.QueryEscape(standIns[1].to)}
	p := &prepared{domain: domain, text: split(texts[0], standIns[0].code, addr[0]), html: split(htmls[0], standIns[0].code, addr[0])}
	p.link = slices.Contains(p.text.holes, holeAddress) || slices.Contains(p.html.holes, holeAddress)
	if subjects[0] != subjects[1] ||
		string(p.text.fill(nil, standIns[1].code, addr[1])) != texts[1] ||
		string(p.html.fill(nil, standIns[1].code, addr[1])) != htmls[1] {
		return nil
	}

	// The header fields as gomail writes them, from a mail rendered.
	in := standIns[0]
	msgID := "<" + strings.Repeat("0", 32) + "@" + domain + ">"
	c, err := t.renderMail(s, in.to, in.code, purpose, loc, minutes, sampleDate, msgID)
	if err != nil {
		return nil
	}
	var buf bytes.Buffer
	if _, err := c.WriteTo(&buf); err != nil {
		return nil
	}
	want := buf.Bytes()
	head, _, _ := bytes.Cut(want, []byte("\r\n\r\n"))
	fields := headerFields(head)
	if len(fields) < 5 {
		return nil
	}
	boundary := string(fields[len(fields)-1][bytes.LastIndexByte(fields[len(fields)-1], '=')+1:])
	p.from = append(append([]byte{}, fields[0]...), "\r\nTo: "...)
	p.subject = append(append([]byte("\r\n"), fields[2]...), "\r\nDate: "...)
	for _, f := range fields[5 : len(fields)-1] {
		p.tail = append(append(p.tail, f...), "\r\n"...)
	}
	p.tail = append(p.tail, "Content-Type: multipart/alternative;\r\n boundary="...)
	if !bytes.Equal(p.write(nil, in.to, in.code, sampleDate, msgID, boundary), want) {
		return nil
	}
	p.size = len(want)
	return p
}

// dotKind is what dot holds where a template node runs, as splittable
// follows it.
type dotKind uint8

const (
	dotData  dotKind = iota // the TemplateData
	dotHole                 // the code or the link
	dotOther                // anything else
)

// holeFields are the fields of TemplateData that change from one mail to
// the next of one prepared mail.
var holeFields = []string{"Code", "Link"}

// splittable reports whether every use of the code and the link in trees
// leaves them as they are: printed ({{.Code}}, {{$.Link}}, {{.}} in
// {{with .Link}}; html/template's escapers after them), when prints allows
// it, or tested for being set ({{if .Code}}, {{with .Link}}), which is the
// same for every mail of one Templates. Any other use (a comparison, a
// function of them, a variable) makes the mails of the set rendered.
func splittable(trees []*parse.Tree, prints bool) bool {
	for _, tr := range trees {
		if tr != nil && !splitsNode(tr.Root, dotData, prints) {
			return false
		}
	}
	return true
}

func splitsNode(n parse.Node, dot dotKind, prints bool) bool {
	switch n := n.(type) {
	case *parse.ListNode:
		if n == nil {
			return true
		}
		for _, c := range n.Nodes {
			if !splitsNode(c, dot, prints) {
				return false
			}
		}
		return true
	case *parse.ActionNode:
		if isHole(n.Pipe, dot, true) {
			return prints
		}
		return !refersToHole(n.Pipe, dot)
	case *parse.IfNode:
		return splitsBranch(&n.BranchNode, dot, prints, false)
	case *parse.WithNode:
		return splitsBranch(&n.BranchNode, dot, prints, true)
	case *parse.RangeNode:
		return !refersToHole(n.Pipe, dot) && splitsNode(n.List, dotOther, prints) && splitsNode(n.ElseList, dot, prints)
	case *parse.TemplateNode:
		// The templates a set defines are checked on their own, with dot
		// the TemplateData.
		return n.Pipe == nil || isData(n.Pipe, dot) || !refersToHole(n.Pipe, dot)
	default: // text, comments, break and continue
		return true
	}
}

func splitsBranch(b *parse.BranchNode, dot dotKind, prints, with bool) bool {
	inner := dot
	switch {
	case isHole(b.Pipe, dot, false):
		if with {
			inner = dotHole
		}
	case isData(b.Pipe, dot): // {{with .}}
	case refersToHole(b.Pipe, dot):
		return false
	case with:
		inner = dotOther
	}
	return splitsNode(b.List, inner, prints) && splitsNode(b.ElseList, dot, prints)
}

// isHole reports whether pipe is the code or the link alone, followed by
// html/template's escapers when escapers allows them.
func isHole(pipe *parse.PipeNode, dot dotKind, escapers bool) bool {
	if pipe == nil || len(pipe.Decl) > 0 || len(pipe.Cmds) == 0 || len(pipe.Cmds[0].Args) != 1 {
		return false
	}
	for _, c := range pipe.Cmds[1:] {
		id, ok := c.Args[0].(*parse.IdentifierNode)
		if !escapers || len(c.Args) != 1 || !ok || !strings.HasPrefix(id.Ident, "_html_template_") {
			return false
		}
	}
	switch a := pipe.Cmds[0].Args[0].(type) {
	case *parse.FieldNode:
		return dot == dotData && len(a.Ident) == 1 && isHoleField(a.Ident[0])
	case *parse.VariableNode:
		return len(a.Ident) == 2 && a.Ident[0] == "$" && isHoleField(a.Ident[1])
	case *parse.DotNode:
		return dot == dotHole
	}
	return false
}

// isData reports whether pipe is the TemplateData alone: "." where dot is,
// or "$".
func isData(pipe *parse.PipeNode, dot dotKind) bool {
	if len(pipe.Decl) > 0 || len(pipe.Cmds) != 1 || len(pipe.Cmds[0].Args) != 1 {
		return false
	}
	switch a := pipe.Cmds[0].Args[0].(type) {
	case *parse.DotNode:
		return dot == dotData
	case *parse.VariableNode:
		return len(a.Ident) == 1 && a.Ident[0] == "$"
	}
	return false
}

// refersToHole reports whether n may read the code or the link: a field
// of them, dot where it is one of them or the whole TemplateData, or "$".
func refersToHole(n parse.Node, dot dotKind) bool {
	switch n := n.(type) {
	case *parse.PipeNode:
		if n == nil {
			return false
		}
		for _, c := range n.Cmds {
			if refersToHole(c, dot) {
				return true
			}
		}
	case *parse.CommandNode:
		for _, a := range n.Args {
			if refersToHole(a, dot) {
				return true
			}
		}
	case *parse.FieldNode:
		return dot == dotHole || (dot == dotData && isHoleField(n.Ident[0]))
	case *parse.VariableNode:
		return n.Ident[0] == "$" && (len(n.Ident) == 1 || isHoleField(n.Ident[1]))
	case *parse.DotNode:
		return dot != dotOther
	case *parse.ChainNode:
		return refersToHole(n.Node, dot)
	}
	return false
}

func isHoleField(name string) bool {
	for _, f := range holeFields {
		if name == f {
			return true
		}
	}
	return false
}
