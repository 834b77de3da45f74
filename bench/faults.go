package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"strings"
	"sync/atomic"
	"time"
)

// fault is how the fake Loki misbehaves in a run of -faults, and the
// workload it meets.
type fault struct {
	name               string
	latency            time.Duration // before every answer
	refuse             bool          // nothing listens at LOKI_URL
	answer             func(n int) (status int, retryAfter string)
	lines, invocations int
	gap                time.Duration // between invocations
}

// faults are the conditions of issue 8, at the default configuration.
var faults = []fault{
	{name: "400 ms away, back to back", latency: 400 * time.Millisecond, lines: 100, invocations: 50},
	{name: "400 ms away, invocations 1 s apart", latency: 400 * time.Millisecond, lines: 100, invocations: 10, gap: time.Second},
	{name: "1 s away, back to back, busy", latency: time.Second, lines: 1000, invocations: 50},
	{name: "429 + Retry-After: 1 to the first 3 pushes, SHUTDOWN 2 s later", lines: 100, invocations: 20, gap: 100 * time.Millisecond,
		answer: func(n int) (int, string) {
			if n <= 3 {
				return 429, "1"
			}
			return 204, ""
		}},
	{name: "503 + Retry-After: 30 to every push before SHUTDOWN", lines: 100, invocations: 20, gap: 100 * time.Millisecond,
		answer: nil}, // set in runFaults: it needs to know when SHUTDOWN began
	{name: "refuses connections, whole life", refuse: true, lines: 2000, invocations: 100},
	{name: "503 to every push, whole life", lines: 2000, invocations: 100, answer: func(int) (int, string) { return 503, "" }},
	{name: "260 (ingestion blocked) to every push", lines: 100, invocations: 20, answer: func(int) (int, string) { return 260, "" }},
}

// runFaults runs the extension once against each fault.
func runFaults(ctx context.Context, opts options, bin string) []*runResult {
	var results []*runResult
	for _, f := range faults {
		if !strings.Contains(f.name, opts.match) {
			continue
		}
		spec := runSpec{label: f.name, binary: bin, lines: f.lines, invocations: f.invocations, gap: f.gap, fault: f}
		if f.answer == nil && !f.refuse && f.latency == 0 {
			shutdown := new(atomic.Bool)
			spec.shutdown = shutdown
			spec.fault.answer = func(int) (int, string) {
				if shutdown.Load() {
					return 204, ""
				}
				return 503, "30"
			}
		}
		results = append(results, measure(ctx, opts, spec))
	}
	return results
}

// freeURL is a loopback URL where nothing listens.
func freeURL() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer ln.Close()
	return "http://" + ln.Addr().String(), nil
}

// printFaults writes the table of the fault runs.
func printFaults(w io.Writer, results []*runResult) {
	fmt.Fprintf(w, "**A far, throttled or failing Loki** (defaults, 128 MB function; added = runtimeDone delivered → `/next`; "+
		"arrived = lines Loki stored once, of those written; the extension's own account from its SHUTDOWN line)\n\n")
	fmt.Fprintf(w, "| Loki | inv × lines | added ms p50 / p99 | max RSS MB | arrived | duplicates | pushes | the extension's account |\n")
	fmt.Fprintf(w, "|---|---:|---:|---:|---:|---:|---:|---|\n")
	for _, r := range results {
		a := aggregateOf(r)
		if len(a.failures) > 0 {
			fmt.Fprintf(w, "| %s | %d × %d | failed: %s ||||||\n", r.spec.label, r.spec.invocations, r.spec.lines, oneLine(a.failures[0]))
			continue
		}
		account := "–"
		for line := range strings.Lines(r.stderr) {
			if _, rest, ok := strings.Cut(line, "): "); ok && strings.Contains(line, "shutdown (") {
				account = strings.TrimSpace(rest)
			}
		}
		fmt.Fprintf(w, "| %s | %d × %d | %s | %s | %d of %d | %d | %d | %s |\n", r.spec.label, r.spec.invocations, r.spec.lines,
			pair(a.added), mb(a.rssKB), a.lines-a.lost, a.lines, a.dups, a.pushes, account)
	}
	fmt.Fprintln(w)
}
