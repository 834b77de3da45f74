package main

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

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
	Meta metadata
}

func stored(l *listener) []got {
	var out []got
	for _, e := range l.batch.entries {
		out = append(out, got{e.src.String(), time.Unix(0, e.ts).UTC().Format(time.RFC3339Nano), lineText(e), e.meta})
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
			[]got{{"function", "2024-11-25T10:15:30.101Z", "hello\n", metadata{}}}},
		{"Node.js prefix", `[{"time":"2024-11-25T10:15:30.101Z","type":"function","record":"2024-11-25T10:15:30.100Z\t` + rid + `\tERROR\tboom\n"}]`,
			[]got{{"function", "2024-11-25T10:15:30.101Z", "2024-11-25T10:15:30.100Z\t" + rid + "\tERROR\tboom", metadata{requestID: rid, level: "error"}}}},
		{"Python prefix", `[{"time":"2024-11-25T10:15:30.101Z","type":"function","record":"[WARNING]\t2024-11-25T10:15:30.100Z\t` + rid + `\tcareful\n"}]`,
			[]got{{"function", "2024-11-25T10:15:30.101Z", "[WARNING]\t2024-11-25T10:15:30.100Z\t" + rid + "\tcareful", metadata{requestID: rid, level: "warning"}}}},
		{"a backslash-t in the text is not a tab", `[{"time":"2024-11-25T10:15:30.101Z","type":"function","record":"2024-11-25T10:15:30.100Z C:\\t` + rid + `\tERROR\tboom"}]`,
			[]got{{"function", "2024-11-25T10:15:30.101Z", "2024-11-25T10:15:30.100Z C:\\t" + rid + "\tERROR\tboom", metadata{}}}},
		{"Node.js during init", `[{"time":"2024-11-25T10:15:30.101Z","type":"function","record":"2024-11-25T10:15:30.100Z\tundefined\tINFO\tstarting\n"}]`,
			[]got{{"function", "2024-11-25T10:15:30.101Z", "2024-11-25T10:15:30.100Z\tundefined\tINFO\tstarting", metadata{level: "info"}}}},
		{"JSON record keeps content and own time", `[{"time":"2024-11-25T10:15:30.101Z","type":"function","record":{"timestamp":"2024-11-25T10:15:30.100123Z","level":"INFO","requestId":"` + rid + `","message":"loaded","items":[1,2]}}]`,
			[]got{{"function", "2024-11-25T10:15:30.100123Z", `{"timestamp":"2024-11-25T10:15:30.100123Z","level":"INFO","requestId":"` + rid + `","message":"loaded","items":[1,2]}`, metadata{requestID: rid, level: "info"}}}},
		{"Java AWSRequestId", `[{"time":"2024-11-25T10:15:30.101Z","type":"function","record":{"level":"DEBUG","AWSRequestId":"` + rid + `","message":"m"}}]`,
			[]got{{"function", "2024-11-25T10:15:30.101Z", `{"level":"DEBUG","AWSRequestId":"` + rid + `","message":"m"}`, metadata{requestID: rid, level: "debug"}}}},
		{"JSON printed as text", `[{"time":"2024-11-25T10:15:30.101Z","type":"function","record":"{\"level\":\"ERROR\",\"requestId\":\"` + rid + `\",\"message\":\"x\"}\n"}]`,
			[]got{{"function", "2024-11-25T10:15:30.101Z", `{"level":"ERROR","requestId":"` + rid + `","message":"x"}`, metadata{requestID: rid, level: "error"}}}},
		{"JSON record with a wrong-typed field", `[{"time":"2024-11-25T10:15:30.101Z","type":"function","record":{"level":30,"requestId":"` + rid + `","msg":"pino"}}]`,
			[]got{{"function", "2024-11-25T10:15:30.101Z", `{"level":30,"requestId":"` + rid + `","msg":"pino"}`, metadata{requestID: rid}}}},
		{"record timestamp far off is ignored", `[{"time":"2024-11-25T10:15:30.101Z","type":"function","record":{"timestamp":"2099-01-01T00:00:00Z","message":"m"}}]`,
			[]got{{"function", "2024-11-25T10:15:30.101Z", `{"timestamp":"2099-01-01T00:00:00Z","message":"m"}`, metadata{}}}},
		{"bad time uses receipt time", `[{"time":"12:01:23:521Z","type":"function","record":"x"}]`,
			[]got{{"function", "2025-01-01T00:00:00Z", "x", metadata{}}}},
		{"non-string record kept as written", `[{"time":"2024-11-25T10:15:30.101Z","type":"function","record":[1, 2]}]`,
			[]got{{"function", "2024-11-25T10:15:30.101Z", "[1, 2]", metadata{}}}},
		{"platform.report", `[{"time":"2024-11-25T10:15:30.260Z","type":"platform.report","record":{"requestId":"` + rid + `","status":"success","metrics":{"durationMs":213.02,"billedDurationMs":214,"memorySizeMB":512,"maxMemoryUsedMB":71,"initDurationMs":388.51},"tracing":{"type":"X-Amzn-Trace-Id","value":"Root=1-6744a1b2-0a1b2c3d4e5f60718293a4b5;Sampled=0"}}}]`,
			[]got{{"platform", "2024-11-25T10:15:30.26Z", "REPORT RequestId: " + rid + "\tDuration: 213.02 ms\tBilled Duration: 214 ms\tMemory Size: 512 MB\tMax Memory Used: 71 MB\tInit Duration: 388.51 ms",
				metadata{requestID: rid, traceID: "1-6744a1b2-0a1b2c3d4e5f60718293a4b5", eventType: "platform.report"}}}},
		{"platform.report on LMI, timed out", `[{"time":"2024-11-25T10:15:30.260Z","type":"platform.report","record":{"requestId":"` + rid + `","status":"timeout","errorType":"Sandbox.Timedout","metrics":{"durationMs":3000}}}]`,
			[]got{{"platform", "2024-11-25T10:15:30.26Z", "REPORT RequestId: " + rid + "\tDuration: 3000.00 ms\tStatus: timeout\tError Type: Sandbox.Timedout",
				metadata{requestID: rid, level: "error", eventType: "platform.report"}}}},
		{"failed runtimeDone is shipped, a good one is not", `[{"time":"2024-11-25T10:15:30.260Z","type":"platform.runtimeDone","record":{"requestId":"r","status":"success"}},{"time":"2024-11-25T10:15:30.261Z","type":"platform.runtimeDone","record":{"requestId":"r2","status":"error","errorType":"Runtime.ExitError"}}]`,
			[]got{{"platform", "2024-11-25T10:15:30.261Z", `platform.runtimeDone {"requestId":"r2","status":"error","errorType":"Runtime.ExitError"}`,
				metadata{requestID: "r2", level: "error", eventType: "platform.runtimeDone"}}}},
		{"logsDropped is shipped", `[{"time":"2024-11-25T10:15:31.000Z","type":"platform.logsDropped","record":{"droppedBytes":48213,"droppedRecords":311,"reason":"too slow"}}]`,
			[]got{{"platform", "2024-11-25T10:15:31Z", `platform.logsDropped {"droppedBytes":48213,"droppedRecords":311,"reason":"too slow"}`, metadata{level: "error", eventType: "platform.logsDropped"}}}},
		{"not shipped by default", `[{"time":"2024-11-25T10:15:31.000Z","type":"platform.start","record":{"requestId":"r"}},{"time":"2024-11-25T10:15:31.000Z","type":"extension","record":"x"},{"time":"2024-11-25T10:15:31.000Z","type":"platform.someday","record":{}}]`,
			nil},
		{"elements that are not events are skipped", `[1, "x", null, {"type": 5}, {"time":"2024-11-25T10:15:30.101Z","type":"function","record":"ok"}]`,
			[]got{{"function", "2024-11-25T10:15:30.101Z", "ok", metadata{}}}},
		{"long line truncated", `[{"time":"2024-11-25T10:15:30.101Z","type":"function","record":"` + strings.Repeat("é", 200) + `"}]`,
			[]got{{"function", "2024-11-25T10:15:30.101Z", strings.Repeat("é", 138) + "…[truncated 124 bytes]", metadata{}}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			l := testListener(defaultTypes)
			if status := post(l, tc.events); status != http.StatusOK {
				t.Fatalf("status %d", status)
			}
			if diff := cmp.Diff(tc.want, stored(l), cmp.AllowUnexported(metadata{})); diff != "" {
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

func TestRequestIDInference(t *testing.T) {
	t.Parallel()
	l := testListener(defaultTypes)
	post(l, `[{"time":"2024-11-25T10:15:31.000Z","type":"function","record":"before any invocation"},
		{"time":"2024-11-25T10:15:31.000Z","type":"platform.start","record":{"requestId":"`+rid+`","tracing":{"value":"Root=1-abc;Sampled=1"}}},
		{"time":"2024-11-25T10:15:31.000Z","type":"function","record":"during"}]`)
	want := []got{
		{"function", "2024-11-25T10:15:31Z", "before any invocation", metadata{}},
		{"function", "2024-11-25T10:15:31.000000001Z", "during", metadata{requestID: rid, traceID: "1-abc"}},
	}
	if diff := cmp.Diff(want, stored(l), cmp.AllowUnexported(metadata{})); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}

	lmi := testListener(defaultTypes)
	lmi.inferRequestID = false
	post(lmi, `[{"time":"2024-11-25T10:15:31.000Z","type":"platform.start","record":{"requestId":"`+rid+`"}},
		{"time":"2024-11-25T10:15:31.000Z","type":"function","record":"plain"}]`)
	if diff := cmp.Diff(metadata{}, lmi.batch.entries[0].meta, cmp.AllowUnexported(metadata{})); diff != "" {
		t.Errorf("LMI must not infer (-want +got):\n%s", diff)
	}
}

func TestListenerRejectsBadBodies(t *testing.T) {
	t.Parallel()
	for body, want := range map[string]int{
		``:                     http.StatusBadRequest,
		`{"type":"function"}`:  http.StatusBadRequest,
		`[{"type":"function",`: http.StatusBadRequest,
		`[] []`:                http.StatusBadRequest,
		`[{"type":"function","record":"x"}] trailing`:                       http.StatusBadRequest,
		`[` + strings.Repeat(`"x",`, maxBodyBytes/4) + `"x"]`:               http.StatusRequestEntityTooLarge,
		`[` + strings.Repeat("[", 20000) + strings.Repeat("]", 19999) + `]`: http.StatusBadRequest,
		`[{"type":"function","record":"x"}`:                                 http.StatusBadRequest,
		`[{"type":"function","record":"\x"}]`:                               http.StatusBadRequest,
		`[{"type":"function","record":01}]`:                                 http.StatusBadRequest,
		`[]`:                                                                http.StatusOK,
		" [ ] \n":                                                           http.StatusOK,
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
		if !json.Valid(appendJSONString(nil, got)) || !strings.Contains(got, "…") || strings.ContainsRune(got, '\ufffd') {
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

// FuzzListenerDecode: no body crashes the listener; an accepted body's
// entries re-encode to valid JSON that decodes back to the same lines.
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
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, body string) {
		l := testListener("function,platform,extension")
		status := post(l, body)
		if status != http.StatusOK {
			if len(l.batch.entries) != 0 {
				t.Fatalf("status %d but %d entries kept", status, len(l.batch.entries))
			}
			return
		}
		s, _ := testShipper(t, lokiTarget{})
		var back []string
		for _, st := range decodeBody(t, s.encode(l.batch.entries)).Streams {
			for _, v := range st.Values {
				back = append(back, v.Line)
			}
		}
		var want []string
		for src := range numSources {
			for _, e := range l.batch.entries {
				if e.src == src {
					want = append(want, jsonRoundTrip(lineText(e)))
				}
			}
		}
		if diff := cmp.Diff(want, back); diff != "" {
			t.Errorf("lines (-want +got):\n%s", diff)
		}
		for _, e := range l.batch.entries {
			if len(e.line) > l.maxLine {
				t.Errorf("line of %d bytes over the maximum %d", len(e.line), l.maxLine)
			}
		}
	})
}

func BenchmarkListener(b *testing.B) {
	var events []map[string]any
	for i := range 1000 {
		if i%2 == 0 {
			events = append(events, map[string]any{"time": "2024-11-25T10:15:30.101Z", "type": "function",
				"record": fmt.Sprintf("2024-11-25T10:15:30.100Z\t%s\tINFO\tloaded %d items from the cache in 12 ms\n", rid, i)})
		} else {
			events = append(events, map[string]any{"time": "2024-11-25T10:15:30.101Z", "type": "function",
				"record": map[string]any{"timestamp": "2024-11-25T10:15:30.100Z", "level": "INFO", "requestId": rid, "message": fmt.Sprintf("loaded %d items", i)}})
		}
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
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*len(events)), "ns/line")
}

// FuzzJSONReader: the reader agrees with encoding/json on what is valid
// JSON and on what strings decode to.
func FuzzJSONReader(f *testing.F) {
	for _, seed := range []string{`{"a":[1,2.5e-3,true,false,null,"x\u00e9\ud83c\udf89"]}`, `[]`, ` "\ud800x" `,
		`{"a":1,}`, `[1 2]`, `-01`, `1.`, `"\x"`, "\"\t\"", `{"a" 1}`, `[[[[]]]]`, `{"\u0061":{}}`, "\"\xff\""} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		start := skipSpace(b, 0)
		end := skipValue(b, start)
		ours := end >= 0 && skipSpace(b, end) == len(b)
		if want := json.Valid(b); ours != want {
			t.Fatalf("valid(%q): ours %t, encoding/json %t", b, ours, want)
		}
		if !ours {
			return
		}
		checkWalk(t, b[start:end])
		if b[start] != '"' {
			return
		}
		got, ok := jsonString(b[start:end])
		var want string
		if err := json.Unmarshal(b, &want); err != nil || !ok {
			t.Fatalf("string %q: ok %t, encoding/json: %v", b, ok, err)
		}
		if jsonRoundTrip(got) != want {
			t.Errorf("string %q: ours %q, encoding/json %q", b, got, want)
		}
	})
}

// checkWalk walks a valid value with members and elements, requiring every
// key to be a string and every value it yields to be valid JSON.
func checkWalk(t *testing.T, v []byte) {
	t.Helper()
	members(v, func(k, v []byte) {
		if !json.Valid(append(append([]byte{'"'}, k...), '"')) || !json.Valid(v) {
			t.Fatalf("member %q: %q", k, v)
		}
		checkWalk(t, v)
	})
	elements(v, func(v []byte) {
		if !json.Valid(v) {
			t.Fatalf("element %q", v)
		}
		checkWalk(t, v)
	})
}

func TestMembersAndElements(t *testing.T) {
	t.Parallel()
	obj := []byte(` { "a" : [1, {"b": "c"}] , "d\"e" : "f" , "g":{} } `)
	var keys, values []string
	members(obj, func(k, v []byte) { keys, values = append(keys, string(k)), append(values, string(v)) })
	if diff := cmp.Diff([]string{"a", `d\"e`, "g"}, keys); diff != "" {
		t.Errorf("keys (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]string{`[1, {"b": "c"}]`, `"f"`, `{}`}, values); diff != "" {
		t.Errorf("values (-want +got):\n%s", diff)
	}
	var elems []string
	elements([]byte(`[ 1 ,"x", [ ] ,{"a":1}]`), func(v []byte) { elems = append(elems, string(v)) })
	if diff := cmp.Diff([]string{"1", `"x"`, "[ ]", `{"a":1}`}, elems); diff != "" {
		t.Errorf("elements (-want +got):\n%s", diff)
	}
}

// TestFloodStaysBounded: a delivery of far more lines than the buffer holds
// keeps the buffer under its cap and the scratch slice small, and counts
// every line it could not keep.
func TestFloodStaysBounded(t *testing.T) {
	t.Parallel()
	l := newListener(newBatch(1<<20, 1<<20), typeFilter{function: true}, 1024, "x: ", true)
	const n = 50000
	body := "[" + strings.Repeat(`{"time":"2024-11-25T10:15:30.101Z","type":"function","record":"flood line\n"},`, n-1) +
		`{"time":"2024-11-25T10:15:30.101Z","type":"function","record":"flood line\n"}]`
	if status := post(l, body); status != http.StatusOK {
		t.Fatalf("status %d", status)
	}
	c := l.batch.counters()
	kept := len(l.batch.entries)
	if kept+int(c.droppedFull) != n || l.batch.queued > 1<<20 || cap(l.scratch) > 2*addChunk {
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
