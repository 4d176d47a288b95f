package mtatest

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"net/textproto"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

// maxSpamInput bounds the message that SpamScore scores.
const maxSpamInput = 10 << 20

var (
	spamScore = regexp.MustCompile(`\bscore=(-?[0-9]+(?:\.[0-9]+)?)`)
	spamTests = regexp.MustCompile(`\btests=(\S*)`)
)

// SpamScore runs SpamAssassin on raw (spamassassin -t --local: the rules
// of the package, no network tests, no sa-update) and returns the score
// and the names of the rules that hit, comma-separated, from the
// X-Spam-Status header it adds.
func SpamScore(t testing.TB, raw []byte) (score float64, rules string) {
	t.Helper()
	if len(raw) > maxSpamInput {
		t.Fatalf("mtatest: SpamScore: a message of %d bytes: at most %d", len(raw), maxSpamInput)
	}
	ctx, cancel := context.WithTimeout(context.Background(), commandTimeout)
	defer cancel()
	out, err := output(ctx, string(raw), "spamassassin", "-t", "--local", "--nocreate-prefs")
	if err != nil {
		t.Fatal(err)
	}
	score, rules, err = parseSpamStatus(out)
	if err != nil {
		t.Fatal(err)
	}
	return score, rules
}

// parseSpamStatus reads the score and the rules of the X-Spam-Status header
// of SpamAssassin's output, unfolded.
func parseSpamStatus(out []byte) (float64, string, error) {
	h, err := textproto.NewReader(bufio.NewReader(bytes.NewReader(out))).ReadMIMEHeader()
	if err != nil && len(h) == 0 {
		return 0, "", fmt.Errorf("mtatest: SpamAssassin's output has no header: %w", err)
	}
	// Unfolded, the list of rules has ", " where SpamAssassin folded it.
	status := strings.ReplaceAll(h.Get("X-Spam-Status"), ", ", ",")
	m := spamScore.FindStringSubmatch(status)
	if m == nil {
		return 0, "", fmt.Errorf("mtatest: no score in SpamAssassin's X-Spam-Status %q", status)
	}
	score, err := strconv.ParseFloat(m[1], 64)
	if err != nil {
		return 0, "", err
	}
	rules := ""
	if m := spamTests.FindStringSubmatch(status); m != nil {
		rules = strings.TrimSuffix(m[1], ",")
	}
	return score, rules, nil
}
