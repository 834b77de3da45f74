package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

// BenchmarkPipeline measures one line's whole way through the extension:
// a Telemetry API delivery over loopback HTTP into the listener, then a
// flush to a Loki on loopback, per 1000-line invocation.
func BenchmarkPipeline(b *testing.B) {
	loki := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		w.WriteHeader(http.StatusNoContent)
	}))
	defer loki.Close()
	s, _ := testShipper(b, lokiTarget{pushURL: loki.URL + pushPath})
	runShipper(b, s)
	l := newListener(s.batch, typeFilter{"function": true}, defaultMaxLineBytes, "x: ", true)
	srv := httptest.NewServer(l)
	defer srv.Close()
	// As Lambda sends them: the invocation's platform.start first.
	events := []map[string]any{{"time": "2024-11-25T10:15:30.000Z", "type": "platform.start", "record": map[string]any{"requestId": rid}}}
	for i := range 1000 {
		events = append(events, map[string]any{"time": "2024-11-25T10:15:30.101Z", "type": "function",
			"record": fmt.Sprintf("2024-11-25T10:15:30.100Z\t%s\tINFO\tGET /orders/%d 200 in %d ms (cache hit, user %d)\n", rid, 1000+i, i%37, i*7919%10007)})
	}
	body, _ := json.Marshal(events)
	b.SetBytes(int64(len(body)))
	b.ReportAllocs()
	for b.Loop() {
		resp, err := http.Post(srv.URL, "application/json", bytes.NewReader(body))
		if err != nil || resp.StatusCode != http.StatusOK {
			b.Fatal(err, resp)
		}
		resp.Body.Close()
		s.flush(b.Context(), s.batch.mark(), false)
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*1000), "ns/line")
}

// BenchmarkDelivery reads deliveries of 8 MB into the batch: flat text
// events, events whose records nest as deep as the standard library reads
// (9,997 levels), and events nested deeper, which cannot be read. Reading
// is linear: compare ns/byte.
func BenchmarkDelivery(b *testing.B) {
	event := func(record string) string {
		return `{"time":"2024-11-25T10:15:30.101Z","type":"function","record":` + record + `}`
	}
	for _, tc := range []struct{ name, event string }{
		{"flat", event(`"2024-11-25T10:15:30.100Z\t` + rid + `\tINFO\tGET /orders/1000 200 in 12 ms\n"`)},
		{"deep", event(strings.Repeat("[", 9997) + strings.Repeat("]", 9997))},
		{"too-deep", event(strings.Repeat("[", 9999) + strings.Repeat("]", 9999))},
	} {
		b.Run(tc.name, func(b *testing.B) {
			n := (maxBodyBytes - 2) / (len(tc.event) + 1)
			body := "[" + strings.Repeat(tc.event+",", n-1) + tc.event + "]"
			l := newListener(newBatch(1<<30, 1<<30), typeFilter{"function": true}, defaultMaxLineBytes, "x: ", true)
			b.SetBytes(int64(len(body)))
			b.ReportAllocs()
			for b.Loop() {
				l.store(bytes.NewBufferString(body))
				l.batch.take(1 << 30)
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*len(body)), "ns/byte")
		})
	}
}

// BenchmarkEncodeEscaped: the shipper's work for 1000 text lines, kept as
// Lambda escaped them (spliced in) or unescaped (quoted again).
func BenchmarkEncodeEscaped(b *testing.B) {
	for _, escaped := range []bool{true, false} {
		b.Run(fmt.Sprint("escaped=", escaped), func(b *testing.B) {
			s, _ := testShipper(b, lokiTarget{})
			es := benchEntries()
			for i := range es {
				es[i].line += "\t" + `with "quotes" and a tab`
				if escaped {
					q, _ := json.Marshal(es[i].line)
					es[i].line, es[i].escaped = string(q[1:len(q)-1]), true
				}
			}
			b.ReportAllocs()
			for b.Loop() {
				s.encode(es)
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*len(es)), "ns/line")
		})
	}
}

// BenchmarkLineMix: go run ./bench's line mix (Node.js text, 15 % with a
// JSON payload, lines 20 µs apart) through the listener, the batch and the
// encoder, 1000 lines a delivery, with the bytes it puts on the wire.
func BenchmarkLineMix(b *testing.B) {
	r := rand.New(rand.NewPCG(1, 2))
	msg := func() (string, string) {
		switch n := r.IntN(100); {
		case n < 50:
			return "INFO", fmt.Sprintf("GET /api/orders/%d 200 %d.%dms user=u-%d", 40000+r.IntN(10000), r.IntN(300), r.IntN(10), r.IntN(5000))
		case n < 70:
			return "INFO", fmt.Sprintf("cache miss key=product:%d, loading from table products (ttl=300s)", r.IntN(100000))
		case n < 85:
			return "DEBUG", fmt.Sprintf(`payload {"orderId":%d,"items":%d,"amount":%d.%02d,"currency":"EUR"}`, 40000+r.IntN(10000), 1+r.IntN(9), r.IntN(500), r.IntN(100))
		case n < 95:
			return "WARN", fmt.Sprintf("slow query on orders: %dms for %d rows (threshold 200ms)", 200+r.IntN(2000), r.IntN(5000))
		}
		return "ERROR", fmt.Sprintf("payment provider timed out after %dms (attempt %d of 3), order %d will be retried", 1000+r.IntN(9000), 1+r.IntN(3), 40000+r.IntN(10000))
	}
	var bodies [][]byte
	t0 := time.Date(2024, 11, 25, 10, 15, 30, 0, time.UTC)
	for d := range 20 {
		events := []map[string]any{{"time": t0.Format("2006-01-02T15:04:05.000Z"), "type": "platform.start", "record": map[string]any{"requestId": rid}}}
		for i := range 1000 {
			at := t0.Add(time.Duration(d*1000+i) * 20 * time.Microsecond).Format("2006-01-02T15:04:05.000Z")
			level, m := msg()
			events = append(events, map[string]any{"time": at, "type": "function", "record": fmt.Sprintf("%s\t%s\t%s\t%s seq=%d\n", at, rid, level, m, i)})
		}
		body, _ := json.Marshal(events)
		bodies = append(bodies, body)
	}
	s, _ := testShipper(b, lokiTarget{})
	l := newListener(s.batch, typeFilter{"function": true}, defaultMaxLineBytes, "x: ", true)
	wire := 0
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		l.store(bytes.NewBuffer(bodies[i%len(bodies)]))
		es, _ := s.batch.take(1 << 30)
		wire += len(s.encode(es))
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*1000), "ns/line")
	b.ReportMetric(float64(wire)/float64(b.N*1000), "wire-B/line")
}
