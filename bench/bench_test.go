package main

import (
	"bytes"
	"compress/gzip"
	"fmt"
	"testing"
	"time"
)

// TestTallyCountsLostDuplicatedAndAltered checks the fake Loki's
// bookkeeping on a hand-made push.
func TestTallyCountsLostDuplicatedAndAltered(t *testing.T) {
	w := newWorkload("")
	var lines []string
	for range 4 {
		_, line := w.line(time.Now(), "8f5c0a61-0d4e-4c1e-9f55-3c0b2c7e9a10")
		lines = append(lines, line[:len(line)-1])
	}
	// Line 0 twice, line 1 changed, line 2 missing, line 3 fine, one stranger.
	sent := []string{lines[0], lines[0], "X" + lines[1], lines[3], "not from the workload"}
	values := ""
	for i, l := range sent {
		if i > 0 {
			values += ","
		}
		values += fmt.Sprintf(`["%d",%s]`, i, appendJSONString(nil, l))
	}
	body := `{"streams":[{"stream":{"source":"function"},"values":[` + values + `]},` +
		`{"stream":{"source":"extension"},"values":[["9","loki-extension stats seq=1"]]}]}`
	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	zw.Write([]byte(body))
	zw.Close()

	tl, err := newTally([]push{{at: time.Now(), gzip: true, body: gz.Bytes()}}, w)
	if err != nil {
		t.Fatal(err)
	}
	lost, dups := tl.lostAndDuplicated()
	if lost != 1 || dups != 1 || tl.altered != 1 || tl.unknown != 1 {
		t.Errorf("lost %d, dups %d, altered %d, unknown %d; want 1 each", lost, dups, tl.altered, tl.unknown)
	}
	if tl.bySource["function"] != 5 || tl.bySource["extension"] != 1 {
		t.Errorf("by source %v, want function:5 extension:1", tl.bySource)
	}
}

func TestPercentile(t *testing.T) {
	var ds []time.Duration
	for i := 100; i >= 1; i-- {
		ds = append(ds, time.Duration(i))
	}
	for _, c := range []struct {
		p    float64
		want time.Duration
	}{{0.5, 50}, {0.99, 99}, {1, 100}, {0, 1}} {
		if got := percentile(ds, c.p); got != c.want {
			t.Errorf("percentile(%v) = %v, want %v", c.p, got, c.want)
		}
	}
}
