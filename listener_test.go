package main

import (
	"bytes"
	"encoding/json"
	"encoding/json/jsontext"
	"fmt"
	"log"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/google/go-cmp/cmp"
)

const rid = "8f5c0a61-0d4e-4c1e-9f55-3c0b2c7e9a10"

func testListener(types string) *listener {
	f, err := parseTypes(types)
	if err != nil {
		panic(err)
	}
	l := newListener(newBatch(8<<20, 8<<20), f, 300, "loki-extension: ", true)
	l.now = func() time.Time { return time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC) }
	l.offset = 0 // TestEnvironmentOffset checks it
	return l
}

// post sends body to the listener and returns the status.
func post(l *listener, body string) int {
	w := httptest.NewRecorder()
	l.ServeHTTP(w, httptest.NewRequest(http.MethodPost, "/", strings.NewReader(body)))
	return w.Code
}

// got is an entry as the tests compare it.
type got struct {
	Src  string
	TS   string
	Line string
	Meta meta
}

// meta is an entry's metadata and level as the tests compare them.
type meta struct{ requestID, traceID, tenantID, level, eventType string }

func metaOf(e entry) meta {
	m := e.meta
	return meta{m.requestID, m.traceID, m.tenantID, e.level.String(), m.eventType}
}

func stored(l *listener) []got {
	var out []got
	for _, e := range l.batch.entries {
		out = append(out, got{e.src.String(), time.Unix(0, e.ts).UTC().Format(time.RFC3339Nano), lineText(e), metaOf(e)})
	}
	return out
}

func TestRecordDecoding(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name   string
		events string
		want   []got
	}{
		{"text line loses one newline", `[{"time":"2024-11-25T10:15:30.101Z","type":"function","record":"hello\n\n"}]`,
			[]got{{"function", "2024-11-25T10:15:30.101Z", "hello\n", meta{}}}},
		{"Node.js prefix", `[{"time":"2024-11-25T10:15:30.101Z","type":"function","record":"2024-11-25T10:15:30.100Z\t` + rid + `\tERROR\tboom\n"}]`,
			[]got{{"function", "2024-11-25T10:15:30.101Z", "2024-11-25T10:15:30.100Z\t" + rid + "\tERROR\tboom", meta{requestID: rid, level: "error"}}}},
		{"Python prefix", `[{"time":"2024-11-25T10:15:30.101Z","type":"function","record":"[WARNING]\t2024-11-25T10:15:30.100Z\t` + rid + `\tcareful\n"}]`,
			[]got{{"function", "2024-11-25T10:15:30.101Z", "[WARNING]\t2024-11-25T10:15:30.100Z\t" + rid + "\tcareful", meta{requestID: rid, level: "warn"}}}},
		{"a backslash-t in the text is not a tab", `[{"time":"2024-11-25T10:15:30.101Z","type":"function","record":"2024-11-25T10:15:30.100Z C:\\t` + rid + `\tERROR\tboom"}]`,
			[]got{{"function", "2024-11-25T10:15:30.101Z", "2024-11-25T10:15:30.100Z C:\\t" + rid + "\tERROR\tboom", meta{}}}},
		{"Node.js during init", `[{"time":"2024-11-25T10:15:30.101Z","type":"function","record":"2024-11-25T10:15:30.100Z\tundefined\tINFO\tstarting\n"}]`,
			[]got{{"function", "2024-11-25T10:15:30.101Z", "2024-11-25T10:15:30.100Z\tundefined\tINFO\tstarting", meta{level: "info"}}}},
		{"JSON record keeps content and own time", `[{"time":"2024-11-25T10:15:30.101Z","type":"function","record":{"timestamp":"2024-11-25T10:15:30.100123Z","level":"INFO","requestId":"` + rid + `","message":"loaded","items":[1,2]}}]`,
			[]got{{"function", "2024-11-25T10:15:30.100123Z", `{"timestamp":"2024-11-25T10:15:30.100123Z","level":"INFO","requestId":"` + rid + `","message":"loaded","items":[1,2]}`, meta{requestID: rid, level: "info"}}}},
		{"Java AWSRequestId", `[{"time":"2024-11-25T10:15:30.101Z","type":"function","record":{"level":"DEBUG","AWSRequestId":"` + rid + `","message":"m"}}]`,
			[]got{{"function", "2024-11-25T10:15:30.101Z", `{"level":"DEBUG","AWSRequestId":"` + rid + `","message":"m"}`, meta{requestID: rid, level: "debug"}}}},
		{"JSON printed as text", `[{"time":"2024-11-25T10:15:30.101Z","type":"function","record":"{\"level\":\"ERROR\",\"requestId\":\"` + rid + `\",\"message\":\"x\"}\n"}]`,
			[]got{{"function", "2024-11-25T10:15:30.101Z", `{"level":"ERROR","requestId":"` + rid + `","message":"x"}`, meta{requestID: rid, level: "error"}}}},
		{"JSON record with a wrong-typed field", `[{"time":"2024-11-25T10:15:30.101Z","type":"function","record":{"level":30,"requestId":"` + rid + `","msg":"pino"}}]`,
			[]got{{"function", "2024-11-25T10:15:30.101Z", `{"level":30,"requestId":"` + rid + `","msg":"pino"}`, meta{requestID: rid}}}},
		{"record timestamp far off is ignored", `[{"time":"2024-11-25T10:15:30.101Z","type":"function","record":{"timestamp":"2099-01-01T00:00:00Z","message":"m"}}]`,
			[]got{{"function", "2024-11-25T10:15:30.101Z", `{"timestamp":"2099-01-01T00:00:00Z","message":"m"}`, meta{}}}},
		{"bad time uses receipt time", `[{"time":"12:01:23:521Z","type":"function","record":"x"}]`,
			[]got{{"function", "2025-01-01T00:00:00Z", "x", meta{}}}},
		{"non-string record kept as written", `[{"time":"2024-11-25T10:15:30.101Z","type":"function","record":[1, 2]}]`,
			[]got{{"function", "2024-11-25T10:15:30.101Z", "[1, 2]", meta{}}}},
		{"platform.report", `[{"time":"2024-11-25T10:15:30.260Z","type":"platform.report","record":{"requestId":"` + rid + `","status":"success","metrics":{"durationMs":213.02,"billedDurationMs":214,"memorySizeMB":512,"maxMemoryUsedMB":71,"initDurationMs":388.51},"tracing":{"type":"X-Amzn-Trace-Id","value":"Root=1-6744a1b2-0a1b2c3d4e5f60718293a4b5;Sampled=0"}}}]`,
			[]got{{"platform", "2024-11-25T10:15:30.26Z", "REPORT RequestId: " + rid + "\tDuration: 213.02 ms\tBilled Duration: 214 ms\tMemory Size: 512 MB\tMax Memory Used: 71 MB\tInit Duration: 388.51 ms",
				meta{requestID: rid, traceID: "1-6744a1b2-0a1b2c3d4e5f60718293a4b5", eventType: "platform.report"}}}},
		{"platform.report on LMI, timed out", `[{"time":"2024-11-25T10:15:30.260Z","type":"platform.report","record":{"requestId":"` + rid + `","status":"timeout","errorType":"Sandbox.Timedout","metrics":{"durationMs":3000}}}]`,
			[]got{{"platform", "2024-11-25T10:15:30.26Z", "REPORT RequestId: " + rid + "\tDuration: 3000.00 ms\tStatus: timeout\tError Type: Sandbox.Timedout",
				meta{requestID: rid, level: "error", eventType: "platform.report"}}}},
		{"failed runtimeDone is shipped, a good one is not", `[{"time":"2024-11-25T10:15:30.260Z","type":"platform.runtimeDone","record":{"requestId":"r","status":"success"}},{"time":"2024-11-25T10:15:30.261Z","type":"platform.runtimeDone","record":{"requestId":"r2","status":"error","errorType":"Runtime.ExitError"}}]`,
			[]got{{"platform", "2024-11-25T10:15:30.261Z", `platform.runtimeDone {"requestId":"r2","status":"error","errorType":"Runtime.ExitError"}`,
				meta{requestID: "r2", level: "error", eventType: "platform.runtimeDone"}}}},
		{"logsDropped is shipped", `[{"time":"2024-11-25T10:15:31.000Z","type":"platform.logsDropped","record":{"droppedBytes":48213,"droppedRecords":311,"reason":"too slow"}}]`,
			[]got{{"platform", "2024-11-25T10:15:31Z", `platform.logsDropped {"droppedBytes":48213,"droppedRecords":311,"reason":"too slow"}`, meta{level: "error", eventType: "platform.logsDropped"}}}},
		{"not shipped by default", `[{"time":"2024-11-25T10:15:31.000Z","type":"platform.start","record":{"requestId":"r"}},{"time":"2024-11-25T10:15:31.000Z","type":"extension","record":"x"},{"time":"2024-11-25T10:15:31.000Z","type":"platform.someday","record":{}}]`,
			nil},
		{"elements that are not events are skipped", `[1, "x", null, {"type": 5}, {"time":"2024-11-25T10:15:30.101Z","type":"function","record":"ok"}]`,
			[]got{{"function", "2024-11-25T10:15:30.101Z", "ok", meta{}}}},
		{"long line truncated", `[{"time":"2024-11-25T10:15:30.101Z","type":"function","record":"` + strings.Repeat("é", 200) + `"}]`,
			[]got{{"function", "2024-11-25T10:15:30.101Z", strings.Repeat("é", 138) + "…[truncated 124 bytes]", meta{}}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			l := testListener(defaultTypes)
			if status := post(l, tc.events); status != http.StatusOK {
				t.Fatalf("status %d", status)
			}
			if diff := cmp.Diff(tc.want, stored(l), cmp.AllowUnexported(meta{})); diff != "" {
				t.Errorf("(-want +got):\n%s", diff)
			}
		})
	}
}

func TestTypeFilter(t *testing.T) {
	t.Parallel()
	body := `[{"time":"2024-11-25T10:15:31.000Z","type":"platform.start","record":{"requestId":"r"}},
		{"time":"2024-11-25T10:15:31.000Z","type":"extension","record":"theirs\n"},
		{"time":"2024-11-25T10:15:31.000Z","type":"extension","record":"loki-extension: ours\n"},
		{"time":"2024-11-25T10:15:31.000Z","type":"function","record":"fn"}]`
	for types, want := range map[string][]string{
		"platform,extension":     {`platform.start {"requestId":"r"}`, "theirs"},
		"platform.start":         {`platform.start {"requestId":"r"}`},
		" function , extension ": {"theirs", "fn"},
	} {
		l := testListener(types)
		post(l, body)
		if diff := cmp.Diff(want, lines(l.batch.entries)); diff != "" {
			t.Errorf("LOKI_TYPES=%q (-want +got):\n%s", types, diff)
		}
	}
}

// TestRequestIDsFromTheTelemetry: a line without a request id of its own
// takes that of the invocation whose platform.start … platform.runtimeDone
// holds its time, with its trace and tenant: none during Init or between
// invocations, and a late line keeps its own invocation's.
func TestRequestIDsFromTheTelemetry(t *testing.T) {
	t.Parallel()
	a, b := "aaaaaaaa-0000-4000-8000-000000000001", "bbbbbbbb-0000-4000-8000-000000000002"
	ev := func(ms int, typ, record string) string {
		return fmt.Sprintf(`{"time":"2024-11-25T10:15:31.%03dZ","type":%q,"record":%s}`, ms, typ, record)
	}
	deliveries := []string{
		ev(0, "platform.initStart", `{"phase":"init"}`) + "," + ev(1, "function", `"init line"`),
		ev(10, "platform.start", `{"requestId":"`+a+`","tenantId":"t-a","tracing":{"value":"Root=1-aaa;Sampled=1"}}`) + "," +
			ev(11, "function", `"a line"`) + "," + ev(12, "function", `{"requestId":"`+b+`","message":"names b"}`),
		ev(15, "platform.runtimeDone", `{"requestId":"`+a+`","status":"success"}`) + "," + ev(16, "function", `"between"`),
		ev(20, "platform.start", `{"requestId":"`+b+`","tracing":{"value":"Root=1-bbb"}}`) + "," +
			ev(14, "function", `"late line of a"`) + "," + ev(21, "function", `"b line"`),
	}
	for _, lmi := range []bool{false, true} {
		l := testListener(defaultTypes)
		l.inferRequestID = !lmi
		for _, d := range deliveries {
			if status := post(l, "["+d+"]"); status != http.StatusOK {
				t.Fatalf("status %d for %s", status, d)
			}
		}
		metas := map[string]meta{}
		for _, e := range l.batch.entries {
			metas[lineText(e)] = metaOf(e)
		}
		want := map[string]meta{
			"init line": {},
			"a line":    {requestID: a, traceID: "1-aaa", tenantID: "t-a"},
			`{"requestId":"` + b + `","message":"names b"}`: {requestID: b}, // before b's platform.start
			"between":        {},
			"late line of a": {requestID: a, traceID: "1-aaa", tenantID: "t-a"},
			"b line":         {requestID: b, traceID: "1-bbb"},
		}
		if lmi { // concurrent invocations: only what a line says itself
			for line, m := range want {
				if !strings.HasPrefix(line, "{") {
					m = meta{}
				}
				want[line] = m
			}
		}
		if diff := cmp.Diff(want, metas, cmp.AllowUnexported(meta{})); diff != "" {
			t.Errorf("Managed Instances %t (-want +got):\n%s", lmi, diff)
		}
	}
}

// TestListenerRejectsBadBodies: a body that does not begin a JSON array,
// or is too large, is refused and nothing of it kept.
func TestListenerRejectsBadBodies(t *testing.T) {
	t.Parallel()
	for body, want := range map[string]int{
		``:                    http.StatusBadRequest,
		`{"type":"function"}`: http.StatusBadRequest,
		`"[{}]"`:              http.StatusBadRequest,
		`[` + strings.Repeat(`{"type":"function","record":"x"},`, maxBodyBytes/32) + `"x"]`: http.StatusRequestEntityTooLarge,
		`[]`:      http.StatusOK,
		" [ ] \n": http.StatusOK,
	} {
		l := testListener(defaultTypes)
		if got := post(l, body); got != want {
			t.Errorf("body %.40q: status %d, want %d", body, got, want)
		}
		if want != http.StatusOK && len(l.batch.entries) > 0 {
			t.Errorf("body %.40q: kept %d entries of a rejected body", body, len(l.batch.entries))
		}
	}
	w := httptest.NewRecorder()
	testListener(defaultTypes).ServeHTTP(w, httptest.NewRequest(http.MethodGet, "/", nil))
	if w.Code != http.StatusMethodNotAllowed {
		t.Errorf("GET: status %d", w.Code)
	}
}

func TestTruncate(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		line string
		max  int
	}{
		{strings.Repeat("a", 1000), 100},
		{strings.Repeat("日本", 500), 100},
		{strings.Repeat("🎉", 300), 257},
		{strings.Repeat("a", 300), 10}, // smaller than the marker
	} {
		got := truncate(tc.line, tc.max)
		if len(got) > max(tc.max, len("…[truncated 300 bytes]")) {
			t.Errorf("truncate to %d: %d bytes", tc.max, len(got))
		}
		kept, _, _ := strings.Cut(got, "…[truncated ")
		if !strings.HasPrefix(tc.line, kept) || !strings.HasSuffix(got, fmt.Sprintf("%d bytes]", len(tc.line)-len(kept))) {
			t.Errorf("truncate(%.20q…, %d) = %q", tc.line, tc.max, got)
		}
		if !utf8.ValidString(got) || !strings.Contains(got, "…") || strings.ContainsRune(got, '\ufffd') {
			t.Errorf("truncate cut a rune: %q", got)
		}
	}
}

func TestWaitRuntimeDone(t *testing.T) {
	t.Parallel()
	l := testListener(defaultTypes)
	// A runtimeDone that arrived before the wait began counts.
	post(l, `[{"time":"2024-11-25T10:15:31.000Z","type":"platform.runtimeDone","record":{"requestId":"early"}}]`)
	if !l.waitRuntimeDone(t.Context(), "early", time.Now().Add(waitLimit)) {
		t.Error("missed a runtimeDone that came first")
	}
	go post(l, `[{"time":"2024-11-25T10:15:31.000Z","type":"platform.runtimeDone","record":{"requestId":"later"}}]`)
	if !l.waitRuntimeDone(t.Context(), "later", time.Now().Add(waitLimit)) {
		t.Error("missed a runtimeDone that came while waiting")
	}
	if l.waitRuntimeDone(t.Context(), "never", time.Now().Add(20*time.Millisecond)) {
		t.Error("reported a runtimeDone that never came")
	}
}

// FuzzListenerDecode: the listener makes of any body what the reference
// (reference_test.go: encoding/json and the README's rules) makes of it:
// the same status, entries (source, time, line, metadata and level) and
// counts of truncated lines and of Lambda's drops. It does so for the body
// as it is, and for a delivery built around it (deliveryOf), so that
// random content reaches every kind of record. Every JSON array that
// encoding/json finds valid is taken, and the entries re-encode for Loki
// to the same lines.
func FuzzListenerDecode(f *testing.F) {
	for _, seed := range []string{
		`[{"time":"2024-11-25T10:15:30.101Z","type":"function","record":"2024-11-25T10:15:30.100Z\t8f5c0a61-0d4e-4c1e-9f55-3c0b2c7e9a10\tINFO\tloaded 3 items\n"}]`,
		`[{"time":"2024-11-25T10:15:30.101Z","type":"function","record":{"timestamp":"2024-11-25T10:15:30.100Z","level":"INFO","requestId":"8f5c0a61-0d4e-4c1e-9f55-3c0b2c7e9a10","message":"loaded 3 items"}}]`,
		`[{"time":"2024-11-25T10:15:29.871Z","type":"platform.initStart","record":{"initializationType":"on-demand","phase":"init","runtimeVersion":"python:3.12.v40","functionName":"orders-api","functionVersion":"$LATEST"}}]`,
		`[{"time":"2024-11-25T10:15:30.002Z","type":"platform.start","record":{"requestId":"8f5c0a61-0d4e-4c1e-9f55-3c0b2c7e9a10","version":"$LATEST","tracing":{"spanId":"1a2b3c4d5e6f7a8b","type":"X-Amzn-Trace-Id","value":"Root=1-6744a1b2-0a1b2c3d4e5f60718293a4b5;Parent=1a2b3c4d5e6f7a8b;Sampled=0"}}}]`,
		`[{"time":"2024-11-25T10:15:30.214Z","type":"platform.runtimeDone","record":{"requestId":"8f5c0a61-0d4e-4c1e-9f55-3c0b2c7e9a10","status":"success","metrics":{"durationMs":211.4,"producedBytes":52},"spans":[{"name":"responseLatency","start":"2024-11-25T10:15:30.003Z","durationMs":209.7}]}}]`,
		`[{"time":"2024-11-25T10:15:30.260Z","type":"platform.report","record":{"requestId":"8f5c0a61-0d4e-4c1e-9f55-3c0b2c7e9a10","status":"success","metrics":{"durationMs":213.02,"billedDurationMs":214,"memorySizeMB":512,"maxMemoryUsedMB":71,"initDurationMs":388.51}}}]`,
		`[{"time":"2024-11-25T10:15:31.000Z","type":"platform.logsDropped","record":{"droppedBytes":48213,"droppedRecords":311,"reason":"slow"}}]`,
		`[{"time":"x","type":"function","record":"\u0000\ud800"}, 1, null]`,
		`[`, `{}`, `[{"type":"function","record":{"level":{"a":[[[[]]]]}}}]`,
		`[{"type":"function","record":{"a":1,"a":2}},{"type":"function","record":"` + "\xff" + `"}]`,
		`[{"t\u0069me":"2024-11-25T10:15:30.101Z","\u0074ype":"\u0066unction","record":"x\u000a"},{"type":"function","record":"\x"}]`,
		"2024-11-25T10:15:30.100Z\t" + rid + "\tINFO\tm\n\x00{\"level\":\"warn\",\"requestId\":\"" + rid + "\"}\x00{\"requestId\":\"" + rid + "\",\"tracing\":{\"value\":\"Root=1-abc\"}}",
		`[{"type":"extension","record":"\u006coki-extension: ours"},{"type":"extension","record":"loki-extension: ours\n"},{"type":"extension","record":"theirs"}]`,
		`[{"time":"2024-11-25T10:15:30.000Z","type":"platform.start","record":{"requestId":"` + rid + `","tenantId":"t1","tracing":{"value":"Root=1-abc"}}},{"time":"2024-11-25T10:15:30.001Z","type":"function","record":"x"},` +
			`{"time":"2024-11-25T10:15:30.002Z","type":"platform.report","record":{"requestId":"` + rid + `","tenantId":"t1","status":"timeout","metrics":{"durationMs":1}}}]`,
		"[{\"type\":\"function\",\"record\":\"a \xff and \\ud800\"}]", "[{\"type\":\"function\",\"record\":\"a \xff and \\ud800\"}] ",
		"[{\"type\":\"function\",\"record\":\"tab\\t\xff\"},{\"type\":\"function\",\"record\":\"{\\t}\"}]", "[{\"type\":\"function\",\"record\":\"tab\\t\xff\"},{\"type\":\"function\",\"record\":\"{\\t}\"}] ",
		"[ERROR]\t2024-11-25T10:15:30.100Z\t" + rid + "\tboom\x00{\"requestId\":\"" + rid + "\",\"status\":\"error\"}\x00x\x00{\"droppedRecords\":3}\x00loki-extension: ours",
		`[{"type":"function","record":"2024-11-25T10:15:30.100Z\t` + rid + `\tDEBUG\tpayload {\"a\":1,\"b\":\"\\\"\"}\n"},` +
			`{"type":"function","record":"2024-11-25T10:15:3\"\t` + rid + `\tWARN\tx"},{"type":"function","record":"{\t\t\t\"level\":\"warn\"}"},` +
			`{"type":"extension","record":"loki-extension: \t\t\t\"x\""},{"type":"function","record":"[INFO]\t2024-11-25T10:15:30.100Z\t` + rid + `\t\"q\"\\n"}]`,
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, body string) {
		checkAgainstReference(t, body)
		checkAgainstReference(t, deliveryOf(body))
	})
}

// TestTextReadEscapedAgrees: text lines that the listener reads without
// unquoting them (readsEscaped) or that look as if it could, give what the
// reference gives from their unquoted text: prefix, level, request id, our
// own output and JSON objects.
func TestTextReadEscapedAgrees(t *testing.T) {
	for _, record := range []string{
		`2024-11-25T10:15:30.100Z\t` + rid + `\tDEBUG\tpayload {\"a\":1,\"b\":\"\\\"\"}\n`,
		`2024-11-25T10:15:3\"\t` + rid + `\tWARN\tx`, // a quote in the prefix
		`2024-11-25T10:15:30.100Z\t` + rid + `\"\tWARN\tx`,
		`{\t\t\t\"level\":\"warn\"}`, `{\t}`, `loki-extension: \t\t\t\"x\"`, `loki-extension\": x`,
		`[INFO]\t2024-11-25T10:15:30.100Z\t` + rid + `\t\"q\"\\n`, `a\\tb\tc\td\t\"`, `a\tb\tc\t\\\"`,
		`\u006coki-extension: x`, `2024-11-25T10:15:30.100Z\t` + rid + `\t\u0049NFO\tx`, `2024-11-25T10:15:30.100Z\t` + rid + `\tINFO\tsurrogate \ud800 and \u00e9`,
		`2024-11-25T10:15:30.100Z\t` + rid + `\tINFO\ta \\ b \/ c \n d \r\b\f`, `x\\n`, `x\\\n`, `\u007b\t\t\t\"level\":\"warn\"}`,
	} {
		body := `[{"time":"2024-11-25T10:15:30.101Z","type":"function","record":"` + record + `"},` +
			`{"time":"2024-11-25T10:15:30.102Z","type":"extension","record":"` + record + `"}]`
		if !json.Valid([]byte(body)) {
			t.Fatalf("not JSON: %s", body)
		}
		for _, minLevel := range []severity{0, levelOf("info"), levelOf("error")} {
			checkWith(t, body, "function,extension", minLevel)
		}
	}
}

// deliveryOf builds a delivery of one event for each part of s between NUL
// bytes, of the types in turn; a part that is JSON is the record as it is,
// any other is a text record.
func deliveryOf(s string) string {
	types := []string{"function", "extension", "platform.start", "function", "platform.runtimeDone", "platform.report", "platform.logsDropped"}
	var events []string
	for i, part := range strings.Split(s, "\x00") {
		record, _ := json.Marshal(part)
		if json.Valid([]byte(part)) {
			record = []byte(part)
		}
		events = append(events, fmt.Sprintf(`{"time":"2024-11-25T10:15:30.%03dZ","type":%q,"record":%s}`, i%1000, types[i%len(types)], record))
	}
	return "[" + strings.Join(events, ",") + "]"
}

// checkAgainstReference compares what the listener makes of body, in a
// configuration that body picks, with what the reference makes of it.
func checkAgainstReference(t *testing.T, body string) {
	t.Helper()
	types := []string{"function,platform,extension", defaultTypes, "extension,platform.start,platform.error"}[len(body)%3]
	checkWith(t, body, types, severity(len(body)%7)) // no minimum level, or trace to fatal
}

// checkWith compares what the listener makes of body, with LOKI_TYPES
// types and the minimum level minLevel, with what the reference makes of it.
func checkWith(t *testing.T, body, types string, minLevel severity) {
	t.Helper()
	l := testListener(types)
	l.inferRequestID, l.offset, l.minLevel = len(body)%2 == 0, 123, minLevel
	want := reference(body, refConfig{types: l.types, maxLine: l.maxLine, infer: l.inferRequestID, ownPrefix: l.ownPrefix, offset: l.offset,
		received: l.now(), minLevel: l.minLevel.String()})

	// The entries the listener hands to the batch, before batch.add.
	dv := delivery{received: l.now()}
	l.mu.Lock()
	err := l.decode([]byte(body), &dv)
	l.mu.Unlock()
	res := refResult{Status: http.StatusOK, Truncated: dv.truncated, DroppedByLambda: dv.dropped, Filtered: dv.filtered}
	if err != nil {
		res.Status = http.StatusBadRequest
	}
	for _, e := range dv.entries {
		m := metaOf(e) // as Loki gets it: invalid UTF-8 as U+FFFD
		m = meta{jsonRoundTrip(m.requestID), jsonRoundTrip(m.traceID), jsonRoundTrip(m.tenantID), m.level, jsonRoundTrip(m.eventType)}
		res.Entries = append(res.Entries, got{e.src.String(), time.Unix(0, e.ts).UTC().Format(time.RFC3339Nano), lineText(e), m})
	}
	if diff := cmp.Diff(want, res, cmp.AllowUnexported(meta{})); diff != "" {
		t.Fatalf("body %q, LOKI_TYPES=%s, LOKI_MIN_LEVEL=%s, request ids inferred %t: listener differs from the reference (-want +got):\n%s", body, types, l.minLevel, l.inferRequestID, diff)
	}
	if status := post(testListener(types), body); status != want.Status {
		t.Fatalf("status %d, want %d", status, want.Status)
	}
	// What encoding/json takes for an array, the listener takes.
	if array := strings.TrimLeft(body, " \t\r\n"); strings.HasPrefix(array, "[") && json.Valid([]byte(body)) && res.Status != http.StatusOK {
		t.Fatalf("status %d for a valid JSON array", res.Status)
	}
	if len(dv.entries) == 0 || dv.overflow > 0 {
		if dv.overflow > 0 {
			t.Fatalf("%d entries over the cap", dv.overflow)
		}
		return // the shipper never encodes nothing
	}
	s, _ := testShipper(t, lokiTarget{})
	var back []string
	for _, st := range decodeBody(t, s.encode(dv.entries)).Streams {
		for _, v := range st.Values {
			back = append(back, v.Line)
		}
	}
	var lines []string
	for src := range numSources {
		for _, e := range dv.entries {
			if e.src == src {
				lines = append(lines, lineText(e))
			}
		}
	}
	if diff := cmp.Diff(lines, back); diff != "" {
		t.Errorf("lines (-want +got):\n%s", diff)
	}
	for _, e := range dv.entries {
		// An escaped line goes to Loki as it is: it must be valid UTF-8
		// and hold no lone surrogate escape.
		if _, err := jsontext.AppendUnquote(nil, `"`+e.line+`"`); e.escaped && (err != nil || !utf8.ValidString(e.line)) {
			t.Errorf("escaped line %q is not valid JSON string content: %v", e.line, err)
		}
		if len(e.line) > l.maxLine {
			t.Errorf("line of %d bytes over the maximum %d", len(e.line), l.maxLine)
		}
	}
}

// TestMinLevel: with LOKI_MIN_LEVEL, function and extension lines of a
// known, lower level are dropped and counted, wherever the level is found
// (a JSON record's field, the Node.js or Python text prefix); lines with
// no level and platform events stay.
func TestMinLevel(t *testing.T) {
	t.Parallel()
	l := testListener("function,extension,platform")
	l.minLevel = levelOf("warn")
	post(l, `[{"time":"2025-01-01T00:00:00.001Z","type":"function","record":"2025-01-01T00:00:00.001Z\t`+rid+`\tDEBUG\tnode debug\n"},
		{"time":"2025-01-01T00:00:00.002Z","type":"function","record":"2025-01-01T00:00:00.002Z\t`+rid+`\tWARN\tnode warn\n"},
		{"time":"2025-01-01T00:00:00.003Z","type":"function","record":"[INFO]\t2025-01-01T00:00:00.003Z\t`+rid+`\tpython info\n"},
		{"time":"2025-01-01T00:00:00.004Z","type":"function","record":"[ERROR]\t2025-01-01T00:00:00.004Z\t`+rid+`\tpython error\n"},
		{"time":"2025-01-01T00:00:00.005Z","type":"function","record":{"level":"Info","message":"json info"}},
		{"time":"2025-01-01T00:00:00.006Z","type":"function","record":{"level":"FATAL","message":"json fatal"}},
		{"time":"2025-01-01T00:00:00.007Z","type":"function","record":"{\"level\":\"trace\",\"message\":\"json as text\"}"},
		{"time":"2025-01-01T00:00:00.008Z","type":"extension","record":"2025-01-01T00:00:00.008Z\t`+rid+`\tDEBUG\textension debug"},
		{"time":"2025-01-01T00:00:00.009Z","type":"function","record":"no level at all"},
		{"time":"2025-01-01T00:00:00.010Z","type":"platform.initStart","record":{"initializationType":"on-demand"}}]`)
	var lines []string
	for _, e := range l.batch.entries {
		lines = append(lines, lineText(e))
	}
	want := []string{"2025-01-01T00:00:00.002Z\t" + rid + "\tWARN\tnode warn", "[ERROR]\t2025-01-01T00:00:00.004Z\t" + rid + "\tpython error",
		`{"level":"FATAL","message":"json fatal"}`, "no level at all", `platform.initStart {"initializationType":"on-demand"}`}
	if diff := cmp.Diff(want, lines); diff != "" {
		t.Errorf("lines (-want +got):\n%s", diff)
	}
	if c := l.batch.counters(); c.droppedFiltered != 5 {
		t.Errorf("%d lines counted as filtered, want 5", c.droppedFiltered)
	}
}

// TestMaxBytesPerSecond: with LOKI_MAX_BYTES_PER_SECOND, a bucket of one
// second's bytes, filled at that rate, lets lines through while it holds
// their bytes; the rest are dropped, counted and told once. Platform
// events are not counted against it.
func TestMaxBytesPerSecond(t *testing.T) {
	t.Parallel()
	var out bytes.Buffer
	l := testListener("function,platform")
	l.rate, l.log = 100, &onceLogger{log: log.New(&out, "", 0)}
	now := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	l.now = func() time.Time { return now }
	line := func(text string) string {
		return `{"time":"2025-01-01T00:00:00.001Z","type":"function","record":"` + text + `"}`
	}
	thirty := strings.Repeat("x", 30)
	deliver := func(n int) {
		var events []string
		for range n {
			events = append(events, line(thirty))
		}
		events = append(events, `{"time":"2025-01-01T00:00:00.001Z","type":"platform.initStart","record":{}}`)
		post(l, "["+strings.Join(events, ",")+"]")
	}
	count := func() (kept int) {
		for _, e := range l.batch.entries {
			if e.src == sourceFunction {
				kept++
			}
		}
		return kept
	}
	deliver(5) // a full bucket of 100 bytes: three lines of 30
	if kept, c := count(), l.batch.counters(); kept != 3 || c.droppedOverRate != 2 {
		t.Errorf("first second: %d lines kept, %d dropped; want 3 and 2", kept, c.droppedOverRate)
	}
	now = now.Add(500 * time.Millisecond) // 10 + 50 bytes: two more
	deliver(5)
	if kept, c := count(), l.batch.counters(); kept != 5 || c.droppedOverRate != 5 {
		t.Errorf("half a second later: %d lines kept, %d dropped; want 5 and 5", kept, c.droppedOverRate)
	}
	now = now.Add(time.Hour) // the bucket holds one second's bytes, no more
	deliver(5)
	if kept, c := count(), l.batch.counters(); kept != 8 || c.droppedOverRate != 7 {
		t.Errorf("an hour later: %d lines kept, %d dropped; want 8 and 7", kept, c.droppedOverRate)
	}
	if n := len(l.batch.entries) - count(); n != 3 {
		t.Errorf("%d platform events kept, want 3", n)
	}
	// A delivery read twice (invalid UTF-8 fails the strict read) is
	// charged once: 90 of the bucket's 100 bytes.
	now = now.Add(time.Hour)
	post(l, "["+line(thirty)+","+line(thirty)+","+line(thirty[1:]+"\xff")+"]")
	if kept := count(); kept != 11 {
		t.Errorf("a delivery read twice: %d lines kept in all, want 11", kept)
	}
	if got := strings.Count(out.String(), "LOKI_MAX_BYTES_PER_SECOND"); got != 1 {
		t.Errorf("%d messages about the cap, want 1:\n%s", got, out.String())
	}
}

// BenchmarkListener measures a 1000-line delivery into the batch: text
// lines as Node.js writes them, JSON records, and half of each.
func BenchmarkListener(b *testing.B) {
	text := func(i int) any {
		return fmt.Sprintf("2024-11-25T10:15:30.100Z\t%s\tINFO\tloaded %d items from the cache in 12 ms\n", rid, i)
	}
	record := func(i int) any {
		return map[string]any{"timestamp": "2024-11-25T10:15:30.100Z", "level": "INFO", "requestId": rid, "message": fmt.Sprintf("loaded %d items", i)}
	}
	for _, kind := range []string{"text", "json", "mixed"} {
		b.Run(kind, func(b *testing.B) {
			events := []map[string]any{{"time": "2024-11-25T10:15:30.000Z", "type": "platform.start", "record": map[string]any{"requestId": rid}}}
			for i := range 1000 {
				r := text(i)
				if kind == "json" || kind == "mixed" && i%2 == 1 {
					r = record(i)
				}
				events = append(events, map[string]any{"time": "2024-11-25T10:15:30.101Z", "type": "function", "record": r})
			}
			body, _ := json.Marshal(events)
			l := testListener(defaultTypes)
			b.SetBytes(int64(len(body)))
			b.ReportAllocs()
			for b.Loop() {
				if post(l, string(body)) != http.StatusOK {
					b.Fatal("not accepted")
				}
				l.batch.take(1 << 30)
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*1000), "ns/line")
		})
	}
}

// BenchmarkCostControl measures the cost per line of LOKI_MIN_LEVEL and
// LOKI_MAX_BYTES_PER_SECOND, each on and off, on a 1000-line delivery of
// Node.js text lines and JSON records, INFO and DEBUG alternating, with a
// minimum level that drops none (info) and a rate that caps none, so that
// every line pays for the checks and still goes to the batch.
func BenchmarkCostControl(b *testing.B) {
	events := []map[string]any{{"time": "2024-11-25T10:15:30.000Z", "type": "platform.start", "record": map[string]any{"requestId": rid}}}
	for i := range 1000 {
		level := []string{"INFO", "DEBUG"}[i%2]
		var r any = fmt.Sprintf("2024-11-25T10:15:30.100Z\t%s\t%s\tloaded %d items from the cache in 12 ms\n", rid, level, i)
		if i%4 >= 2 {
			r = map[string]any{"timestamp": "2024-11-25T10:15:30.100Z", "level": level, "requestId": rid, "message": fmt.Sprintf("loaded %d items", i)}
		}
		events = append(events, map[string]any{"time": "2024-11-25T10:15:30.101Z", "type": "function", "record": r})
	}
	body, _ := json.Marshal(events)
	for _, knobs := range []struct {
		name     string
		minLevel severity
		rate     float64
	}{{"off", 0, 0}, {"min-level", levelOf("debug"), 0}, {"rate", 0, 1 << 40}, {"both", levelOf("debug"), 1 << 40}} {
		b.Run(knobs.name, func(b *testing.B) {
			l := testListener(defaultTypes)
			l.minLevel, l.rate = knobs.minLevel, knobs.rate
			b.ReportAllocs()
			for b.Loop() {
				if post(l, string(body)) != http.StatusOK || len(l.batch.entries) != 1000 {
					b.Fatal("not all accepted")
				}
				l.batch.take(1 << 30)
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*1000), "ns/line")
		})
	}
}

// TestFloodStaysBounded: a delivery of far more lines than the buffer holds
// keeps the buffer and the delivery's own entries under the cap, and
// counts every line it could not keep.
func TestFloodStaysBounded(t *testing.T) {
	t.Parallel()
	l := newListener(newBatch(1<<20, 1<<20), typeFilter{"function": true}, 1024, "x: ", true)
	const n = 50000
	body := "[" + strings.Repeat(`{"time":"2024-11-25T10:15:30.101Z","type":"function","record":"flood line\n"},`, n-1) +
		`{"time":"2024-11-25T10:15:30.101Z","type":"function","record":"flood line\n"}]`
	if status := post(l, body); status != http.StatusOK {
		t.Fatalf("status %d", status)
	}
	c := l.batch.counters()
	kept := len(l.batch.entries)
	if kept+int(c.droppedFull) != n || l.batch.queued > 1<<20 || cap(l.scratch)*entrySize > 2<<20 {
		t.Errorf("kept %d + dropped %d of %d; queued %d bytes; scratch capacity %d", kept, c.droppedFull, n, l.batch.queued, cap(l.scratch))
	}
}

// TestEscapedLines: text lines are kept as Lambda escaped them and reach
// Loki as the same text; one trailing newline goes, an escaped backslash
// before an n does not.
func TestEscapedLines(t *testing.T) {
	t.Parallel()
	for record, want := range map[string]string{
		`"plain"`:                "plain",
		`"tab\tand quote \" \n"`: "tab\tand quote \" ",
		`"two\n\n"`:              "two\n",
		`"backslash n \\n"`:      `backslash n \n`,
		`"three \\\n"`:           `three \`,
		`"\u00e9\ud83c\udf89"`:   "é🎉",
		`"\n"`:                   "",
		`""`:                     "",
		`"unicode nl\u000a"`:     "unicode nl",
		`"not a nl \\u000a"`:     `not a nl \u000a`,
	} {
		l := testListener(defaultTypes)
		post(l, `[{"time":"2024-11-25T10:15:30.101Z","type":"function","record":`+record+`}]`)
		s, _ := testShipper(t, lokiTarget{})
		req := decodeBody(t, s.encode(l.batch.entries))
		if got := req.Streams[0].Values[0].Line; got != want {
			t.Errorf("record %s reached Loki as %q, want %q", record, got, want)
		}
	}
}

// TestOddRecordsKeepTheirDelivery: a repeated key, invalid UTF-8, a lone
// surrogate, nesting as deep as the standard library reads (10,000 levels
// with the array and the event), and numbers of any form cost neither the
// delivery nor its runtimeDone; each record lands as written (invalid
// UTF-8 as U+FFFD), in the span of its invocation.
func TestOddRecordsKeepTheirDelivery(t *testing.T) {
	t.Parallel()
	deep := "[" + strings.Repeat(`{"a":[`, 4998) + "1" + strings.Repeat("]}", 4998) + "]"
	records := []string{
		`{"level":"INFO","level":"ERROR","message":"repeated key"}`,
		"{\"message\":\"raw \xff byte\"}",
		`{"message":"lone \ud800 surrogate"}`,
		`{"n":[1e400,-0,0.1e-999,123456789012345678901234567890,-1.5E+3]}`,
		deep,
		`"text \ud83c\udf89 and \ud800"`,
	}
	events := []string{`{"time":"2024-11-25T10:15:30.100Z","type":"platform.start","record":{"requestId":"` + rid + `"}}`}
	for _, r := range records {
		events = append(events, `{"time":"2024-11-25T10:15:30.101Z","type":"function","record":`+r+`}`)
	}
	events = append(events, `{"time":"2024-11-25T10:15:30.102Z","type":"platform.runtimeDone","record":{"requestId":"`+rid+`","status":"success"}}`)
	l := testListener("function")
	l.maxLine = 1 << 20
	if status := post(l, "["+strings.Join(events, ",")+"]"); status != http.StatusOK {
		t.Fatalf("status %d", status)
	}
	if !l.waitRuntimeDone(t.Context(), rid, time.Now()) {
		t.Error("the delivery's runtimeDone was lost")
	}
	var lines []string
	for _, e := range l.batch.entries {
		lines = append(lines, lineText(e))
	}
	want := []string{records[0], "{\"message\":\"raw \ufffd byte\"}", records[2], records[3], deep, "text 🎉 and \ufffd"}
	if diff := cmp.Diff(want, lines); diff != "" {
		t.Errorf("lines (-want +got):\n%.2000s", diff)
	}
	if got := l.batch.entries[0].level.String(); got != "info" {
		t.Errorf("level of a record with a repeated key: %q, want the first, info", got)
	}
	if got := l.batch.entries[1].meta.requestID; got != rid {
		t.Errorf("request id %q, want %s", got, rid)
	}
	n := 0
	for _, sp := range l.spans {
		if sp.requestID == rid {
			n++
		}
	}
	if n != 1 || l.nextSpan != 1 {
		t.Errorf("%d spans of the invocation and the next span at %d, want 1 and 1", n, l.nextSpan)
	}
	if n := strings.Count(strings.Join(l.done[:], " "), rid); n != 1 {
		t.Errorf("runtimeDone recorded %d times, want once", n)
	}
}

// TestLevels: a JSON record's level is decoded and normalized, and a value
// that is not a level word is no metadata.
func TestLevels(t *testing.T) {
	t.Parallel()
	for level, want := range map[string]string{
		`"INFO"`: "info", `"\u0057ARN"`: "warn", `"warning"`: "warn", `"Err"`: "error", `"CRIT"`: "critical",
		`"fatal"`: "fatal", `"trace"`: "trace", `"DEBUG"`: "debug", `"verbose"`: "", `30`: "", `"INFO "`: "",
		`"<script>"`: "", `{"a":"info"}`: "", `"` + strings.Repeat("x", 1000) + `"`: "",
	} {
		l := testListener("function")
		post(l, `[{"time":"2024-11-25T10:15:30.101Z","type":"function","record":{"level":`+level+`,"message":"m"}}]`)
		if got := l.batch.entries[0].level.String(); got != want {
			t.Errorf("level %.20s: %q, want %q", level, got, want)
		}
	}
}

// TestEnvironmentOffset: the same line in the same millisecond from two
// environments of a function gets two timestamps, both in that
// millisecond; a record's own time with finer digits is kept as it is.
func TestEnvironmentOffset(t *testing.T) {
	t.Parallel()
	body := `[{"time":"2024-11-25T10:15:30.101Z","type":"function","record":{"timestamp":"2024-11-25T10:15:30.100250Z","message":"own time"}},
		{"time":"2024-11-25T10:15:30.101Z","type":"function","record":"same line"}]`
	ms := time.Date(2024, 11, 25, 10, 15, 30, 101_000_000, time.UTC).UnixNano()
	seen := map[int64]bool{}
	for range 2 {
		l := newListener(newBatch(1<<20, 1<<20), typeFilter{"function": true}, 1000, "x: ", true)
		post(l, body)
		e := l.batch.entries
		if want := ms - 750_000; e[0].ts != want {
			t.Errorf("record at %d, want its own time %d", e[0].ts, want)
		}
		if e[1].ts < ms || e[1].ts >= ms+int64(time.Millisecond) || e[1].ts != ms+l.offset {
			t.Errorf("text line at %d, want %d plus this environment's offset %d", e[1].ts, ms, l.offset)
		}
		seen[e[1].ts] = true
	}
	if len(seen) != 2 {
		t.Error("two environments gave the same line the same timestamp") // a chance of 1 in 10^6
	}
}

// TestMetadataWithinLokisLimits: tenant ids go into metadata, but no value
// an event names can make it large.
func TestMetadataWithinLokisLimits(t *testing.T) {
	t.Parallel()
	long := strings.Repeat("t", 70000)
	l := testListener("function,platform")
	post(l, `[{"time":"2024-11-25T10:15:30.100Z","type":"platform.report","record":{"requestId":"`+rid+`","tenantId":"tenant-1","metrics":{"durationMs":1}}},
		{"time":"2024-11-25T10:15:30.101Z","type":"function","record":{"tenantId":"`+long+`","requestId":"`+long+`","level":"`+long+`"}},
		{"time":"2024-11-25T10:15:30.102Z","type":"platform.`+long+`","record":{"tenantId":"`+long+`"}}]`)
	if got := l.batch.entries[0].meta; got.tenantID != "tenant-1" || got.requestID != rid {
		t.Errorf("report metadata %+v", got)
	}
	for _, e := range l.batch.entries {
		m := e.meta
		if n := len(m.requestID) + len(m.traceID) + len(m.tenantID) + len(e.level.String()) + len(m.eventType); n > 1024 {
			t.Errorf("%d bytes of metadata for %.40q", n, e.line)
		}
	}
	if len(l.batch.entries) != 2 {
		t.Errorf("%d entries, want the report and the function line (the event type is too long)", len(l.batch.entries))
	}
}

// TestParseTime: the fast path agrees with time.Parse.
func TestParseTime(t *testing.T) {
	t.Parallel()
	for _, s := range []string{"2024-11-25T10:15:30.123Z", "2024-02-29T23:59:59.999Z", "2023-02-29T10:15:30.123Z", "2024-13-25T10:15:30.123Z",
		"2024-11-25T24:15:30.123Z", "2024-11-25T10:60:30.123Z", "2024-1a-25T10:15:30.123Z", "2024-11-25T10:15:30.12Z", "2024-11-25T10:15:30.123456Z",
		"2024-11-25T10:15:30+02:00", "0000-01-01T00:00:00.000Z", "-024-11-25T10:15:30.123Z", "12:01:23:521Z",
		"2024-11-31T10:15:30.123Z", "2024-11-32T10:15:30.123Z", "2024-11-00T10:15:30.123Z", "2024-11-28T10:15:30.123Z", "2024-12-31T10:15:30.123Z"} {
		want, err := time.Parse(time.RFC3339Nano, s)
		got, ok := parseTime(jsontext.Value(`"` + s + `"`))
		if ok != (err == nil) || ok && !got.Equal(want) {
			t.Errorf("parseTime(%q) = %v, %t; time.Parse: %v, %v", s, got, ok, want, err)
		}
	}
}

// TestIsRequestID: only a UUID's form is a request id.
func TestIsRequestID(t *testing.T) {
	t.Parallel()
	for id, want := range map[string]bool{
		rid: true, strings.ToUpper(rid): true, "undefined": false, rid[:35]: false, rid + "0": false,
		"8f5c0a61-0d4e-4c1e-9f55-3c0b2c7e9a1g": false, "8f5c0a61-0d4e-4c1e-9f55-3c0b2c7e9a1\x10": false,
		"8f5c0a610-d4e-4c1e-9f55-3c0b2c7e9a10": false, "8f5c0a61-0d4e-4c1e-9f55-3c0b2c7e9-10": false,
	} {
		if got := isRequestID(id); got != want {
			t.Errorf("isRequestID(%q) = %v", id, got)
		}
		if got := isRequestID([]byte(id)); got != want {
			t.Errorf("isRequestID([]byte(%q)) = %v", id, got)
		}
	}
}

// TestUnreadableElements: an element that cannot be read (invalid JSON,
// nested deeper than the standard library reads, cut off) ends the reading
// of its delivery. The events before it are kept; it becomes a text line
// of the rest of the body, through the same steps as any line: the type
// and time read before the failure, LOKI_TYPES, the line limit and its
// counter. Without a type it adds nothing.
func TestUnreadableElements(t *testing.T) {
	t.Parallel()
	ok := `{"time":"2024-11-25T10:15:30.101Z","type":"function","record":"ok"}`
	okLine := got{"function", "2024-11-25T10:15:30.101Z", "ok", meta{}}
	tooDeep := `{"time":"2024-11-25T10:15:30.102Z","type":"function","record":` + strings.Repeat("[", 9999) + strings.Repeat("]", 9999) + `}`
	rest := tooDeep + "," + ok + "]"
	for _, tc := range []struct {
		name, types, body string
		want              []got
		truncated         int64
	}{
		{"too deep: the rest of the body, cut and counted", "function", "[" + ok + ",\n" + tooDeep + "," + ok + "]",
			[]got{okLine, {"function", "2024-11-25T10:15:30.102Z", truncate(rest, 300), meta{}}}, 1},
		{"too deep, not shipped by LOKI_TYPES", "platform", "[" + ok + "," + tooDeep + "]", nil, 0},
		{"too deep, type after the record", "function", "[" + ok + `,{"record":` + strings.Repeat("[", 9999) + `1}` + "]", []got{okLine}, 0},
		{"invalid escape", "function", "[" + ok + `,{"type":"function","record":"\x"},` + ok + "]",
			[]got{okLine, {"function", "2025-01-01T00:00:00Z", `{"type":"function","record":"\x"},` + ok + "]", meta{}}}, 0},
		{"a leading zero", "function,platform", `[{"type":"platform.start","record":01}]`,
			[]got{{"platform", "2025-01-01T00:00:00Z", `platform.start {"type":"platform.start","record":01}]`, meta{eventType: "platform.start"}}}, 0},
		{"cut off in an event", "function", "[" + ok + `, {"type":"function",`, []got{okLine, {"function", "2025-01-01T00:00:00Z", `{"type":"function",`, meta{}}}, 0},
		{"cut off after an event", "function", "[" + ok, []got{okLine}, 0},
		{"no comma", "function", "[" + ok + " " + ok + "]", []got{okLine}, 0},
		{"after the array", "function", "[" + ok + "] [" + ok + "] x", []got{okLine}, 0},
		{"deep array, no event", "function", "[" + strings.Repeat("[", 20000) + "]", nil, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			l := testListener(tc.types)
			if status := post(l, tc.body); status != http.StatusOK {
				t.Fatalf("status %d", status)
			}
			if diff := cmp.Diff(tc.want, stored(l), cmp.AllowUnexported(meta{})); diff != "" {
				t.Errorf("(-want +got):\n%.3000s", diff)
			}
			if got := l.batch.counters().truncated; got != tc.truncated {
				t.Errorf("truncated %d, want %d", got, tc.truncated)
			}
		})
	}
}

// TestNamesAndTypesUnescaped: member names and event types are compared as
// JSON defines them, after unescaping, in events and in records.
func TestNamesAndTypesUnescaped(t *testing.T) {
	t.Parallel()
	body := `[{"t\u0069me":"2024-11-25T10:15:30.100Z","\u0074ype":"platform.st\u0061rt","record":{"request\u0049d":"` + rid + `"}},
		{"time":"2024-11-25T10:15:30.101Z","type":"\u0066unction","r\u0065cord":{"\u006cevel":"\u0045RROR","m":1}},
		{"time":"2024-11-25T10:15:30.102Z","type":"\u0066unction","record":"2024-11-25T10:15:30.100Z\u0009` + rid + `\u0009WARN\u0009m\u000a"},
		{"time":"2024-11-25T10:15:30.103Z","type":"platform.r\u0065port","record":{"requestId":"` + rid + `","m\u0065trics":{"durationMs":1}}}]`
	for types, want := range map[string][]got{
		"function,platform.start,platform.report": {
			{"platform", "2024-11-25T10:15:30.1Z", `platform.start {"request\u0049d":"` + rid + `"}`, meta{requestID: rid, eventType: "platform.start"}},
			{"function", "2024-11-25T10:15:30.101Z", `{"\u006cevel":"\u0045RROR","m":1}`, meta{requestID: rid, level: "error"}},
			{"function", "2024-11-25T10:15:30.102Z", "2024-11-25T10:15:30.100Z\t" + rid + "\tWARN\tm", meta{requestID: rid, level: "warn"}},
			{"platform", "2024-11-25T10:15:30.103Z", "REPORT RequestId: " + rid + "\tDuration: 1.00 ms", meta{requestID: rid, eventType: "platform.report"}},
		},
		"platform": {
			{"platform", "2024-11-25T10:15:30.1Z", `platform.start {"request\u0049d":"` + rid + `"}`, meta{requestID: rid, eventType: "platform.start"}},
			{"platform", "2024-11-25T10:15:30.103Z", "REPORT RequestId: " + rid + "\tDuration: 1.00 ms", meta{requestID: rid, eventType: "platform.report"}},
		},
	} {
		l := testListener(types)
		if status := post(l, body); status != http.StatusOK {
			t.Fatalf("status %d", status)
		}
		if diff := cmp.Diff(want, stored(l), cmp.AllowUnexported(meta{})); diff != "" {
			t.Errorf("LOKI_TYPES=%s (-want +got):\n%s", types, diff)
		}
	}
}
