package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode/utf8"
)

const (
	// maxBodyBytes caps one telemetry delivery. Lambda sends at most about
	// twice the subscribed maxBytes (1 MiB at most) plus the JSON envelope.
	maxBodyBytes = 8 << 20
	// maxRecordTimeSkew bounds how far a JSON record's own timestamp may be
	// ahead of the event's time and still be used (a log can't be captured
	// before it is written, but clocks differ a little).
	maxRecordTimeSkew = time.Second
	// maxRecordTimeAge bounds how far it may be behind: Loki's out-of-order
	// window.
	maxRecordTimeAge = time.Hour
	// recentIDs is how many recent invocations the listener remembers.
	recentIDs = 8
)

// telemetryEvent is one element of a Telemetry API delivery.
type telemetryEvent struct {
	Time   string          `json:"time"`
	Type   string          `json:"type"`
	Record json.RawMessage `json:"record"`
}

// platformRecord holds the fields of platform.* records that the extension
// uses. All are optional.
type platformRecord struct {
	RequestID string `json:"requestId"`
	Status    string `json:"status"`
	ErrorType string `json:"errorType"`
	Metrics   struct {
		DurationMs        float64 `json:"durationMs"`
		BilledDurationMs  float64 `json:"billedDurationMs"`
		MemorySizeMB      float64 `json:"memorySizeMB"`
		MaxMemoryUsedMB   float64 `json:"maxMemoryUsedMB"`
		InitDurationMs    float64 `json:"initDurationMs"`
		RestoreDurationMs float64 `json:"restoreDurationMs"`
	} `json:"metrics"`
	Tracing        tracing `json:"tracing"`
	DroppedRecords int64   `json:"droppedRecords"`
}

// jsonRecord holds the fields of a JSON log record that the extension uses.
// Keys match case-insensitively.
type jsonRecord struct {
	Timestamp         string `json:"timestamp"`
	Level             string `json:"level"`
	RequestID         string `json:"requestId"`
	AWSRequestID      string `json:"AWSRequestId"`
	FunctionRequestID string `json:"function_request_id"` // Powertools
}

// requestTrace pairs an invocation with its X-Ray trace id.
type requestTrace struct{ requestID, traceID string }

// listener receives Telemetry API deliveries, turns them into entries and
// adds them to the batch. It answers as soon as the batch holds them.
type listener struct {
	batch     *batch
	types     typeFilter
	maxLine   int
	ownPrefix string // our own output starts with this; never re-ingested
	// inferRequestID lets lines without a request id take the current
	// invocation's; never on Lambda Managed Instances, where invocations
	// run concurrently.
	inferRequestID bool
	now            func() time.Time
	doneSignal     chan struct{} // capacity 1; a value after each runtimeDone

	mu           sync.Mutex // guards the fields below
	requestID    string     // the current invocation, "" when unknown
	traces       [recentIDs]requestTrace
	nextTrace    int
	done         [recentIDs]string // request ids of recent runtimeDone events
	nextDone     int
	lastDelivery time.Time
}

// newListener returns a listener that feeds b.
func newListener(b *batch, types typeFilter, maxLine int, ownPrefix string, inferRequestID bool) *listener {
	return &listener{
		batch:          b,
		types:          types,
		maxLine:        maxLine,
		ownPrefix:      ownPrefix,
		inferRequestID: inferRequestID,
		now:            time.Now,
		doneSignal:     make(chan struct{}, 1),
	}
}

// ServeHTTP takes one delivery: a JSON array of events. It answers 200 once
// the events are in the batch, 400 to a body that is not a JSON array and 413
// to one over maxBodyBytes; then nothing of it is kept. It writes no output.
func (l *listener) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		http.Error(w, "use POST", http.StatusMethodNotAllowed)
		return
	}
	events, err := decodeEvents(http.MaxBytesReader(w, r.Body, maxBodyBytes))
	if err != nil {
		status := http.StatusBadRequest
		if _, ok := errors.AsType[*http.MaxBytesError](err); ok {
			status = http.StatusRequestEntityTooLarge
		}
		http.Error(w, "telemetry: "+err.Error(), status)
		return
	}
	l.store(events)
	w.WriteHeader(http.StatusOK)
}

// decodeEvents reads a JSON array of events. An element that is not an
// object is skipped; fields of the wrong type are left empty.
func decodeEvents(r io.Reader) ([]telemetryEvent, error) {
	dec := json.NewDecoder(r)
	if tok, err := dec.Token(); err != nil {
		return nil, err
	} else if tok != json.Delim('[') {
		return nil, errors.New("body is not a JSON array")
	}
	var events []telemetryEvent
	for dec.More() {
		var ev telemetryEvent
		if err := dec.Decode(&ev); err != nil {
			if _, ok := errors.AsType[*json.UnmarshalTypeError](err); !ok {
				return nil, err
			}
		}
		if ev.Type != "" {
			events = append(events, ev)
		}
	}
	if _, err := dec.Token(); err != nil {
		return nil, err
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, errors.New("data after the JSON array")
	}
	return events, nil
}

// store converts events to entries, in order, and adds them to the batch.
// Only then does it record runtimeDone events, so that a flush woken by one
// finds every line delivered with it.
func (l *listener) store(events []telemetryEvent) {
	received := l.now()
	es := make([]entry, 0, len(events))
	var done []string
	var truncated, droppedByLambda int64
	l.mu.Lock()
	l.lastDelivery = received
	for i := range events {
		ev := &events[i]
		ts := eventTime(ev.Time, received)
		var e entry
		var ok bool
		switch ev.Type {
		case "function":
			e, ok = l.logEntry(ev.Record, ts, sourceFunction)
		case "extension":
			e, ok = l.logEntry(ev.Record, ts, sourceExtension)
		default:
			var rec platformRecord
			json.Unmarshal(ev.Record, &rec) // best effort: fields of the wrong type stay empty
			switch ev.Type {
			case "platform.start":
				l.startInvocation(rec.RequestID, rec.Tracing.Value)
			case "platform.runtimeDone":
				done = append(done, rec.RequestID)
			case "platform.logsDropped":
				droppedByLambda += max(rec.DroppedRecords, 0)
			}
			e, ok = l.platformEntry(ev.Type, ev.Record, &rec, ts)
		}
		if !ok {
			continue
		}
		if len(e.line) > l.maxLine {
			e.line = truncate(e.line, l.maxLine)
			truncated++
		}
		es = append(es, e)
	}
	l.mu.Unlock()

	l.batch.add(es)
	if truncated > 0 || droppedByLambda > 0 {
		l.batch.count(func(c *counters) {
			c.truncated += truncated
			c.droppedByLambda += droppedByLambda
		})
	}
	if len(done) > 0 {
		l.mu.Lock()
		for _, id := range done {
			l.done[l.nextDone] = id
			l.nextDone = (l.nextDone + 1) % recentIDs
		}
		l.mu.Unlock()
		select {
		case l.doneSignal <- struct{}{}:
		default:
		}
	}
}

// logEntry turns a function or extension record into an entry, if the
// configuration ships it. l.mu is held.
func (l *listener) logEntry(raw json.RawMessage, ts time.Time, src source) (entry, bool) {
	if (src == sourceFunction && !l.types.function) || (src == sourceExtension && !l.types.extension) {
		return entry{}, false
	}
	e := entry{src: src}
	raw = bytes.TrimSpace(raw)
	switch {
	case len(raw) > 0 && raw[0] == '"':
		var s string
		if json.Unmarshal(raw, &s) != nil {
			return entry{}, false
		}
		if src == sourceExtension && strings.HasPrefix(s, l.ownPrefix) {
			return entry{}, false
		}
		e.line = strings.TrimSuffix(s, "\n")
		if strings.HasPrefix(e.line, "{") {
			ts = e.fromJSON([]byte(e.line), ts)
		} else {
			e.meta.requestID, e.meta.level = parseTextPrefix(e.line)
		}
	case len(raw) > 0 && raw[0] == '{':
		e.line = string(raw)
		ts = e.fromJSON(raw, ts)
	default: // a number, array, bool or null: keep it as written
		e.line = string(raw)
	}
	if e.meta.requestID == "" && l.inferRequestID {
		e.meta.requestID = l.requestID
	}
	e.meta.traceID = l.traceOf(e.meta.requestID)
	e.ts = ts.UnixNano()
	return e, true
}

// fromJSON takes the request id, level and timestamp from a JSON log
// record, and returns the entry's time. Unusable fields are ignored.
func (e *entry) fromJSON(obj []byte, ts time.Time) time.Time {
	var rec jsonRecord
	if err := json.Unmarshal(obj, &rec); err != nil {
		if _, ok := errors.AsType[*json.UnmarshalTypeError](err); !ok {
			return ts // not JSON after all: a text line that starts with '{'
		}
	}
	for _, id := range []string{rec.RequestID, rec.AWSRequestID, rec.FunctionRequestID} {
		if isRequestID(id) {
			e.meta.requestID = id
			break
		}
	}
	if len(rec.Level) <= 16 {
		e.meta.level = strings.ToLower(rec.Level)
	}
	if t, err := time.Parse(time.RFC3339Nano, rec.Timestamp); err == nil &&
		t.Before(ts.Add(maxRecordTimeSkew)) && t.After(ts.Add(-maxRecordTimeAge)) {
		return t
	}
	return ts
}

// platformEntry renders a platform event, if the configuration ships it.
// l.mu is held.
func (l *listener) platformEntry(typ string, raw json.RawMessage, rec *platformRecord, ts time.Time) (entry, bool) {
	failed := (rec.Status != "" && rec.Status != "success") || typ == "platform.logsDropped"
	if !l.types.platform(typ, failed) {
		return entry{}, false
	}
	e := entry{src: sourcePlatform, ts: ts.UnixNano()}
	e.meta.eventType = typ
	e.meta.requestID = rec.RequestID
	if failed {
		e.meta.level = "error"
	}
	if e.meta.traceID = traceID(rec.Tracing.Value); e.meta.traceID == "" {
		e.meta.traceID = l.traceOf(rec.RequestID)
	}
	if typ == "platform.report" {
		e.line = reportLine(rec)
		return e, true
	}
	var b bytes.Buffer
	b.WriteString(typ)
	b.WriteByte(' ')
	if json.Compact(&b, raw) != nil {
		b.Write(raw)
	}
	e.line = b.String()
	return e, true
}

// reportLine renders platform.report the way CloudWatch Logs shows it.
func reportLine(rec *platformRecord) string {
	m := &rec.Metrics
	b := make([]byte, 0, 192)
	b = append(b, "REPORT RequestId: "...)
	b = append(b, rec.RequestID...)
	b = fmt.Appendf(b, "\tDuration: %.2f ms", m.DurationMs)
	if m.BilledDurationMs > 0 {
		b = fmt.Appendf(b, "\tBilled Duration: %.0f ms", m.BilledDurationMs)
	}
	if m.MemorySizeMB > 0 {
		b = fmt.Appendf(b, "\tMemory Size: %.0f MB", m.MemorySizeMB)
	}
	if m.MaxMemoryUsedMB > 0 {
		b = fmt.Appendf(b, "\tMax Memory Used: %.0f MB", m.MaxMemoryUsedMB)
	}
	if m.InitDurationMs > 0 {
		b = fmt.Appendf(b, "\tInit Duration: %.2f ms", m.InitDurationMs)
	}
	if m.RestoreDurationMs > 0 {
		b = fmt.Appendf(b, "\tRestore Duration: %.2f ms", m.RestoreDurationMs)
	}
	if rec.Status != "" && rec.Status != "success" {
		b = fmt.Appendf(b, "\tStatus: %s", rec.Status)
	}
	if rec.ErrorType != "" {
		b = fmt.Appendf(b, "\tError Type: %s", rec.ErrorType)
	}
	return string(b)
}

// startInvocation makes requestID the current invocation and remembers its
// trace. l.mu is held.
func (l *listener) startInvocation(requestID, traceValue string) {
	if requestID == "" {
		return
	}
	if l.inferRequestID {
		l.requestID = requestID
	}
	if id := traceID(traceValue); id != "" && l.traceOf(requestID) == "" {
		l.traces[l.nextTrace] = requestTrace{requestID, id}
		l.nextTrace = (l.nextTrace + 1) % recentIDs
	}
}

// traceOf returns the trace id of a recent invocation. l.mu is held.
func (l *listener) traceOf(requestID string) string {
	if requestID == "" {
		return ""
	}
	for _, t := range l.traces {
		if t.requestID == requestID {
			return t.traceID
		}
	}
	return ""
}

// invoke tells the listener that an INVOKE event started requestID.
func (l *listener) invoke(requestID, traceValue string) {
	l.mu.Lock()
	l.startInvocation(requestID, traceValue)
	l.mu.Unlock()
}

// waitRuntimeDone waits until platform.runtimeDone for requestID has been
// stored, until the time until, or until ctx ends. It reports whether the
// event came.
func (l *listener) waitRuntimeDone(ctx context.Context, requestID string, until time.Time) bool {
	timer := time.NewTimer(time.Until(until))
	defer timer.Stop()
	for {
		l.mu.Lock()
		seen := false
		for _, id := range l.done {
			seen = seen || id == requestID
		}
		l.mu.Unlock()
		if seen {
			return true
		}
		select {
		case <-l.doneSignal:
		case <-timer.C:
			return false
		case <-ctx.Done():
			return false
		}
	}
}

// lastDeliveryTime returns when the last delivery arrived.
func (l *listener) lastDeliveryTime() time.Time {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.lastDelivery
}

// eventTime parses an event's RFC 3339 time, or returns received.
func eventTime(s string, received time.Time) time.Time {
	if t, err := time.Parse(time.RFC3339Nano, s); err == nil {
		return t
	}
	return received
}

// parseTextPrefix finds the request id and level in the tab-separated prefix
// of the managed runtimes: Node.js and others write
// "<time>\t<request id>\t<LEVEL>\t<message>", Python "[<LEVEL>]\t<time>\t<request id>\t<message>".
func parseTextPrefix(line string) (requestID, level string) {
	f1, rest, ok := strings.Cut(line, "\t")
	if !ok {
		return "", ""
	}
	f2, rest, ok := strings.Cut(rest, "\t")
	if !ok {
		return "", ""
	}
	f3, _, ok := strings.Cut(rest, "\t")
	if !ok {
		return "", ""
	}
	if len(f1) > 2 && f1[0] == '[' && f1[len(f1)-1] == ']' && isLevel(f1[1:len(f1)-1]) && isTimestamp(f2) {
		requestID, level = f3, strings.ToLower(f1[1:len(f1)-1])
	} else if isTimestamp(f1) && isLevel(f3) {
		requestID, level = f2, strings.ToLower(f3)
	}
	if !isRequestID(requestID) {
		requestID = "" // e.g. "undefined" during Init
	}
	return requestID, level
}

// isLevel reports whether s is a level word of the managed runtimes.
func isLevel(s string) bool {
	switch s {
	case "TRACE", "DEBUG", "INFO", "WARN", "WARNING", "ERROR", "FATAL", "CRITICAL":
		return true
	}
	return false
}

// isTimestamp reports whether s looks like an RFC 3339 time.
func isTimestamp(s string) bool {
	return len(s) >= 20 && s[4] == '-' && s[7] == '-' && s[10] == 'T'
}

// isRequestID reports whether s has the form of a Lambda request id, a UUID.
func isRequestID(s string) bool {
	if len(s) != 36 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case i == 8 || i == 13 || i == 18 || i == 23:
			if c != '-' {
				return false
			}
		case '0' <= c && c <= '9', 'a' <= c && c <= 'f', 'A' <= c && c <= 'F':
		default:
			return false
		}
	}
	return true
}

// traceID returns the Root of an X-Amzn-Trace-Id value
// ("Root=1-...;Parent=...;Sampled=0"), or "" if there is none.
func traceID(value string) string {
	for field := range strings.SplitSeq(value, ";") {
		if id, ok := strings.CutPrefix(strings.TrimSpace(field), "Root="); ok && len(id) <= 64 {
			return id
		}
	}
	return ""
}

// truncate cuts line to at most max bytes, on a rune boundary, ending with a
// marker that says how much was cut.
func truncate(line string, max int) string {
	const marker = "…[truncated %d bytes]"
	cut := max - len(fmt.Sprintf(marker, len(line)))
	if cut < 0 {
		cut = 0
	}
	for cut > 0 && !utf8.RuneStart(line[cut]) {
		cut--
	}
	return line[:cut] + fmt.Sprintf(marker, len(line)-cut)
}

// typeFilter says which telemetry is shipped to Loki.
type typeFilter struct {
	function       bool
	extension      bool
	platformAll    bool
	platformErrors bool            // platform events that report a failure
	platformTypes  map[string]bool // e.g. "platform.report"
}

// platform reports whether a platform event of type typ is shipped.
func (f typeFilter) platform(typ string, failed bool) bool {
	return f.platformAll || f.platformTypes[typ] || (failed && f.platformErrors)
}

// parseTypes reads LOKI_TYPES: a comma-separated list of function,
// extension, platform, platform.error or a platform event type.
func parseTypes(s string) (typeFilter, error) {
	f := typeFilter{platformTypes: map[string]bool{}}
	for t := range strings.SplitSeq(s, ",") {
		switch t = strings.TrimSpace(t); {
		case t == "function":
			f.function = true
		case t == "extension":
			f.extension = true
		case t == "platform":
			f.platformAll = true
		case t == "platform.error":
			f.platformErrors = true
		case strings.HasPrefix(t, "platform.") && len(t) > len("platform."):
			f.platformTypes[t] = true
		default:
			return f, fmt.Errorf("unknown type %s; use function, extension, platform, platform.error or a platform event type such as platform.report", strconv.Quote(t))
		}
	}
	return f, nil
}
