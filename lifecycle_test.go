package main

import (
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// invocation drives one invocation through f: INVOKE, then telemetry in
// two batches (the second arrives after INVOKE and ends with runtimeDone),
// then waits for the extension's /next. It returns the generated lines.
func invocation(f *fakeLambda, requestID string, n int, extra ...any) []string {
	f.t.Helper()
	f.invoke(requestID)
	var lines []string
	start := tev("platform.start", map[string]any{"requestId": requestID, "version": "$LATEST",
		"tracing": map[string]any{"spanId": "1a2b3c4d5e6f7a8b", "type": "X-Amzn-Trace-Id", "value": "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=1a2b3c4d5e6f7a8b;Sampled=1"}})
	first := append([]any{start}, extra...)
	second := []any{}
	for i := range n {
		line := fmt.Sprintf("%s line %d", requestID, i)
		lines = append(lines, line)
		ev := tev("function", line+"\n")
		if i%3 == 1 { // a JSON record, as with Lambda's JSON log format
			ev = tev("function", map[string]any{"timestamp": time.Now().UTC().Format(time.RFC3339Nano), "level": "INFO", "requestId": requestID, "message": line})
			lines[i] = fmt.Sprintf(`{"level":"INFO","message":%q,"requestId":%q,"timestamp":%q}`,
				line, requestID, ev["record"].(map[string]any)["timestamp"])
		}
		if i < n/2 {
			first = append(first, ev)
		} else {
			second = append(second, ev)
		}
	}
	f.deliver(first...)
	second = append(second, tev("platform.runtimeDone", map[string]any{"requestId": requestID, "status": "success"}))
	f.deliver(second...)
	f.awaitNext()
	return lines
}

func report(requestID string) map[string]any {
	return tev("platform.report", map[string]any{"requestId": requestID, "status": "success",
		"metrics": map[string]any{"durationMs": 12.5, "billedDurationMs": 13, "memorySizeMB": 128, "maxMemoryUsedMB": 40}})
}

func TestEveryLineArrivesBeforeNext(t *testing.T) {
	f := newFakeLambda(t)
	loki := newFakeLoki(t)
	x := startExtension(t, f, map[string]string{"LOKI_URL": loki.srv.URL, "LOKI_LABELS": "env=test"})
	f.awaitNext() // Init is over
	f.deliver(tev("platform.initStart", map[string]any{"initializationType": "on-demand", "phase": "init"}),
		tev("function", "init line\n"))

	want := []string{"init line"}
	var wantReports []string
	for i := range 5 {
		id := fmt.Sprintf("8f5c0a61-0d4e-4c1e-9f55-3c0b2c7e9a1%d", i)
		var extra []any
		if i > 0 {
			prev := fmt.Sprintf("8f5c0a61-0d4e-4c1e-9f55-3c0b2c7e9a1%d", i-1)
			extra = append(extra, report(prev))
			wantReports = append(wantReports, "REPORT RequestId: "+prev+"\tDuration: 12.50 ms\tBilled Duration: 13 ms\tMemory Size: 128 MB\tMax Memory Used: 40 MB")
		}
		want = append(want, invocation(f, id, 7, extra...)...)
		// The extension is in /next: every line of this invocation is in Loki.
		if diff := cmp.Diff(want, loki.lines("function"), anyOrder); diff != "" {
			t.Fatalf("invocation %d: function lines in Loki at /next (-want +got):\n%s", i, diff)
		}
		if diff := cmp.Diff(wantReports, loki.lines("platform")); diff != "" {
			t.Fatalf("invocation %d: platform lines (-want +got):\n%s", i, diff)
		}
	}

	f.shutdown()
	// Late telemetry after SHUTDOWN: the last report and a straggler.
	f.deliver(report("8f5c0a61-0d4e-4c1e-9f55-3c0b2c7e9a14"), tev("function", "late line\n"))
	if err := x.wait(t); err != nil {
		t.Fatalf("run: %v", err)
	}
	want = append(want, "late line")
	if diff := cmp.Diff(want, loki.lines("function"), anyOrder); diff != "" {
		t.Errorf("function lines after SHUTDOWN (-want +got):\n%s", diff)
	}
	if got := len(loki.lines("platform")); got != 5 {
		t.Errorf("platform lines: got %d, want 5 reports", got)
	}
	if loki.dups != 0 {
		t.Errorf("%d entries were pushed twice", loki.dups)
	}
	stats := loki.lines("extension")
	if len(stats) == 0 || !strings.Contains(stats[len(stats)-1], "final=true") {
		t.Errorf("no final stats line in Loki: %q", stats)
	}

	for _, ls := range loki.labels {
		if ls["service_name"] != "orders-api" || ls["env"] != "test" || len(ls) != 3 {
			t.Errorf("stream labels %v, want service_name=orders-api, source and env=test", ls)
		}
	}
	stamps := map[int64]bool{}
	for _, e := range loki.entriesOf("function") {
		var want map[string]string // the init line and the late one belong to no invocation
		if e.Line != "init line" && e.Line != "late line" {
			id := e.Line[:36]
			if strings.HasPrefix(e.Line, "{") {
				id = e.Line[strings.Index(e.Line, `"requestId":"`)+13:][:36]
			}
			want = map[string]string{"request_id": id, "trace_id": "1-5759e988-bd862e3fe1be46a994272793"}
		}
		if strings.HasPrefix(e.Line, "{") { // a JSON record keeps its own time, or moves just past the line before
			want["level"] = "info"
			var rec struct{ Timestamp time.Time }
			if err := json.Unmarshal([]byte(e.Line), &rec); err != nil || e.TS < rec.Timestamp.UnixNano() || e.TS > rec.Timestamp.Add(2*time.Millisecond).UnixNano() {
				t.Errorf("%q stored at %v", e.Line, time.Unix(0, e.TS).UTC())
			}
		}
		if stamps[e.TS] {
			t.Errorf("two lines at %d", e.TS) // Loki could show them in any order
		}
		stamps[e.TS] = true
		if diff := cmp.Diff(want, e.Meta); diff != "" {
			t.Errorf("metadata of %q (-want +got):\n%s", e.Line, diff)
		}
	}

	f.mu.Lock()
	defer f.mu.Unlock()
	if diff := cmp.Diff([][]string{{"INVOKE", "SHUTDOWN"}}, f.registered); diff != "" {
		t.Errorf("registered events (-want +got):\n%s", diff)
	}
	sub := f.subscriptions[0]
	sub.Destination.URI = sub.Destination.URI[:strings.LastIndex(sub.Destination.URI, ":")]
	wantSub := subscribeRequest{SchemaVersion: "2025-01-29", Types: []string{"platform", "function"},
		Buffering:   buffering{MaxItems: 1000, MaxBytes: 262144, TimeoutMs: 25},
		Destination: destination{Protocol: "HTTP", URI: "http://sandbox.localdomain"}}
	if diff := cmp.Diff([]subscribeRequest{wantSub}, []subscribeRequest{sub}); diff != "" {
		t.Errorf("subscription (-want +got):\n%s", diff)
	}
	if out := x.out.String(); strings.Count(out, "\n") != 1 || !strings.Contains(out, "shutdown (spindown): 42 lines sent") {
		t.Errorf("output: want one summary line at shutdown, got:\n%s", out)
	}
}

func TestRegisterRefused(t *testing.T) {
	f := newFakeLambda(t)
	f.registerStatus = http.StatusForbidden
	x := startExtension(t, f, map[string]string{"LOKI_URL": "http://127.0.0.1:1"})
	err := x.wait(t)
	if err == nil || !strings.Contains(err.Error(), "register: status 403") {
		t.Fatalf("run: got %v, want a register error with status 403", err)
	}
	if len(f.errorTypes) != 0 {
		t.Errorf("reported %v after a failed register", f.errorTypes)
	}
}

func TestBadConfigReportsInitError(t *testing.T) {
	f := newFakeLambda(t)
	x := startExtension(t, f, map[string]string{
		"LOKI_URL":    "https://123456:glc_s3cret@logs.example.net",
		"LOKI_LABELS": "bad-name=x",
	})
	err := x.wait(t)
	if err == nil || !strings.Contains(err.Error(), "LOKI_LABELS") {
		t.Fatalf("run: got %v, want an error naming LOKI_LABELS", err)
	}
	if strings.Contains(err.Error(), "s3cret") || strings.Contains(x.out.String(), "s3cret") {
		t.Errorf("the secret leaked: %v %s", err, x.out.String())
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if diff := cmp.Diff([]string{"Extension.ConfigInvalid"}, f.errorTypes); diff != "" {
		t.Errorf("error reports (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]string{"/2020-01-01/extension/init/error"}, f.errorPaths); diff != "" {
		t.Errorf("error paths (-want +got):\n%s", diff)
	}
}

func TestTelemetryNotSupported(t *testing.T) {
	f := newFakeLambda(t)
	f.subscribeCodes = []int{http.StatusAccepted}
	loki := newFakeLoki(t)
	x := startExtension(t, f, map[string]string{"LOKI_URL": loki.srv.URL})
	f.awaitNext()
	for range 3 {
		// A deadline far away: waiting for telemetry would hang the test.
		f.send(lifecycleEvent{EventType: "INVOKE", RequestID: "r", DeadlineMs: time.Now().Add(time.Hour).UnixMilli()})
		f.awaitNext()
	}
	f.shutdown()
	if err := x.wait(t); err != nil {
		t.Fatalf("run: %v", err)
	}
	out := x.out.String()
	if strings.Count(out, "not supported") != 1 {
		t.Errorf("want one 'not supported' line, got:\n%s", out)
	}
	if len(f.errorTypes) != 0 {
		t.Errorf("reported errors %v; 202 is not an error", f.errorTypes)
	}
}

// TestSubscribeTriedAgain: a subscription refused with 400 is tried again
// with the older schema; one answered 5xx or not at all, with the same.
// Either way the environment's lines are shipped, and nothing is printed.
func TestSubscribeTriedAgain(t *testing.T) {
	for _, tc := range []struct {
		codes   []int
		schemas []string
	}{
		{[]int{http.StatusBadRequest}, []string{"2025-01-29", "2022-12-13"}},
		{[]int{http.StatusInternalServerError, 0, http.StatusServiceUnavailable}, []string{"2025-01-29", "2025-01-29", "2025-01-29", "2025-01-29"}},
	} {
		f := newFakeLambda(t)
		f.subscribeCodes = tc.codes
		loki := newFakeLoki(t)
		x := startExtension(t, f, map[string]string{"LOKI_URL": loki.srv.URL})
		f.awaitNext()
		want := invocation(f, "11111111-2222-3333-4444-555555555555", 3)
		if diff := cmp.Diff(want, loki.lines("function"), anyOrder); diff != "" {
			t.Errorf("%v: lines (-want +got):\n%s", tc.codes, diff)
		}
		f.shutdown()
		x.wait(t)
		f.mu.Lock()
		var schemas []string
		for _, s := range f.subscriptions {
			schemas = append(schemas, s.SchemaVersion)
		}
		f.mu.Unlock()
		if diff := cmp.Diff(tc.schemas, schemas); diff != "" {
			t.Errorf("%v: schemas subscribed with (-want +got):\n%s", tc.codes, diff)
		}
		if out := x.out.String(); strings.Contains(out, "subscribe") {
			t.Errorf("%v: printed:\n%s", tc.codes, out)
		}
	}
}

// TestSubscribeRefused: a 4xx (but the schema's 400) is not tried again;
// it is told once, and the extension runs on without telemetry.
func TestSubscribeRefused(t *testing.T) {
	f := newFakeLambda(t)
	f.subscribeCodes = []int{http.StatusForbidden, http.StatusForbidden}
	loki := newFakeLoki(t)
	x := startExtension(t, f, map[string]string{"LOKI_URL": loki.srv.URL})
	f.awaitNext()
	f.send(lifecycleEvent{EventType: "INVOKE", RequestID: "r", DeadlineMs: time.Now().Add(time.Hour).UnixMilli()})
	f.awaitNext()
	f.shutdown()
	if err := x.wait(t); err != nil {
		t.Fatalf("run: %v", err)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.subscriptions) != 1 {
		t.Errorf("%d subscribe calls, want 1", len(f.subscriptions))
	}
	if out := x.out.String(); strings.Count(out, "subscribe to the Telemetry API: schema 2025-01-29: status 403") != 1 {
		t.Errorf("want one message for the 403, got:\n%s", out)
	}
}

func TestManagedInstances(t *testing.T) {
	f := newFakeLambda(t)
	loki := newFakeLoki(t)
	x := startExtension(t, f, map[string]string{"LOKI_URL": loki.srv.URL,
		"AWS_LAMBDA_INITIALIZATION_TYPE": "lambda-managed-instances", "LOKI_FLUSH_INTERVAL": "100ms"})
	f.awaitNext()
	a, b := "aaaaaaaa-0000-4000-8000-000000000001", "bbbbbbbb-0000-4000-8000-000000000002"
	// Two concurrent invocations interleave; a plain line belongs to neither.
	f.deliver(tev("platform.start", map[string]any{"requestId": a}),
		tev("platform.start", map[string]any{"requestId": b}),
		tev("function", `{"timestamp":"2025-01-01T00:00:00Z","level":"INFO","requestId":"`+a+`","message":"from a"}`),
		tev("function", "2025-01-01T00:00:00.000Z\t"+b+"\tWARN\tfrom b\n"),
		tev("function", "plain\n"))
	deadline := time.Now().Add(waitLimit)
	for len(loki.lines("function")) < 3 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond) // the background flush, with no INVOKE
	}
	var got []map[string]string
	for _, e := range loki.entriesOf("function") {
		got = append(got, e.Meta)
	}
	want := []map[string]string{{"request_id": a, "level": "info"}, {"request_id": b, "level": "warn"}, nil}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("metadata (-want +got):\n%s", diff)
	}
	f.deliver(tev("function", "last\n"))
	f.shutdown()
	if err := x.wait(t); err != nil {
		t.Fatalf("run: %v", err)
	}
	if lines := loki.lines("function"); len(lines) != 4 || lines[3] != "last" {
		t.Errorf("lines after SHUTDOWN: %q", lines)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if diff := cmp.Diff([][]string{{"SHUTDOWN"}}, f.registered); diff != "" {
		t.Errorf("registered (-want +got):\n%s", diff)
	}
}

func TestLokiFailuresAreRetried(t *testing.T) {
	for _, tc := range []struct {
		name    string
		reports int // "will retry" lines in the output
		reply   func(n int, w http.ResponseWriter) int
		resets  int
	}{
		{"500 twice", 1, func(n int, w http.ResponseWriter) int {
			if n <= 2 {
				return http.StatusInternalServerError
			}
			return http.StatusNoContent
		}, 0},
		{"429", 1, func(n int, w http.ResponseWriter) int {
			if n == 1 {
				return http.StatusTooManyRequests
			}
			return http.StatusNoContent
		}, 0},
		{"503 with Retry-After", 1, func(n int, w http.ResponseWriter) int {
			if n == 1 {
				w.Header().Set("Retry-After", "1")
				return http.StatusServiceUnavailable
			}
			return http.StatusNoContent
		}, 0},
		// A dropped connection is retried at once, not reported.
		{"reply lost after receipt", 0, func(n int, w http.ResponseWriter) int {
			if n == 1 {
				return replyLost
			}
			return http.StatusNoContent
		}, 0},
		{"reset mid-body", 0, nil, 1},
		{"reset twice", 1, nil, 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			f := newFakeLambda(t)
			loki := newFakeLoki(t)
			loki.reply = tc.reply
			loki.resets = tc.resets
			x := startExtension(t, f, map[string]string{"LOKI_URL": loki.srv.URL, "LOKI_FLUSH_TIMEOUT": "3s"})
			f.awaitNext()
			want := invocation(f, "11111111-2222-3333-4444-555555555555", 5)
			if diff := cmp.Diff(want, loki.lines("function"), anyOrder); diff != "" {
				t.Errorf("lines at /next (-want +got):\n%s", diff)
			}
			f.shutdown()
			if err := x.wait(t); err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(want, loki.lines("function"), anyOrder); diff != "" {
				t.Errorf("lines at exit (-want +got):\n%s", diff)
			}
			if n := strings.Count(x.out.String(), "will retry"); n != tc.reports {
				t.Errorf("failure reported %d times, want %d:\n%s", n, tc.reports, x.out.String())
			}
		})
	}
}

// TestLokiRefusedThenBack: with nothing listening, lines stay buffered and
// the invocations still end; once Loki is back, pushes resume and deliver
// every line once.
func TestLokiRefusedThenBack(t *testing.T) {
	f := newFakeLambda(t)
	addr := freePort(t)
	x := startExtension(t, f, map[string]string{"LOKI_URL": "http://" + addr})
	f.awaitNext()
	want := invocation(f, requestID(0), 4)

	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Skipf("port %s was taken meanwhile: %v", addr, err)
	}
	loki := newFakeLoki(t)
	loki.srv.Close()
	loki.srv = httptest.NewUnstartedServer(http.HandlerFunc(loki.push))
	loki.srv.Listener = ln
	loki.srv.Start()

	for i := 1; len(loki.lines("function")) < len(want); i++ {
		if i > 50 {
			t.Fatalf("Loki is back, but after %d invocations it holds %d of %d lines", i, len(loki.lines("function")), len(want))
		}
		want = append(want, invocation(f, requestID(i), 4)...)
		time.Sleep(50 * time.Millisecond)
	}
	f.shutdown()
	x.wait(t)
	if diff := cmp.Diff(want, loki.lines("function"), anyOrder); diff != "" {
		t.Errorf("lines (-want +got):\n%s", diff)
	}
	if loki.dups != 0 {
		t.Errorf("%d duplicates", loki.dups)
	}
}

// TestAdaptiveFlush: back to back, an invocation does not wait for Loki's
// answer to its own lines, only for those of earlier invocations; after a
// pause it waits for all; at SHUTDOWN, everything arrives.
func TestAdaptiveFlush(t *testing.T) {
	f := newFakeLambda(t)
	loki := newFakeLoki(t)
	loki.reply = func(int, http.ResponseWriter) int {
		time.Sleep(150 * time.Millisecond) // within the flush timeout
		return http.StatusNoContent
	}
	x := startExtension(t, f, map[string]string{"LOKI_URL": loki.srv.URL,
		"LOKI_FLUSH_MODE": "adaptive", "LOKI_FLUSH_INTERVAL": "2s"})
	f.awaitNext()
	var want []string
	deferred := 0
	for i := range 6 {
		if i == 4 {
			time.Sleep(700 * time.Millisecond) // sparse: over a quarter of the interval
		}
		before := len(want)
		f.invoke(requestID(i))
		time.Sleep(100 * time.Millisecond) // the handler runs
		for j := range 5 {
			want = append(want, fmt.Sprintf("%s line %d", requestID(i), j))
			f.deliver(tev("function", want[len(want)-1]+"\n"))
		}
		f.deliver(tev("platform.runtimeDone", map[string]any{"requestId": requestID(i), "status": "success"}))
		f.awaitNext()
		got := loki.lines("function")
		if !cmp.Equal(want[:before], got[:min(before, len(got))], anyOrder) {
			t.Fatalf("invocation %d: the lines of earlier invocations are not all in Loki: %d of %d", i, len(got), before)
		}
		if len(got) < len(want) {
			deferred++
			if i == 0 || i == 4 {
				t.Errorf("invocation %d came after a pause but did not wait for its lines", i)
			}
		}
	}
	if deferred == 0 {
		t.Error("no invocation left its lines to the background while invocations came back to back")
	}
	f.shutdown()
	if err := x.wait(t); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(want, loki.lines("function"), anyOrder); diff != "" {
		t.Errorf("lines after SHUTDOWN (-want +got):\n%s", diff)
	}
}

// TestCostControlCountsEveryLine: with LOKI_MIN_LEVEL and
// LOKI_MAX_BYTES_PER_SECOND, every line written is sent or counted under
// one reason, in the shutdown line and in the final stats line, and the
// cap is told once.
func TestCostControlCountsEveryLine(t *testing.T) {
	f := newFakeLambda(t)
	loki := newFakeLoki(t)
	x := startExtension(t, f, map[string]string{"LOKI_URL": loki.srv.URL, "LOKI_MIN_LEVEL": "INFO", "LOKI_MAX_BYTES_PER_SECOND": "2000"})
	f.awaitNext()
	const perInvocation = 90
	for i := range 3 {
		id := requestID(i)
		f.invoke(id)
		var events []any
		for j := range perInvocation {
			line := fmt.Sprintf("no level: line %d of a busy invocation", j)
			if level := []string{"DEBUG", "INFO", ""}[j%3]; level != "" {
				line = fmt.Sprintf("2025-01-01T00:00:00.000Z\t%s\t%s\tline %d of a busy invocation", id, level, j)
			}
			events = append(events, tev("function", line+"\n"))
		}
		f.deliver(append(events, tev("platform.runtimeDone", map[string]any{"requestId": id, "status": "success"}))...)
		f.awaitNext()
	}
	f.shutdown()
	if err := x.wait(t); err != nil {
		t.Fatal(err)
	}
	c := summary(t, x.out.String())
	if c.droppedFiltered != 3*perInvocation/3 || c.droppedOverRate == 0 || c.sent == 0 {
		t.Errorf("counters %+v: want %d filtered (the DEBUG lines), and some over the rate", c, perInvocation)
	}
	if total := c.sent + c.droppedFull + c.droppedLoki + c.droppedAtExit + c.droppedFiltered + c.droppedOverRate; total != 3*perInvocation {
		t.Errorf("counters %+v add up to %d lines, want %d", c, total, 3*perInvocation)
	}
	if got := len(loki.lines("function")); int64(got) != c.sent {
		t.Errorf("Loki has %d lines, the extension says it sent %d", got, c.sent)
	}
	stats := loki.lines("extension")
	if want := fmt.Sprintf("dropped_filtered=%d dropped_rate_limited=%d", c.droppedFiltered, c.droppedOverRate); len(stats) == 0 || !strings.HasSuffix(stats[len(stats)-1], want) {
		t.Errorf("final stats line %q, want it to end with %q", stats, want)
	}
	if n := strings.Count(x.out.String(), "dropping lines over"); n != 1 {
		t.Errorf("%d messages about the cap, want 1:\n%s", n, x.out.String())
	}
}
