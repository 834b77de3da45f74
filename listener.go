package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode/utf16"
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
	// addChunk is how many entries a delivery adds to the batch at a time,
	// so that a hostile body can't grow the scratch slice without bound.
	addChunk = 1024
	// maxDeliveries is how many deliveries are read at once; Lambda sends
	// one at a time, and each may hold maxBodyBytes.
	maxDeliveries = 4
)

// platformRecord holds the fields of platform.* records that the extension
// uses. All are optional.
type platformRecord struct {
	requestID      string
	status         string
	errorType      string
	traceValue     string // tracing.value
	droppedRecords int64
	metrics        struct {
		durationMs, billedDurationMs, memorySizeMB, maxMemoryUsedMB, initDurationMs, restoreDurationMs float64
	}
}

// parsePlatformRecord reads a platform record; fields of the wrong type
// stay empty.
func parsePlatformRecord(raw []byte) platformRecord {
	var r platformRecord
	m := &r.metrics
	members(raw, func(key, v []byte) {
		switch string(key) {
		case "requestId":
			r.requestID, _ = jsonString(v)
		case "status":
			r.status, _ = jsonString(v)
		case "errorType":
			r.errorType, _ = jsonString(v)
		case "droppedRecords":
			r.droppedRecords = int64(jsonNumber(v))
		case "tracing":
			members(v, func(key, v []byte) {
				if string(key) == "value" {
					r.traceValue, _ = jsonString(v)
				}
			})
		case "metrics":
			members(v, func(key, v []byte) {
				switch string(key) {
				case "durationMs":
					m.durationMs = jsonNumber(v)
				case "billedDurationMs":
					m.billedDurationMs = jsonNumber(v)
				case "memorySizeMB":
					m.memorySizeMB = jsonNumber(v)
				case "maxMemoryUsedMB":
					m.maxMemoryUsedMB = jsonNumber(v)
				case "initDurationMs":
					m.initDurationMs = jsonNumber(v)
				case "restoreDurationMs":
					m.restoreDurationMs = jsonNumber(v)
				}
			})
		}
	})
	return r
}

// jsonNumber returns a raw JSON number's value, or 0 for other values.
func jsonNumber(raw []byte) float64 {
	f, err := strconv.ParseFloat(string(raw), 64)
	if err != nil {
		return 0
	}
	return f
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
	bodies         sync.Pool     // of *bytes.Buffer, for request bodies
	slots          chan struct{} // capacity maxDeliveries

	mu           sync.Mutex // guards the fields below
	requestID    string     // the current invocation, "" when unknown
	traces       [recentIDs]requestTrace
	nextTrace    int
	done         [recentIDs]string // request ids of recent runtimeDone events
	nextDone     int
	lastDelivery time.Time
	scratch      []entry // reused for each delivery's entries
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
		bodies:         sync.Pool{New: func() any { return new(bytes.Buffer) }},
		slots:          make(chan struct{}, maxDeliveries),
	}
}

// ServeHTTP takes one delivery: a JSON array of events. It answers 200 once
// the events are in the batch, 400 to a body that is not a valid JSON array
// and 413 to one over maxBodyBytes; then nothing of it is kept. It writes no
// output.
func (l *listener) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		http.Error(w, "use POST", http.StatusMethodNotAllowed)
		return
	}
	select {
	case l.slots <- struct{}{}:
		defer func() { <-l.slots }()
	case <-r.Context().Done():
		return
	}
	buf := l.bodies.Get().(*bytes.Buffer)
	defer l.bodies.Put(buf)
	buf.Reset()
	if n := r.ContentLength; n > 0 && n <= maxBodyBytes {
		buf.Grow(int(n) + bytes.MinRead) // else ReadFrom doubles a full buffer
	}
	if _, err := buf.ReadFrom(http.MaxBytesReader(w, r.Body, maxBodyBytes)); err != nil {
		status := http.StatusBadRequest
		if _, ok := errors.AsType[*http.MaxBytesError](err); ok {
			status = http.StatusRequestEntityTooLarge
		}
		http.Error(w, "telemetry: "+err.Error(), status)
		return
	}
	body := buf.Bytes()
	if !isWhole(body, '[') {
		http.Error(w, "telemetry: the body is not a JSON array", http.StatusBadRequest)
		return
	}
	l.store(body)
	w.WriteHeader(http.StatusOK)
}

// store converts the events of a valid JSON array to entries, in order, and
// adds them to the batch. Elements that are not events are skipped. Only
// then does it record runtimeDone events, so that a flush woken by one finds
// every line delivered with it.
func (l *listener) store(body []byte) {
	done := l.convert(body)
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

// convert does store's work under l.mu and returns the request ids of the
// runtimeDone events it saw.
func (l *listener) convert(body []byte) (done []string) {
	received := l.now()
	var truncated, droppedByLambda int64
	l.mu.Lock()
	defer l.mu.Unlock()
	l.lastDelivery = received
	es := l.scratch[:0]
	elements(body, func(event []byte) {
		var rawTime, rawType, record []byte
		members(event, func(key, v []byte) {
			switch string(key) {
			case "time":
				rawTime = v
			case "type":
				rawType = v
			case "record":
				record = v
			}
		})
		ts := eventTime(rawTime, received)
		var e entry
		var ok bool
		switch string(rawType) {
		case `"function"`:
			e, ok = l.logEntry(record, ts, sourceFunction)
		case `"extension"`:
			e, ok = l.logEntry(record, ts, sourceExtension)
		default:
			typ, isString := jsonString(rawType)
			if !isString || typ == "" {
				return
			}
			rec := parsePlatformRecord(record)
			switch typ {
			case "platform.start":
				l.startInvocation(rec.requestID, rec.traceValue)
			case "platform.runtimeDone":
				done = append(done, rec.requestID)
			case "platform.logsDropped":
				droppedByLambda += max(rec.droppedRecords, 0)
			}
			e, ok = l.platformEntry(typ, record, &rec, ts)
		}
		if !ok {
			return
		}
		if len(e.line) > l.maxLine {
			e.line = truncate(e.line, l.maxLine)
			truncated++
		}
		if es = append(es, e); len(es) == addChunk { // bound the scratch
			l.batch.add(es)
			clear(es)
			es = es[:0]
		}
	})
	l.batch.add(es)
	clear(es) // keep no lines alive
	l.scratch = es[:0]
	if truncated > 0 || droppedByLambda > 0 {
		l.batch.count(func(c *counters) {
			c.truncated += truncated
			c.droppedByLambda += droppedByLambda
		})
	}
	return done
}

// logEntry turns a function or extension record into an entry, if the
// configuration ships it. l.mu is held.
func (l *listener) logEntry(raw []byte, ts time.Time, src source) (entry, bool) {
	if (src == sourceFunction && !l.types.function) || (src == sourceExtension && !l.types.extension) {
		return entry{}, false
	}
	e := entry{src: src}
	switch {
	case len(raw) > 0 && raw[0] == '"':
		if line, ok := l.escapedLine(raw); ok {
			// The common text line: kept as Lambda escaped it, so that it
			// is neither unescaped here nor escaped again for Loki.
			if src == sourceExtension && strings.HasPrefix(line, l.ownPrefix) {
				return entry{}, false
			}
			e.line, e.escaped = line, true
			e.meta.requestID, e.meta.level = parseTextPrefix(line, `\t`)
			break
		}
		s, _ := jsonString(raw)
		if src == sourceExtension && strings.HasPrefix(s, l.ownPrefix) {
			return entry{}, false
		}
		e.line = strings.TrimSuffix(s, "\n")
		isJSON := false
		if strings.HasPrefix(e.line, "{") {
			obj := []byte(e.line)
			if isJSON = isWhole(obj, '{'); isJSON {
				ts = l.readJSONRecord(&e, obj, ts)
			}
		}
		if !isJSON {
			e.meta.requestID, e.meta.level = parseTextPrefix(e.line, "\t")
		}
	case len(raw) > 0 && raw[0] == '{':
		e.line = string(raw)
		ts = l.readJSONRecord(&e, raw, ts)
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

// escapedLine returns a string record's content as Lambda escaped it, less
// one trailing newline, if it can be sent to Loki that way: valid UTF-8,
// within the maximum line size even before unescaping, and not a JSON
// object (those are read as records).
func (l *listener) escapedLine(raw []byte) (string, bool) {
	inner := raw[1 : len(raw)-1]
	for _, nl := range []string{`\n`, `\u000a`, `\u000A`} {
		if n := len(inner) - len(nl); n >= 0 && string(inner[n:]) == nl {
			run := 1 // backslashes ending at n: odd means the last is an escape
			for run <= n && inner[n-run] == '\\' {
				run++
			}
			if run%2 == 1 {
				inner = inner[:n]
			}
			break
		}
	}
	if len(inner) > l.maxLine || (len(inner) > 0 && inner[0] == '{') || !utf8.Valid(inner) {
		return "", false
	}
	return string(inner), true
}

// readJSONRecord takes the request id, level and timestamp from a JSON log
// record, a valid JSON object, and returns the entry's time. Fields of the
// wrong type are ignored. l.mu is held.
func (l *listener) readJSONRecord(e *entry, obj []byte, ts time.Time) time.Time {
	var rawTime []byte
	members(obj, func(key, v []byte) {
		switch string(key) {
		case "timestamp":
			rawTime = v
		case "level":
			if len(v) <= 18 && v[0] == '"' {
				e.meta.level = normalLevel(string(v[1 : len(v)-1]))
			}
		case "requestId", "AWSRequestId", "function_request_id":
			if e.meta.requestID == "" && len(v) == 38 && isRequestID(v[1:37]) {
				e.meta.requestID = l.intern(v[1:37])
			}
		}
	})
	if t, ok := parseTime(rawTime); ok && t.Before(ts.Add(maxRecordTimeSkew)) && t.After(ts.Add(-maxRecordTimeAge)) {
		return t
	}
	return ts
}

// intern returns id as a string, without allocating when it is the current
// invocation's. l.mu is held.
func (l *listener) intern(id []byte) string {
	if string(id) == l.requestID {
		return l.requestID
	}
	return string(id)
}

// normalLevel lowercases a level name, without allocating for common ones.
func normalLevel(s string) string {
	var lower [16]byte
	n := copy(lower[:], s)
	for i := range n {
		if 'A' <= lower[i] && lower[i] <= 'Z' {
			lower[i] += 'a' - 'A'
		}
	}
	switch string(lower[:n]) {
	case "trace":
		return "trace"
	case "debug":
		return "debug"
	case "info":
		return "info"
	case "warn":
		return "warn"
	case "warning":
		return "warning"
	case "error":
		return "error"
	case "fatal":
		return "fatal"
	case "critical":
		return "critical"
	}
	return string(lower[:n])
}

// platformEntry renders a platform event, if the configuration ships it.
// l.mu is held.
func (l *listener) platformEntry(typ string, raw []byte, rec *platformRecord, ts time.Time) (entry, bool) {
	failed := (rec.status != "" && rec.status != "success") || typ == "platform.logsDropped"
	if !l.types.platform(typ, failed) {
		return entry{}, false
	}
	e := entry{src: sourcePlatform, ts: ts.UnixNano()}
	e.meta.eventType = typ
	e.meta.requestID = rec.requestID
	if failed {
		e.meta.level = "error"
	}
	if e.meta.traceID = traceID(rec.traceValue); e.meta.traceID == "" {
		e.meta.traceID = l.traceOf(rec.requestID)
	}
	if typ == "platform.report" {
		e.line = reportLine(rec)
		return e, true
	}
	var b bytes.Buffer
	b.WriteString(typ)
	b.WriteByte(' ')
	compactJSON(&b, raw)
	e.line = b.String()
	return e, true
}

// compactJSON writes a valid JSON value without the spaces between tokens.
func compactJSON(b *bytes.Buffer, raw []byte) {
	for i := 0; i < len(raw); i++ {
		switch c := raw[i]; c {
		case ' ', '\t', '\n', '\r':
		case '"':
			end := skipString(raw, i)
			b.Write(raw[i:end])
			i = end - 1
		default:
			b.WriteByte(c)
		}
	}
}

// reportLine renders platform.report the way CloudWatch Logs shows it.
func reportLine(rec *platformRecord) string {
	m := &rec.metrics
	b := make([]byte, 0, 192)
	b = append(b, "REPORT RequestId: "...)
	b = append(b, rec.requestID...)
	b = fmt.Appendf(b, "\tDuration: %.2f ms", m.durationMs)
	if m.billedDurationMs > 0 {
		b = fmt.Appendf(b, "\tBilled Duration: %.0f ms", m.billedDurationMs)
	}
	if m.memorySizeMB > 0 {
		b = fmt.Appendf(b, "\tMemory Size: %.0f MB", m.memorySizeMB)
	}
	if m.maxMemoryUsedMB > 0 {
		b = fmt.Appendf(b, "\tMax Memory Used: %.0f MB", m.maxMemoryUsedMB)
	}
	if m.initDurationMs > 0 {
		b = fmt.Appendf(b, "\tInit Duration: %.2f ms", m.initDurationMs)
	}
	if m.restoreDurationMs > 0 {
		b = fmt.Appendf(b, "\tRestore Duration: %.2f ms", m.restoreDurationMs)
	}
	if rec.status != "" && rec.status != "success" {
		b = fmt.Appendf(b, "\tStatus: %s", rec.status)
	}
	if rec.errorType != "" {
		b = fmt.Appendf(b, "\tError Type: %s", rec.errorType)
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

// eventTime reads an event's time, a JSON string, or returns received.
func eventTime(raw []byte, received time.Time) time.Time {
	if t, ok := parseTime(raw); ok {
		return t
	}
	return received
}

// parseTime reads a raw JSON string holding an RFC 3339 time. The form
// Lambda writes, "2024-11-25T10:15:30.123Z", takes a fast path.
func parseTime(raw []byte) (time.Time, bool) {
	if len(raw) < 2 || raw[0] != '"' {
		return time.Time{}, false
	}
	b := raw[1 : len(raw)-1]
	if len(b) >= 20 && len(b) <= 30 && b[4] == '-' && b[7] == '-' && b[10] == 'T' && b[13] == ':' && b[16] == ':' && b[len(b)-1] == 'Z' {
		num := func(s []byte) int {
			n := 0
			for _, c := range s {
				if c < '0' || c > '9' {
					return -1
				}
				n = n*10 + int(c-'0')
			}
			return n
		}
		y, mo, d, h, mi, sec := num(b[:4]), num(b[5:7]), num(b[8:10]), num(b[11:13]), num(b[14:16]), num(b[17:19])
		nsec := 0
		if frac := b[19 : len(b)-1]; len(frac) > 0 {
			if frac[0] != '.' || len(frac) < 2 || len(frac) > 10 {
				nsec = -1
			} else {
				nsec = num(frac[1:])
				for range 10 - len(frac) {
					nsec *= 10
				}
			}
		}
		if y >= 0 && 1 <= mo && mo <= 12 && 1 <= d && d <= 31 && 0 <= h && h < 24 && 0 <= mi && mi < 60 && 0 <= sec && sec < 60 && nsec >= 0 {
			return time.Date(y, time.Month(mo), d, h, mi, sec, nsec, time.UTC), true
		}
	}
	s, _ := jsonString(raw)
	t, err := time.Parse(time.RFC3339Nano, s)
	return t, err == nil
}

// parseTextPrefix finds the request id and level in the tab-separated prefix
// of the managed runtimes: Node.js and others write
// "<time>\t<request id>\t<LEVEL>\t<message>", Python "[<LEVEL>]\t<time>\t<request id>\t<message>".
// tab is how the line writes a tab: "\t", or `\t` if it is still escaped.
func parseTextPrefix(line, tab string) (requestID, level string) {
	f1, rest, ok := strings.Cut(line, tab)
	if !ok {
		return "", ""
	}
	f2, rest, ok := strings.Cut(rest, tab)
	if !ok {
		return "", ""
	}
	f3, _, ok := strings.Cut(rest, tab)
	if !ok || strings.Contains(f1, `\`) || strings.Contains(f2, `\`) || strings.Contains(f3, `\`) {
		return "", "" // no such field has a backslash: tab matched inside an escape
	}
	if len(f1) > 2 && f1[0] == '[' && f1[len(f1)-1] == ']' && isLevel(f1[1:len(f1)-1]) && isTimestamp(f2) {
		requestID, level = f3, normalLevel(f1[1:len(f1)-1])
	} else if isTimestamp(f1) && isLevel(f3) {
		requestID, level = f2, normalLevel(f3)
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
func isRequestID[T string | []byte](s T) bool {
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

// The extension reads JSON with the small validating reader below instead
// of encoding/json: it decodes only the fields it uses, allocates only the
// strings it keeps, and has no nesting limit (a stack of bytes replaces
// recursion). It makes the listener about ten times faster and the binary
// smaller (see BenchmarkListener).

// isWhole reports whether b is exactly one valid JSON value, besides
// spaces, that starts with open ('[' or '{').
func isWhole(b []byte, open byte) bool {
	start := skipSpace(b, 0)
	if start == len(b) || b[start] != open {
		return false
	}
	end := skipValue(b, start)
	return end >= 0 && skipSpace(b, end) == len(b)
}

// skipSpace returns the index of the first non-space byte at or after i.
func skipSpace(b []byte, i int) int {
	for i < len(b) && (b[i] == ' ' || b[i] == '\n' || b[i] == '\r' || b[i] == '\t') {
		i++
	}
	return i
}

// skipValue validates the JSON value at b[i:] (after spaces) and returns the
// index just past it, or -1 if it is not valid JSON.
func skipValue(b []byte, i int) int {
	var open []byte // the containers we are in, innermost last
	for {
		// A value.
		i = skipSpace(b, i)
		if i >= len(b) {
			return -1
		}
		switch c := b[i]; c {
		case '{', '[':
			i = skipSpace(b, i+1)
			closer := c + 2 // '}' or ']'
			if i < len(b) && b[i] == closer {
				i++
				break
			}
			open = append(open, c)
			if c == '{' {
				if i = skipKey(b, i); i < 0 {
					return -1
				}
			}
			continue
		case '"':
			i = skipString(b, i)
		case 't':
			i = skipLiteral(b, i, "true")
		case 'f':
			i = skipLiteral(b, i, "false")
		case 'n':
			i = skipLiteral(b, i, "null")
		default:
			i = skipNumber(b, i)
		}
		if i < 0 {
			return -1
		}
		// After a value: close containers until one takes another member.
		for {
			if len(open) == 0 {
				return i
			}
			i = skipSpace(b, i)
			if i >= len(b) {
				return -1
			}
			top := open[len(open)-1]
			if b[i] == top+2 {
				open = open[:len(open)-1]
				i++
				continue
			}
			if b[i] != ',' {
				return -1
			}
			if i++; top == '{' {
				if i = skipKey(b, i); i < 0 {
					return -1
				}
			}
			break
		}
	}
}

// skipKey skips an object key and its colon.
func skipKey(b []byte, i int) int {
	i = skipSpace(b, i)
	if i >= len(b) || b[i] != '"' {
		return -1
	}
	if i = skipString(b, i); i < 0 {
		return -1
	}
	if i = skipSpace(b, i); i >= len(b) || b[i] != ':' {
		return -1
	}
	return i + 1
}

// skipString skips the string that starts at b[i] == '"'.
func skipString(b []byte, i int) int {
	for i++; i < len(b); i++ {
		c := b[i]
		if c >= 0x20 && c != '"' && c != '\\' {
			continue // the common case, kept tight
		}
		switch {
		case c == '"':
			return i + 1
		case c < 0x20:
			return -1
		}
		if i++; i >= len(b) {
			return -1
		}
		switch b[i] {
		case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
		case 'u':
			if i+4 >= len(b) || !isHex(b[i+1]) || !isHex(b[i+2]) || !isHex(b[i+3]) || !isHex(b[i+4]) {
				return -1
			}
			i += 4
		default:
			return -1
		}
	}
	return -1
}

func skipLiteral(b []byte, i int, lit string) int {
	if len(b)-i >= len(lit) && string(b[i:i+len(lit)]) == lit {
		return i + len(lit)
	}
	return -1
}

// skipNumber skips -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?
func skipNumber(b []byte, i int) int {
	digits := func(i int) int {
		j := i
		for j < len(b) && '0' <= b[j] && b[j] <= '9' {
			j++
		}
		if j == i {
			return -1
		}
		return j
	}
	if i < len(b) && b[i] == '-' {
		i++
	}
	if i < len(b) && b[i] == '0' {
		i++
	} else if i = digits(i); i < 0 {
		return -1
	}
	if i < len(b) && b[i] == '.' {
		if i = digits(i + 1); i < 0 {
			return -1
		}
	}
	if i < len(b) && (b[i] == 'e' || b[i] == 'E') {
		if i++; i < len(b) && (b[i] == '+' || b[i] == '-') {
			i++
		}
		return digits(i)
	}
	return i
}

func isHex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}

// members calls f with the raw key (without quotes) and raw value of each
// member of obj, which must be valid JSON; nothing if it is not an object.
func members(obj []byte, f func(key, value []byte)) {
	i := skipSpace(obj, 0)
	if i >= len(obj) || obj[i] != '{' {
		return
	}
	for i++; ; i++ { // i is at '{' or ','
		i = skipSpace(obj, i)
		if obj[i] != '"' {
			return // '}'
		}
		end := endOfString(obj, i)
		key := obj[i+1 : end-1]
		i = skipSpace(obj, skipSpace(obj, end)+1) // past ':'
		end = endOfValue(obj, i)
		f(key, obj[i:end])
		if i = skipSpace(obj, end); obj[i] != ',' {
			return
		}
	}
}

// elements calls f with each raw element of arr, which must be a valid JSON
// array.
func elements(arr []byte, f func(value []byte)) {
	i := skipSpace(arr, 0)
	if i >= len(arr) || arr[i] != '[' {
		return
	}
	for i++; ; i++ { // i is at '[' or ','
		if i = skipSpace(arr, i); arr[i] == ']' {
			return
		}
		end := endOfValue(arr, i)
		f(arr[i:end])
		if i = skipSpace(arr, end); arr[i] != ',' {
			return
		}
	}
}

// endOfValue returns the index just past the value at b[i] in valid JSON,
// without validating it again.
func endOfValue(b []byte, i int) int {
	depth := 0
	for ; i < len(b); i++ {
		switch b[i] {
		case '"':
			i = endOfString(b, i) - 1
		case '{', '[':
			depth++
			continue
		case '}', ']':
			if depth == 0 {
				return i // after a number or literal
			}
			depth--
		case ',', ' ', '\t', '\n', '\r':
			if depth == 0 {
				return i // after a number or literal
			}
			continue
		default:
			continue
		}
		if depth == 0 {
			return i + 1
		}
	}
	return i
}

// endOfString returns the index just past the string at b[i] in valid JSON.
func endOfString(b []byte, i int) int {
	for i++; ; i++ {
		i += bytes.IndexByte(b[i:], '"')
		backslashes := 0
		for b[i-1-backslashes] == '\\' {
			backslashes++
		}
		if backslashes%2 == 0 {
			return i + 1
		}
	}
}

// jsonString decodes a raw JSON string value; ok is false for other values.
// Invalid UTF-8 is kept as is; the Loki encoder replaces it.
func jsonString(raw []byte) (s string, ok bool) {
	if len(raw) < 2 || raw[0] != '"' {
		return "", false
	}
	raw = raw[1 : len(raw)-1]
	next := bytes.IndexByte(raw, '\\')
	if next < 0 {
		return string(raw), true
	}
	var out strings.Builder
	out.Grow(len(raw))
	for next >= 0 {
		out.Write(raw[:next])
		c := raw[next+1]
		raw = raw[next+2:]
		switch c {
		case 'b':
			out.WriteByte('\b')
		case 'f':
			out.WriteByte('\f')
		case 'n':
			out.WriteByte('\n')
		case 'r':
			out.WriteByte('\r')
		case 't':
			out.WriteByte('\t')
		case 'u':
			r := hex4(raw)
			raw = raw[4:]
			if utf16.IsSurrogate(r) {
				r2 := rune(-1)
				if len(raw) >= 6 && raw[0] == '\\' && raw[1] == 'u' {
					r2 = hex4(raw[2:])
				}
				if r = utf16.DecodeRune(r, r2); r != utf8.RuneError {
					raw = raw[6:]
				}
			}
			out.WriteRune(r)
		default: // '"', '\\', '/'
			out.WriteByte(c)
		}
		next = bytes.IndexByte(raw, '\\')
	}
	out.Write(raw)
	return out.String(), true
}

func hex4(b []byte) rune {
	var r rune
	for _, c := range b[:4] {
		switch {
		case c <= '9':
			c -= '0'
		case c <= 'F':
			c -= 'A' - 10
		default:
			c -= 'a' - 10
		}
		r = r<<4 | rune(c)
	}
	return r
}
