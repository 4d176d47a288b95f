package mtatest

import (
	"cmp"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// maxMailFiles bounds the messages read from one Maildir folder.
const maxMailFiles = 10000

// Mail is one delivered message.
type Mail struct {
	Mailbox string // the local part
	Raw     []byte // as delivered, with Postfix's Return-Path, Delivered-To and Received
}

// Mails returns every message delivered so far to every mailbox, mailbox
// by mailbox: those taken by WaitMail, then the others, each group in
// delivery order.
func (p *Postfix) Mails(t testing.TB) []Mail {
	t.Helper()
	var all []Mail
	for _, box := range slices.Sorted(slices.Values(p.opts.Mailboxes)) {
		for _, sub := range []string{"cur", "new"} {
			raws, err := p.readFolder(box, sub)
			if err != nil {
				t.Fatal(err)
			}
			for _, raw := range raws {
				all = append(all, Mail{Mailbox: box, Raw: raw})
			}
		}
	}
	return all
}

// WaitMail waits until a new message is in mailbox (a local part or an
// address of the domain), takes the oldest (moves it from new/ to cur/, so
// the next WaitMail waits for the next message) and returns it. It fails
// the test after timeout, quoting the log's tail.
func (p *Postfix) WaitMail(t testing.TB, mailbox string, timeout time.Duration) []byte {
	t.Helper()
	box := mailboxName(mailbox)
	if !slices.Contains(p.opts.Mailboxes, box) {
		t.Fatalf("mtatest: no mailbox %q (have %v)", box, p.opts.Mailboxes)
	}
	newDir := filepath.Join(p.files.mail, box, "new")
	deadline := time.Now().Add(timeout)
	for {
		names, err := folderNames(newDir)
		if err != nil {
			t.Fatal(err)
		}
		if len(names) > 0 {
			src := filepath.Join(newDir, names[0])
			raw, err := os.ReadFile(src) //nolint:gosec // G304: a message in the instance's own Maildir
			if err != nil {
				t.Fatal(err)
			}
			if err := os.Rename(src, filepath.Join(p.files.mail, box, "cur", names[0]+":2,")); err != nil {
				t.Fatal(err)
			}
			return raw
		}
		if time.Now().After(deadline) {
			t.Fatalf("mtatest: no mail for %s within %s; log tail:\n%s", box, timeout, p.logTail())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (p *Postfix) readFolder(box, sub string) ([][]byte, error) {
	dir := filepath.Join(p.files.mail, box, sub)
	names, err := folderNames(dir)
	if err != nil {
		return nil, err
	}
	raws := make([][]byte, 0, len(names))
	for _, n := range names {
		raw, err := os.ReadFile(filepath.Join(dir, n)) //nolint:gosec // G304: a message in the instance's own Maildir
		if err != nil {
			return nil, err
		}
		raws = append(raws, raw)
	}
	return raws, nil
}

// folderNames lists a Maildir folder's messages in delivery order. A folder
// not made yet (no mail yet) is empty.
func folderNames(dir string) ([]string, error) {
	entries, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	if len(entries) > maxMailFiles {
		return nil, errors.New("mtatest: more than 10000 messages in " + dir)
	}
	names := make([]string, 0, len(entries))
	for _, e := range entries {
		if e.Type().IsRegular() {
			names = append(names, e.Name())
		}
	}
	slices.SortFunc(names, func(a, b string) int {
		as, au := deliveryTime(a)
		bs, bu := deliveryTime(b)
		return cmp.Or(cmp.Compare(as, bs), cmp.Compare(au, bu), strings.Compare(a, b))
	})
	return names, nil
}

// deliveryTime reads the time in the name that the virtual agent gives a
// message, SECONDS.VdevIinodeMMICROSECONDS.host; 0, 0 for another name.
func deliveryTime(name string) (sec, usec int64) {
	head, rest, _ := strings.Cut(name, ".")
	sec, _ = strconv.ParseInt(head, 10, 64)
	if i := strings.IndexByte(rest, 'M'); i >= 0 {
		digits, _, _ := strings.Cut(rest[i+1:], ".")
		usec, _ = strconv.ParseInt(digits, 10, 64)
	}
	return sec, usec
}
