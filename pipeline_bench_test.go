package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"
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
