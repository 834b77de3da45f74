package main

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"encoding/json/jsontext"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// decodeBody decodes what shipper.encode wrote.
func decodeBody(t testing.TB, body []byte) pushRequest {
	t.Helper()
	raw := gunzip(t, body)
	var req pushRequest
	if err := json.Unmarshal(raw, &req); err != nil {
		t.Fatalf("invalid JSON %q: %v", raw, err)
	}
	return req
}

func testShipper(t testing.TB, target lokiTarget) (*shipper, *syncBuffer) {
	out := &syncBuffer{}
	if target.labels == nil {
		target.labels = map[string]string{"service_name": "orders-api"}
	}
	s := newShipper(target, newBatch(8<<20, 1<<20), &onceLogger{log: log.New(out, "", 0)}, "test", time.Second)
	return s, out
}

// runShipper starts s; stopping it (the returned func, also at cleanup)
// returns the lines it did not send. Then the test owns s's state.
func runShipper(t testing.TB, s *shipper) (stop func() int) {
	s.start(t.Context())
	stopped, unsent := false, 0
	stop = func() int {
		if !stopped {
			stopped, unsent = true, s.stop()
		}
		return unsent
	}
	t.Cleanup(func() { stop() })
	return stop
}

// flushFor flushes everything added to s, waiting at most d.
func flushFor(t testing.TB, s *shipper, d time.Duration) {
	ctx, cancel := context.WithTimeout(t.Context(), d)
	defer cancel()
	s.flush(ctx, s.batch.mark(), false)
}

// queuedLines decodes the lines of the requests s still holds, in order.
func queuedLines(t testing.TB, s *shipper) (lines []string, stats int) {
	for _, r := range s.queue {
		if r.lines == 0 {
			stats++
			continue
		}
		for _, st := range decodeBody(t, r.body).Streams {
			for _, v := range st.Values {
				lines = append(lines, v.Line)
			}
		}
	}
	return lines, stats
}

func TestEncodeGroupsStreamsAndKeepsOrder(t *testing.T) {
	s, _ := testShipper(t, lokiTarget{labels: map[string]string{"service_name": "orders-api", "env": `pr"od\`}})
	es := []entry{
		{ts: 1, line: "first", src: sourceFunction, meta: metadata{requestID: "r1"}, level: levelOf("info")},
		{ts: 2, line: "REPORT", src: sourcePlatform, meta: metadata{eventType: "platform.report", requestID: "r1"}},
		{ts: 3, line: "second\twith \"quotes\"\n\x00", src: sourceFunction},
		{ts: 4, line: "bad utf8 \xff end", src: sourceFunction, meta: metadata{traceID: "1-abc"}},
	}
	got := decodeBody(t, s.encode(es))
	type stream = struct {
		Stream map[string]string `json:"stream"`
		Values []pushValue       `json:"values"`
	}
	want := pushRequest{Streams: []stream{
		{Stream: map[string]string{"service_name": "orders-api", "env": `pr"od\`, "source": "function"},
			Values: []pushValue{
				{TS: 1, Line: "first", Meta: map[string]string{"request_id": "r1", "level": "info"}},
				{TS: 3, Line: "second\twith \"quotes\"\n\x00"},
				{TS: 4, Line: "bad utf8 \ufffd end", Meta: map[string]string{"trace_id": "1-abc"}},
			}},
		{Stream: map[string]string{"service_name": "orders-api", "env": `pr"od\`, "source": "platform"},
			Values: []pushValue{{TS: 2, Line: "REPORT", Meta: map[string]string{"request_id": "r1", "event_type": "platform.report"}}}},
	}}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("push body (-want +got):\n%s", diff)
	}
}

// TestEncodeCompressesAsItGoes: a large request of one stream is handed
// to the compressor as it is built, never held whole uncompressed, and
// decodes back to every line in order.
func TestEncodeCompressesAsItGoes(t *testing.T) {
	s, _ := testShipper(t, lokiTarget{})
	var es []entry
	for i := range 5000 {
		es = append(es, entry{ts: int64(i), line: fmt.Sprintf("line %d %s", i, strings.Repeat("x", 200)), src: sourceFunction})
	}
	got := decodeBody(t, s.encode(es))
	if cap(s.json) > 64<<10 {
		t.Errorf("%d bytes held uncompressed for a request of %d lines", cap(s.json), len(es))
	}
	if n := len(got.Streams); n != 1 || len(got.Streams[0].Values) != len(es) || got.Streams[0].Values[4999].Line != es[4999].line {
		t.Errorf("%d streams; want one of %d lines in order", n, len(es))
	}
}

func TestParseLabels(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		in      string
		want    map[string]string
		wantErr string
	}{
		{"", map[string]string{}, ""},
		{"env=prod, team = payments ,", map[string]string{"env": "prod", "team": "payments"}, ""},
		{"url=https://x/?a=b", map[string]string{"url": "https://x/?a=b"}, ""},
		{"service_name=shop", map[string]string{"service_name": "shop"}, ""},
		{"env", nil, `"env" is not name=value`},
		{"bad-name=x", nil, `label name "bad-name" must match`},
		{"1x=y", nil, `label name "1x" must match`},
		{"__name__=x", nil, "reserved"},
		{"source=x", nil, `label "source" is set by the extension`},
		{"env=", nil, "empty value"},
		{"a=1,b=1,c=1,d=1,e=1,f=1,g=1,h=1,i=1,j=1,k=1,l=1,m=1,n=1", nil, "at most 13 labels"},
	} {
		got, err := parseLabels(tc.in)
		if tc.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("parseLabels(%q): error %v, want one containing %q", tc.in, err, tc.wantErr)
			}
			continue
		}
		if err != nil {
			t.Errorf("parseLabels(%q): %v", tc.in, err)
		}
		if diff := cmp.Diff(tc.want, got); diff != "" {
			t.Errorf("parseLabels(%q) (-want +got):\n%s", tc.in, diff)
		}
	}
}

func TestPushURL(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]string{
		"https://logs-prod-012.grafana.net":                     "https://logs-prod-012.grafana.net/loki/api/v1/push",
		"https://logs-prod-012.grafana.net/":                    "https://logs-prod-012.grafana.net/loki/api/v1/push",
		"http://127.0.0.1:9428/insert":                          "http://127.0.0.1:9428/insert/loki/api/v1/push",
		"http://loki:3100/loki/api/v1/push":                     "http://loki:3100/loki/api/v1/push",
		"https://user:secret@logs.example.net/loki/api/v1/push": "https://logs.example.net/loki/api/v1/push",
	} {
		u, err := url.Parse(in)
		if err != nil {
			t.Fatal(err)
		}
		if got := pushURL(u); got != want {
			t.Errorf("pushURL(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestRetryableForEveryStatus(t *testing.T) {
	t.Parallel()
	for status := 200; status <= 599; status++ {
		want := status == 429 || status >= 500
		if got := retryable(status); got != want {
			t.Errorf("retryable(%d) = %t, want %t", status, got, want)
		}
	}
}

func TestRejectedLines(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name             string
		body             string
		n                int
		rejected, tooOld int
	}{
		{"total ignored", "entry with timestamp 2024-11-25 08:00:00 +0000 UTC ignored, reason: 'entry too far behind, entry timestamp is: 2024-11-25T08:00:00Z, oldest acceptable timestamp is: 2024-11-25T09:15:30Z',\nuser 'fake', total ignored: 1 out of 3 for stream: {service_name=\"orders-api\"}", 3, 1, 1},
		{"two streams", "total ignored: 2 out of 5 for stream: {a=\"1\"}\ntotal ignored: 3 out of 4 for stream: {a=\"2\"}", 9, 5, 0},
		{"per-entry lines", "max entry size '262144' bytes exceeded for stream '{service_name=\"orders-api\"}' while adding an entry with length '300000' bytes\nentry for stream '{service_name=\"orders-api\"}' has timestamp too old: 2024-11-10T10:00:00Z", 10, 2, 2},
		{"unknown text", "couldn't parse push request: unexpected EOF", 7, 7, 0},
		{"count over n", "total ignored: 99 out of 99", 4, 4, 0},
		{"empty", "", 3, 3, 0},
	} {
		rejected, tooOld := rejectedLines(tc.body, tc.n)
		if rejected != tc.rejected || tooOld != tc.tooOld {
			t.Errorf("%s: rejectedLines = %d, %d; want %d, %d", tc.name, rejected, tooOld, tc.rejected, tc.tooOld)
		}
	}
}

func TestParseRetryAfter(t *testing.T) {
	t.Parallel()
	now := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	for in, want := range map[string]time.Duration{
		"":                              0,
		"2":                             2 * time.Second,
		"-1":                            0,
		"soon":                          0,
		"999999":                        maxRetryAfter,
		"Wed, 01 Jan 2025 00:00:05 GMT": 5 * time.Second,
		"Tue, 31 Dec 2024 00:00:05 GMT": 0,
	} {
		if got := parseRetryAfter(in, now); got != want {
			t.Errorf("parseRetryAfter(%q) = %v, want %v", in, got, want)
		}
	}
}

// TestPushOutcomes runs one flush against a Loki that answers with each
// status and checks where every line ends up.
func TestPushOutcomes(t *testing.T) {
	always := func(status int) func(n, lines int) int { return func(int, int) int { return status } }
	seq := func(statuses ...int) func(n, lines int) int {
		return func(n, _ int) int { return statuses[min(n, len(statuses)-1)] }
	}
	for _, tc := range []struct {
		name       string
		reply      func(n, lines int) int // n counts from 0
		body       string
		wantSent   int64
		wantDrop   int64
		wantUnsent int
		wantLog    string
	}{
		{"204", always(204), "", 4, 0, 0, ""},
		{"500 then 204", seq(500, 204), "", 4, 0, 0, "will retry"},
		{"400 partial", always(400), "user 'fake', total ignored: 1 out of 4 for stream: {service_name=\"orders-api\"}", 3, 1, 0, "rejected 1 of 4"},
		{"401", always(401), "unauthorized", 0, 4, 0, "LOKI_USERNAME"},
		{"404", always(404), "404 page not found", 0, 4, 0, "check LOKI_URL"},
		{"260 stored nothing", always(260), "", 0, 4, 0, "ingestion is blocked"},
		{"413 splits", seq(413, 204), "", 4, 0, 0, ""},
		{"413 splits to one line each", func(_, lines int) int {
			if lines > 1 {
				return 413
			}
			return 204
		}, "", 4, 0, 0, ""},
		{"503 always", always(503), "", 0, 0, 4, "will retry"},
		{"403 with Retry-After is retried", seq(403, 204), "", 4, 0, 0, "will retry"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			var mu sync.Mutex
			var sizes []int
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				req, err := decodePush(r)
				if err != nil {
					t.Error(err)
				}
				lines := 0
				for _, s := range req.Streams {
					lines += len(s.Values)
				}
				mu.Lock()
				status := tc.reply(len(sizes), lines)
				sizes = append(sizes, lines)
				mu.Unlock()
				if status == 403 {
					w.Header().Set("Retry-After", "1")
				}
				w.WriteHeader(status)
				io.WriteString(w, tc.body)
			}))
			t.Cleanup(srv.Close)
			s, out := testShipper(t, lokiTarget{pushURL: srv.URL + pushPath})
			stop := runShipper(t, s)
			now := time.Now().UnixNano()
			s.batch.add([]entry{{ts: now, line: "a"}, {ts: now, line: "b"}, {ts: now, line: "c"}, {ts: now, line: "d"}})
			flushFor(t, s, 1500*time.Millisecond)
			unsent := stop()
			c := s.batch.counters()
			if c.sent != tc.wantSent || c.droppedLoki != tc.wantDrop || unsent != tc.wantUnsent {
				t.Errorf("sent %d, dropped %d, unsent %d; want %d, %d, %d", c.sent, c.droppedLoki, unsent, tc.wantSent, tc.wantDrop, tc.wantUnsent)
			}
			if s.batch.held != sizeOfQueue(s) {
				t.Errorf("%d bytes held for %d bytes of requests", s.batch.held, sizeOfQueue(s))
			}
			if !strings.Contains(out.String(), tc.wantLog) || (tc.wantLog == "" && out.String() != "") {
				t.Errorf("output %q, want %q", out.String(), tc.wantLog)
			}
			if strings.Count(out.String(), "\n") > 1 {
				t.Errorf("more than one message: %q", out.String())
			}
			if strings.HasPrefix(tc.name, "413") && (len(sizes) < 3 || sizes[len(sizes)-1] == 4) {
				t.Errorf("413 did not split: request sizes %v", sizes)
			}
		})
	}
}

// sizeOfQueue is the bytes of the requests s holds.
func sizeOfQueue(s *shipper) int {
	n := 0
	for _, r := range s.queue {
		n += cap(r.body)
	}
	return n
}

func TestPushHeaders(t *testing.T) {
	t.Parallel()
	var got http.Header
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got = r.Header.Clone()
		w.WriteHeader(http.StatusNoContent)
	}))
	t.Cleanup(srv.Close)
	cfg, err := loadConfig(mapEnv(map[string]string{"LOKI_URL": srv.URL, "LOKI_USERNAME": "123456",
		"LOKI_PASSWORD": "glc_token", "LOKI_TENANT_ID": "team-a"}))
	if err != nil {
		t.Fatal(err)
	}
	s, _ := testShipper(t, cfg.target)
	stop := runShipper(t, s)
	s.batch.add([]entry{{ts: 1, line: "x"}})
	flushFor(t, s, waitLimit)
	if stop() != 0 {
		t.Fatal("the line was not sent")
	}
	want := map[string]string{"Content-Type": "application/json", "Content-Encoding": "gzip",
		"Authorization": "Basic MTIzNDU2OmdsY190b2tlbg==", "X-Scope-Orgid": "team-a", "User-Agent": "loki-extension/test"}
	for k, v := range want {
		if got.Get(k) != v {
			t.Errorf("header %s = %q, want %q", k, got.Get(k), v)
		}
	}
}

// jsonRoundTrip is what encoding/json makes of s: invalid UTF-8 bytes
// become U+FFFD.
func jsonRoundTrip(s string) string {
	b, _ := json.Marshal(s)
	var back string
	json.Unmarshal(b, &back)
	return back
}

// FuzzLokiEncode: any lines and labels give a body that is valid JSON
// (strictly: valid UTF-8, no repeated names) of the push API's schema, and
// decodes back to the same lines, labels and metadata, in order; also a
// line kept as Lambda escaped it (escaped), spliced in as it is.
func FuzzLokiEncode(f *testing.F) {
	f.Add("plain line", "env", "prod", "8f5c0a61-0d4e-4c1e-9f55-3c0b2c7e9a10")
	f.Add(`{"level":"INFO","message":"ok"}`, "team", `a"b`, "")
	f.Add("\xff\x00\n\t\"\\</script>", "source", "\u2028", "\xc3")
	f.Add("tab\tnewline\n\u00e9\U0001F389", "a", "b", "c")
	f.Fuzz(func(t *testing.T, line, labelName, labelValue, requestID string) {
		s, _ := testShipper(t, lokiTarget{labels: map[string]string{"service_name": "f", labelName: labelValue}})
		// The escaped line as Lambda might write it: minimal escapes, or
		// \u escapes for <, > and & (as encoding/json writes them).
		escaped, _ := jsontext.AppendQuote(nil, line)
		if len(line)%2 == 1 {
			escaped, _ = json.Marshal(line)
		}
		compressed := s.encode([]entry{{ts: 1, line: line, meta: metadata{requestID: requestID}},
			{ts: 2, line: line + "2", src: sourceExtension},
			{ts: 3, line: string(escaped[1 : len(escaped)-1]), escaped: true, level: levelOf("warn")}})
		if body := gunzip(t, compressed); !json.Valid(body) || !jsontext.Value(body).IsValid() {
			t.Fatalf("invalid JSON: %q", body)
		} else {
			checkPushSchema(t, body)
		}
		req := decodeBody(t, compressed)
		wantLabels := map[string]string{"service_name": "f"}
		wantLabels[jsonRoundTrip(labelName)] = jsonRoundTrip(labelValue)
		wantLabels["source"] = "function" // the extension's source label always wins
		var wantMeta map[string]string
		if requestID != "" {
			wantMeta = map[string]string{"request_id": jsonRoundTrip(requestID)}
		}
		got := req.Streams[0]
		if diff := cmp.Diff(wantLabels, got.Stream); diff != "" {
			t.Errorf("labels (-want +got):\n%s", diff)
		}
		want := []pushValue{{TS: 1, Line: jsonRoundTrip(line), Meta: wantMeta}, {TS: 3, Line: jsonRoundTrip(line), Meta: map[string]string{"level": "warn"}}}
		if diff := cmp.Diff(want, got.Values); diff != "" {
			t.Errorf("values (-want +got):\n%s", diff)
		}
		if len(req.Streams) != 2 || len(req.Streams[1].Values) != 1 || req.Streams[1].Values[0].Line != jsonRoundTrip(line+"2") {
			t.Errorf("second stream: %+v", req.Streams[1:])
		}
	})
}

// gunzip returns what a push body holds.
func gunzip(t testing.TB, body []byte) []byte {
	t.Helper()
	zr, err := gzip.NewReader(bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	raw, err := io.ReadAll(zr)
	if err != nil {
		t.Fatal(err)
	}
	return raw
}

// checkPushSchema checks that body is a push request as Loki's API defines
// it, with nothing else: {"streams":[{"stream":{labels},"values":[[ns,
// line] or [ns, line, {metadata}], …]}, …]}, every label and metadata
// value a string and every time a string of digits.
func checkPushSchema(t testing.TB, body []byte) {
	t.Helper()
	var req map[string]any
	if err := json.Unmarshal(body, &req); err != nil {
		t.Fatal(err)
	}
	strings := func(v any) bool {
		m, ok := v.(map[string]any)
		for _, x := range m {
			if _, isString := x.(string); !isString {
				return false
			}
		}
		return ok
	}
	streams, ok := req["streams"].([]any)
	if len(req) != 1 || !ok || len(streams) == 0 {
		t.Fatalf("not a push request: %q", body)
	}
	for _, s := range streams {
		st, _ := s.(map[string]any)
		values, ok := st["values"].([]any)
		if len(st) != 2 || !strings(st["stream"]) || !ok || len(values) == 0 {
			t.Fatalf("not a stream: %v", s)
		}
		for _, v := range values {
			v, _ := v.([]any)
			if len(v) < 2 || len(v) > 3 {
				t.Fatalf("value %v: want 2 or 3 elements", v)
			}
			ts, _ := v[0].(string)
			_, isLine := v[1].(string)
			if _, err := strconv.ParseUint(ts, 10, 64); err != nil || !isLine || len(v) == 3 && !strings(v[2]) {
				t.Fatalf("value %v: want [\"<ns>\", \"<line>\"(, {metadata})]", v)
			}
		}
	}
}

// FuzzRejectedLines: any Loki answer gives a count between 1 and the lines
// sent, with the too-old ones among them.
func FuzzRejectedLines(f *testing.F) {
	f.Add("user 'fake', total ignored: 1 out of 3 for stream: {service_name=\"orders-api\"}", 3)
	f.Add("entry for stream '{a=\"b\"}' has timestamp too old: 2024-11-10T10:00:00Z\nmax entry size '262144' bytes exceeded for stream '{a=\"b\"}'", 5)
	f.Add("total ignored: 99999999999999999999999 out of 1", 2)
	f.Add("total ignored: -3 out of", 1)
	f.Fuzz(func(t *testing.T, body string, n int) {
		if n < 1 || n > 1<<20 {
			return
		}
		rejected, tooOld := rejectedLines(body, n)
		if rejected < 1 || rejected > n || tooOld < 0 || tooOld > rejected {
			t.Errorf("rejectedLines(%q, %d) = %d, %d", body, n, rejected, tooOld)
		}
	})
}

// benchEntries is a realistic batch: 1000 lines of a web handler's logs.
func benchEntries() []entry {
	es := make([]entry, 1000)
	for i := range es {
		es[i] = entry{ts: 1732529730100000000 + int64(i), src: sourceFunction,
			line: fmt.Sprintf("2024-11-25T10:15:30.%03dZ\t%s\tINFO\tGET /orders/%d 200 in %d ms (cache hit, user %d)", i%1000, rid, 1000+i, i%37, i*7919%10007),
			meta: metadata{requestID: rid, traceID: "1-6744a1b2-0a1b2c3d4e5f60718293a4b5"}, level: levelOf("info")}
	}
	return es
}

func BenchmarkEncode(b *testing.B) {
	for _, level := range []int{gzip.BestSpeed, gzip.DefaultCompression} {
		b.Run(fmt.Sprintf("gzip%d", level), func(b *testing.B) {
			s, _ := testShipper(b, lokiTarget{})
			s.zw, _ = gzip.NewWriterLevel(io.Discard, level)
			es := benchEntries()
			raw := 0
			for _, e := range es {
				raw += len(e.line)
			}
			b.SetBytes(int64(raw))
			b.ReportAllocs()
			var body []byte
			for b.Loop() {
				body = s.encode(es)
			}
			b.ReportMetric(float64(len(body))/float64(raw), "wire/raw")
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*len(es)), "ns/line")
		})
	}
}

// TestIdleConnectionsDroppedAfterAThaw: a connection idle longer than
// idleReconnect (by the shipper's clock, which a freeze advances) is not
// reused; one idle less is.
func TestIdleConnectionsDroppedAfterAThaw(t *testing.T) {
	t.Parallel()
	var mu sync.Mutex
	conns := 0
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		w.WriteHeader(http.StatusNoContent)
	}))
	srv.Config.ConnState = func(_ net.Conn, state http.ConnState) {
		if state == http.StateNew {
			mu.Lock()
			conns++
			mu.Unlock()
		}
	}
	srv.Start()
	t.Cleanup(srv.Close)
	s, _ := testShipper(t, lokiTarget{pushURL: srv.URL + pushPath})
	var skew atomic.Int64 // how far the shipper's clock is ahead
	s.now = func() time.Time { return time.Now().Add(time.Duration(skew.Load())) }
	runShipper(t, s)
	push := func(step time.Duration) int {
		skew.Add(int64(step))
		s.batch.add([]entry{{ts: s.now().UnixNano(), line: "x"}})
		s.flush(t.Context(), s.batch.mark(), false)
		mu.Lock()
		defer mu.Unlock()
		return conns
	}
	push(0)
	if got := push(idleReconnect - time.Second); got != 1 {
		t.Errorf("after a short pause: %d connections, want the pooled one reused", got)
	}
	if got := push(idleReconnect + time.Second); got != 2 {
		t.Errorf("after a long pause: %d connections, want a new one", got)
	}
}

// TestFailedSplitKeepsOrder: 413, then 503 for the halves: both wait, in
// their order.
func TestFailedSplitKeepsOrder(t *testing.T) {
	t.Parallel()
	var n atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		if n.Add(1) == 1 {
			w.WriteHeader(http.StatusRequestEntityTooLarge)
			return
		}
		w.WriteHeader(http.StatusServiceUnavailable)
	}))
	t.Cleanup(srv.Close)
	s, _ := testShipper(t, lokiTarget{pushURL: srv.URL + pushPath})
	stop := runShipper(t, s)
	s.batch.add([]entry{{ts: 1, line: "a"}, {ts: 2, line: "b"}, {ts: 3, line: "c"}, {ts: 4, line: "d"}})
	flushFor(t, s, 300*time.Millisecond)
	stop()
	got, _ := queuedLines(t, s)
	if diff := cmp.Diff([]string{"a", "b", "c", "d"}, got); diff != "" {
		t.Errorf("queue after the failed split (-want +got):\n%s", diff)
	}
	if len(s.queue) < 2 || s.queue[0].lines != 2 || s.queue[0].last != 2 || s.queue[1].last != 4 {
		t.Errorf("halves not in order: %d requests", len(s.queue))
	}
}

// TestOneStatsLineQueued: however many requests pile up while Loki fails,
// one stats line waits among them.
func TestOneStatsLineQueued(t *testing.T) {
	t.Parallel()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusServiceUnavailable)
	}))
	t.Cleanup(srv.Close)
	s, _ := testShipper(t, lokiTarget{pushURL: srv.URL + pushPath})
	stop := runShipper(t, s)
	line := strings.Repeat("x", 4000)
	for i := range 6 { // each round fills a request, and the counters change
		var es []entry
		for j := range requestBytes / 4000 {
			es = append(es, entry{ts: int64(i*1000 + j + 1), line: line})
		}
		s.batch.add(es)
		flushFor(t, s, 250*time.Millisecond)
	}
	stop()
	lines, stats := queuedLines(t, s)
	if stats != 1 || len(lines) < 3*requestBytes/4000 {
		t.Errorf("%d lines and %d stats lines in requests; want many, and one", len(lines), stats)
	}
}

// TestRetryAfterIsHonouredAcrossFlushes: a Retry-After longer than the
// flush's time makes later flushes wait too, instead of asking again.
func TestRetryAfterIsHonouredAcrossFlushes(t *testing.T) {
	t.Parallel()
	var requests atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		requests.Add(1)
		w.Header().Set("Retry-After", "60")
		w.WriteHeader(http.StatusTooManyRequests)
	}))
	t.Cleanup(srv.Close)
	s, _ := testShipper(t, lokiTarget{pushURL: srv.URL + pushPath})
	stop := runShipper(t, s)
	s.batch.add([]entry{{ts: 1, line: "a"}})
	for range 3 {
		flushFor(t, s, 100*time.Millisecond)
	}
	if unsent := stop(); requests.Load() != 1 || unsent != 1 {
		t.Errorf("%d requests (want 1), %d lines unsent (want 1)", requests.Load(), unsent)
	}
}

// TestWatchCountsOnlyAwakeTime: a request in flight times out after
// pushTimeout of time in which the environment ran; time in /next, where
// it may be frozen, does not count.
func TestWatchCountsOnlyAwakeTime(t *testing.T) {
	t.Parallel()
	s, _ := testShipper(t, lokiTarget{})
	cancelled := false
	r := &request{started: time.Now(), cancel: func() { cancelled = true }}
	s.queue = []*request{r}
	s.pause()
	for range 100 {
		s.watch(2 * time.Second) // frozen, or about to be
	}
	if cancelled || r.awake != 0 {
		t.Fatalf("time in /next counted: awake %v", r.awake)
	}
	s.resume()
	for range int(pushTimeout/(2*time.Second)) - 1 {
		s.watch(2 * time.Second)
	}
	if cancelled {
		t.Fatalf("cancelled after %v awake, before pushTimeout", r.awake)
	}
	s.watch(2 * time.Second)
	s.watch(2 * time.Second)
	if !cancelled || !r.timedOut {
		t.Errorf("not cancelled after %v awake", r.awake)
	}
}
