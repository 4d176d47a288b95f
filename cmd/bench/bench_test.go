package main

import (
	"strings"
	"testing"
	"time"
)

func TestParse(t *testing.T) {
	lat := latencies{time.Millisecond, 2 * time.Millisecond, 3 * time.Millisecond, 9 * time.Millisecond}
	for _, c := range []struct {
		name, report, none, statuses string
		parse                        func([]byte) (toolResult, error)
		elapsed                      time.Duration
	}{
		{"ghz", `{"count":3,"total":2000000000,"slowest":9000000,"statusCodeDistribution":{"OK":2,"Unavailable":1},
			"latencyDistribution":[{"percentage":50,"latency":1000000},{"percentage":90,"latency":2000000},{"percentage":99,"latency":3000000}]}`,
			`{"count":0,"errorDistribution":{"connection refused":1}}`, "[OK:2 Unavailable:1]", parseGHZ, 2 * time.Second},
		{"vegeta", `{"latencies":{"50th":1000000,"90th":2000000,"95th":2500000,"99th":3000000,"max":9000000},
			"duration":1000000000,"wait":5000000,"requests":4,"status_codes":{"202":3,"0":1},"errors":["EOF"]}`,
			`{"requests":0,"errors":["connection refused"]}`, "[0:1 202:3]", parseVegeta, 1005 * time.Millisecond},
	} {
		res, err := c.parse([]byte(c.report))
		if err != nil || res.elapsed != c.elapsed || res.lat != lat || counts(res.statuses) != c.statuses {
			t.Errorf("%s: parse = %+v, %v", c.name, res, err)
		}
		if _, err := c.parse([]byte(c.none)); err == nil || !strings.Contains(err.Error(), "connection refused") {
			t.Errorf("%s: no requests: err = %v", c.name, err)
		}
	}
}

func TestPercentiles(t *testing.T) {
	var d []time.Duration
	for i := 200; i >= 1; i-- { // unsorted on purpose
		d = append(d, time.Duration(i)*time.Millisecond)
	}
	if got, want := percentiles(d), (latencies{100 * time.Millisecond, 180 * time.Millisecond, 198 * time.Millisecond, 200 * time.Millisecond}); got != want {
		t.Fatalf("percentiles = %v, want %v", got, want)
	}
}

func TestSentAt(t *testing.T) {
	want := time.Unix(0, 1795663976123456789)
	email := strings.NewReplacer("{{.RequestNumber}}", "7", "{{.TimestampUnixNano}}", "1795663976123456789").Replace(e2eData[10 : len(e2eData)-2])
	if got, ok := sentAt(email); !ok || !got.Equal(want) {
		t.Fatalf("sentAt(%q) = %v, %v", email, got, ok)
	}
	if _, ok := sentAt("someone@example.com"); ok {
		t.Fatal("sentAt of an address without a time: ok")
	}
}

func TestReplaceBlock(t *testing.T) {
	doc := "hand\n" + blockStart + "\nold\n" + blockEnd + "\nmore hand\n"
	if got, err := replaceBlock(doc, "new\n"); err != nil || got != "hand\n"+blockStart+"\nnew\n"+blockEnd+"\nmore hand\n" {
		t.Fatalf("replaceBlock = %q, %v", got, err)
	}
	if _, err := replaceBlock("no markers", "new\n"); err == nil {
		t.Fatal("no markers: no error")
	}
}
