package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"fmt"
	"io"
	mathrand "math/rand/v2"
	"net/http"
	"time"
)

// Limits of one telemetry delivery, as the extension subscribes by default
// (1000 events, 256 KiB).
const (
	maxBatchEvents = 1000
	maxBatchBytes  = 256 << 10

	timeLayout = "2006-01-02T15:04:05.000Z"
)

// workload plays the function and Lambda's Telemetry API: it writes log
// lines and platform events and delivers them to the extension's listener
// in batches, one at a time, as Lambda does. It remembers every line it
// wrote so that the fake Loki's tally can check what arrived.
type workload struct {
	listener string // URL of the extension's telemetry listener
	client   *http.Client
	rng      *mathrand.Rand

	want      []uint64    // by line number ("seq"): hash of the line as Loki should store it
	delivered []time.Time // by seq: when the delivery holding the line was answered
	rawBytes  int64       // bytes of the lines as written
	rejected  int         // deliveries the listener did not answer with 2xx

	batch    []byte // the delivery being built: a JSON array
	events   int    // events in batch
	seqs     []int  // lines in batch
	lastTook time.Duration
}

// newWorkload returns a workload that delivers to listener. The lines are
// the same in every run (fixed seed) except for times and request ids.
func newWorkload(listener string) *workload {
	return &workload{
		listener: listener,
		client:   &http.Client{Timeout: 10 * time.Second},
		rng:      mathrand.New(mathrand.NewPCG(1, 2)),
	}
}

// invoke delivers one invocation's telemetry: platform.report of the
// previous invocation (if any) and platform.start, then the function's
// lines, then platform.runtimeDone. It returns when the delivery holding
// runtimeDone was answered.
func (w *workload) invoke(ctx context.Context, requestID, previous string, lines int) (time.Time, error) {
	start := time.Now()
	if previous != "" {
		w.addReport(start, previous)
	}
	w.add(start, "platform.start", fmt.Appendf(nil, `{"requestId":%q,"version":"$LATEST"}`, requestID), -1)
	for range lines {
		if err := w.flushIfFull(ctx); err != nil {
			return time.Time{}, err
		}
		now := time.Now()
		seq, line := w.line(now, requestID)
		w.add(now, "function", appendJSONString(nil, line), seq)
	}
	if err := w.flushIfFull(ctx); err != nil {
		return time.Time{}, err
	}
	now := time.Now()
	w.lastTook = now.Sub(start)
	w.add(now, "platform.runtimeDone", fmt.Appendf(nil,
		`{"requestId":%q,"status":"success","metrics":{"durationMs":%.3f,"producedBytes":0}}`,
		requestID, ms(w.lastTook)), -1)
	return w.flush(ctx)
}

// report delivers platform.report of the last invocation, as Lambda does
// before SHUTDOWN.
func (w *workload) report(ctx context.Context, requestID string) error {
	w.addReport(time.Now(), requestID)
	_, err := w.flush(ctx)
	return err
}

func (w *workload) addReport(now time.Time, requestID string) {
	w.add(now, "platform.report", fmt.Appendf(nil,
		`{"requestId":%q,"status":"success","metrics":{"durationMs":%.2f,"billedDurationMs":%d,"memorySizeMB":128,"maxMemoryUsedMB":41}}`,
		requestID, ms(w.lastTook), w.lastTook.Milliseconds()+1), -1)
}

// line writes the next log line, in the Node.js runtime's text layout.
func (w *workload) line(now time.Time, requestID string) (int, string) {
	seq := len(w.want)
	level, msg := w.message()
	line := fmt.Sprintf("%s\t%s\t%s\t%s seq=%d\n", now.UTC().Format(timeLayout), requestID, level, msg, seq)
	w.want = append(w.want, hashLine(line[:len(line)-1])) // Loki gets it without the newline
	w.delivered = append(w.delivered, time.Time{})
	w.rawBytes += int64(len(line))
	return seq, line
}

// message is a typical application log message: mostly access and cache
// logs, some JSON payloads, a few warnings and errors.
func (w *workload) message() (level, msg string) {
	r := w.rng
	switch n := r.IntN(100); {
	case n < 50:
		return "INFO", fmt.Sprintf("GET /api/orders/%d 200 %d.%dms user=u-%d", 40000+r.IntN(10000), r.IntN(300), r.IntN(10), r.IntN(5000))
	case n < 70:
		return "INFO", fmt.Sprintf("cache miss key=product:%d, loading from table products (ttl=300s)", r.IntN(100000))
	case n < 85:
		return "DEBUG", fmt.Sprintf(`payload {"orderId":%d,"items":%d,"amount":%d.%02d,"currency":"EUR"}`, 40000+r.IntN(10000), 1+r.IntN(9), r.IntN(500), r.IntN(100))
	case n < 95:
		return "WARN", fmt.Sprintf("slow query on orders: %dms for %d rows (threshold 200ms)", 200+r.IntN(2000), r.IntN(5000))
	default:
		return "ERROR", fmt.Sprintf("payment provider timed out after %dms (attempt %d of 3), order %d will be retried", 1000+r.IntN(9000), 1+r.IntN(3), 40000+r.IntN(10000))
	}
}

// add appends one event to the delivery being built; seq is the line
// number of a function line, or -1.
func (w *workload) add(now time.Time, typ string, record []byte, seq int) {
	if w.events == 0 {
		w.batch = append(w.batch[:0], '[')
	} else {
		w.batch = append(w.batch, ',')
	}
	w.batch = fmt.Appendf(w.batch, `{"time":"%s","type":"%s","record":`, now.UTC().Format(timeLayout), typ)
	w.batch = append(append(w.batch, record...), '}')
	w.events++
	if seq >= 0 {
		w.seqs = append(w.seqs, seq)
	}
}

// flushIfFull delivers the batch when one more event might not fit.
func (w *workload) flushIfFull(ctx context.Context) error {
	if w.events < maxBatchEvents && len(w.batch) < maxBatchBytes-2<<10 {
		return nil
	}
	_, err := w.flush(ctx)
	return err
}

// flush POSTs the batch to the listener and returns when it was answered.
// A delivery the listener refuses is counted, not retried (as in Lambda).
func (w *workload) flush(ctx context.Context) (time.Time, error) {
	if w.events == 0 {
		return time.Now(), nil
	}
	body := append(w.batch, ']')
	w.batch, w.events = body[:0], 0
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, w.listener, bytes.NewReader(body))
	if err != nil {
		return time.Time{}, err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := w.client.Do(req)
	if err != nil {
		return time.Time{}, fmt.Errorf("deliver telemetry: %w", err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	answered := time.Now()
	if resp.StatusCode/100 != 2 {
		w.rejected++
	}
	for _, seq := range w.seqs {
		w.delivered[seq] = answered
	}
	w.seqs = w.seqs[:0]
	return answered, nil
}

// appendJSONString appends s as a JSON string.
func appendJSONString(b []byte, s string) []byte {
	const hex = "0123456789abcdef"
	b = append(b, '"')
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c == '"' || c == '\\':
			b = append(b, '\\', c)
		case c == '\n':
			b = append(b, '\\', 'n')
		case c == '\t':
			b = append(b, '\\', 't')
		case c < 0x20:
			b = append(b, '\\', 'u', '0', '0', hex[c>>4], hex[c&15])
		default:
			b = append(b, c)
		}
	}
	return append(b, '"')
}

// newUUID returns a random (version 4) UUID.
func newUUID() string {
	var u [16]byte
	rand.Read(u[:])
	u[6] = u[6]&0x0f | 0x40
	u[8] = u[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", u[0:4], u[4:6], u[6:8], u[8:10], u[10:])
}

// ms is d in milliseconds.
func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
