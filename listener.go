package main

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json/jsontext"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"slices"
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
	// recentSpans is how many recent invocations the listener remembers.
	recentSpans = 8
	// maxDeliveries is how many deliveries are read at once; Lambda sends
	// one at a time, and each may hold maxBodyBytes.
	maxDeliveries = 4
	// maxMetaValue bounds a tenant id or event type taken into structured
	// metadata (Loki allows 64 KB and 128 entries per line; ours are five).
	maxMetaValue = 256
)

// decodeOptions returns the decoding options for telemetry: a function's
// JSON record may repeat a key and, unless strict, hold invalid UTF-8 or a
// lone surrogate escape (each becomes U+FFFD in Loki), as encoding/json
// allows.
func decodeOptions(strict bool) []jsontext.Options {
	return []jsontext.Options{jsontext.AllowDuplicateNames(true), jsontext.AllowInvalidUTF8(!strict)}
}

// platformRecord holds the fields of platform.* records that the extension
// uses. All are optional.
type platformRecord struct {
	requestID, status, errorType, tenantID string
	traceValue                             string // tracing.value
	droppedRecords                         int64
	metrics                                map[string]float64 // by name, as durationMs
}

// span is an invocation as the telemetry stream tells it: from the time of
// its platform.start to that of its platform.runtimeDone.
type span struct {
	requestID, traceID, tenantID string
	start, done                  time.Time // done is zero while it runs
}

// delivery is what one telemetry POST adds up to, kept until all of it has
// been read: a body that does not begin a JSON array adds nothing.
type delivery struct {
	received           time.Time
	entries            []entry
	cost, overflow     int // of entries; entries left out: more than the buffer takes
	done               []string
	truncated, dropped int64 // lines cut; records Lambda says it dropped
	filtered, overRate int64 // lines below the minimum level; over the rate
}

// listener receives Telemetry API deliveries, turns them into entries and
// adds them to the batch. It answers as soon as the batch holds them.
//
// Every path a delivery's bytes can take:
//   - ServeHTTP: a body over maxBodyBytes is answered 413, one that does
//     not begin a JSON array 400; nothing of either is kept. Any other is
//     answered 200, once what could be read of it is in the batch.
//   - decode, readEvents: one jsontext.Decoder reads the array's elements
//     in order, each once (a function or extension record's fields as
//     they go by), strictly (valid UTF-8, no lone surrogate escape, as
//     Lambda writes them). A delivery that fails that is read again from
//     the start, leniently, with the state it began with (spans, rate).
//     Member names and event types are compared unescaped.
//   - In the lenient read, an element that cannot be read (invalid JSON,
//     nested deeper than the 10,000 levels the standard library reads, or
//     cut off by the body's end) ends the reading: a decoder cannot
//     resynchronise. It is kept as a text line, with the rest of the
//     body, as written: see event. What follows the array is not read.
//   - event, the one funnel of every element: logEntry or platformEntry
//     apply LOKI_TYPES (logEntry also the own-output filter and a record's
//     own time) and make the entry, whose level is final from then on;
//     platform events update the invocation spans, the runtimeDone list
//     and Lambda's drop count, shipped or not. Then LOKI_MIN_LEVEL
//     (dropped_filtered), the line limit (counted as truncated),
//     LOKI_MAX_BYTES_PER_SECOND (dropped_rate_limited), the environment's
//     time offset, and add, which counts what does not fit the buffer
//     (dropped_buffer_full).
//   - logEntry: a text record of a strict read whose prefix escapes
//     nothing but tabs (readsEscaped: most lines) is read as it is, and
//     goes to Loki as Lambda escaped it (escaped), within the line limit;
//     any other is unquoted by jsontext and goes unescaped (invalid UTF-8
//     as U+FFFD). A JSON object, as a record or in a text, is kept as
//     written and its fields read once; any other value is kept as
//     written.
type listener struct {
	batch     *batch
	types     typeFilter
	maxLine   int
	ownPrefix string // our own output starts with this; never re-ingested
	// inferRequestID lets lines without a request id take that of the
	// invocation whose span holds them; never on Lambda Managed
	// Instances, where invocations run concurrently.
	inferRequestID bool
	// offset (ns, under a millisecond) is added to timestamps of
	// millisecond precision. Each environment has its own, so that the
	// same line written in the same millisecond by two environments of a
	// function is two entries to Loki, not one.
	offset     int64
	minLevel   severity // lines of a known, lower level are dropped
	rate       float64  // bytes of line text a second; 0: no cap
	log        *onceLogger
	now        func() time.Time
	doneSignal chan struct{} // capacity 1; a value after each runtimeDone
	bodies     sync.Pool     // of *bytes.Buffer, for request bodies
	slots      chan struct{} // capacity maxDeliveries

	mu                 sync.Mutex // guards the fields below
	events             *jsontext.Decoder
	records            *jsontext.Decoder // for records inside an event
	recordBytes        bytes.Reader
	strict             bool   // the delivery is read with decodeOptions(true)
	text               []byte // a text record, unquoted
	spans              [recentSpans]span
	done               [recentSpans]string // request ids of recent runtimeDone events
	nextSpan, nextDone int
	lastDelivery       time.Time
	tokens             float64 // the rate's bucket: bytes that may go now
	scratch            []entry // reused for each delivery's entries
}

// newListener returns a listener that feeds b.
func newListener(b *batch, types typeFilter, maxLine int, ownPrefix string, inferRequestID bool) *listener {
	return &listener{
		batch:          b,
		types:          types,
		maxLine:        maxLine,
		ownPrefix:      ownPrefix,
		inferRequestID: inferRequestID,
		offset:         rand.Int64N(int64(time.Millisecond)),
		now:            time.Now,
		doneSignal:     make(chan struct{}, 1),
		bodies:         sync.Pool{New: func() any { return new(bytes.Buffer) }},
		slots:          make(chan struct{}, maxDeliveries),
		events:         jsontext.NewDecoder(bytes.NewReader(nil)),
		records:        jsontext.NewDecoder(bytes.NewReader(nil)),
	}
}

// ServeHTTP takes one delivery: a JSON array of events. It answers 200 once
// the events are in the batch, 400 to a body that does not begin a JSON
// array and 413 to one over maxBodyBytes; then nothing of it is kept. It
// writes no output.
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
	if err := l.store(buf); err != nil {
		http.Error(w, "telemetry: "+err.Error(), http.StatusBadRequest)
		return
	}
	w.WriteHeader(http.StatusOK)
}

// store converts the events of body, a JSON array, to entries, in order,
// and adds them to the batch. Only then does it record runtimeDone events,
// so that a flush woken by one finds every line delivered with it.
func (l *listener) store(body *bytes.Buffer) error {
	l.mu.Lock()
	dv := delivery{received: l.now(), entries: l.scratch[:0]}
	// A bucket of one second's bytes, filled at the rate since the last delivery.
	l.tokens = min(l.tokens+l.rate*dv.received.Sub(l.lastDelivery).Seconds(), l.rate)
	l.lastDelivery = dv.received
	err := l.decode(body.Bytes(), &dv)
	if err == nil {
		l.batch.add(dv.entries)
		for _, id := range dv.done {
			l.done[l.nextDone] = id
			l.nextDone = (l.nextDone + 1) % recentSpans
		}
	}
	clear(dv.entries) // keep no lines alive
	l.scratch = dv.entries[:0]
	l.mu.Unlock()
	if err != nil {
		return err
	}
	l.batch.count(func(c *counters) {
		c.truncated, c.droppedByLambda, c.droppedFull = c.truncated+dv.truncated, c.droppedByLambda+dv.dropped, c.droppedFull+int64(dv.overflow)
		c.droppedFiltered, c.droppedOverRate = c.droppedFiltered+dv.filtered, c.droppedOverRate+dv.overRate
	})
	if dv.overRate > 0 {
		l.log.once("rate", "LOKI_MAX_BYTES_PER_SECOND: dropping lines over %.0f bytes a second (counted as dropped_rate_limited)", l.rate)
	}
	if len(dv.done) > 0 {
		notify(l.doneSignal)
	}

	return nil
}

// decode reads the events of raw into dv, strictly first: every string
// valid UTF-8 with no lone surrogate escape, as Lambda writes them, which
// spares readsEscaped checks of its own: 4 % of the listener, batch and
// encoder's time on go run ./bench's lines (BenchmarkLineMix, -cpu 1, 8
// alternating rounds: 891 against 930 ns a line). Any other
// delivery is read again, leniently, from the spans and rate it started
// with. l.mu is held.
func (l *listener) decode(raw []byte, dv *delivery) error {
	spans, next, tokens := l.spans, l.nextSpan, l.tokens
	if l.strict = true; l.readEvents(raw, dv) == nil {
		return nil
	}
	clear(dv.entries)
	*dv = delivery{received: dv.received, entries: dv.entries[:0]}
	l.spans, l.nextSpan, l.tokens, l.strict = spans, next, tokens, false
	return l.readEvents(raw, dv)
}

// readEvents reads the JSON array of events raw into dv, converting each
// element in turn, and nothing after the array. A function's JSON record
// is read in the same pass, as its fields go by. An element that cannot be
// read ends the reading; it goes to event as the rest of raw. l.mu is held.
func (l *listener) readEvents(raw []byte, dv *delivery) error {
	d := l.events
	d.Reset(bytes.NewBuffer(raw), decodeOptions(l.strict)...) // values stay valid after a read
	if d.PeekKind() != '[' {
		return errors.New("not a JSON array")
	}
	d.ReadToken()
	for d.PeekKind() != ']' {
		at := d.InputOffset()
		var rawTime, rawType, record jsontext.Value
		var fields *recordFields
		err := members(d, func(name []byte) (err error) {
			switch string(name) {
			case "time":
				rawTime, err = d.ReadValue()
			case "type":
				rawType, err = d.ReadValue()
			case "record":
				if typ := content(rawType); d.PeekKind() != '{' || string(typ) != "function" && string(typ) != "extension" {
					record, err = d.ReadValue()
					break
				}
				start := d.InputOffset()
				fields = &recordFields{}
				err = l.readFields(d, fields)
				record = bytes.TrimLeft(raw[start:d.InputOffset()], ": \t\r\n")
			}
			return err
		})
		if err != nil && l.strict {
			return err // read it again, leniently
		} else if err != nil {
			l.event(dv, rawTime, rawType, bytes.TrimLeft(raw[at:], ", \t\r\n"), nil, true)
			return nil
		}
		l.event(dv, rawTime, rawType, record, fields, false)
	}
	return nil
}

// members reads the object that is next in d, calling f with the name of
// each member, unescaped. f reads the member's value, or leaves it to be
// skipped. A value that is not an object is skipped.
func members(d *jsontext.Decoder, f func(name []byte) error) error {
	if d.PeekKind() != '{' {
		return d.SkipValue()
	}
	if _, err := d.ReadToken(); err != nil {
		return err
	}
	for d.PeekKind() == '"' {
		raw, err := d.ReadValue()
		if err != nil {
			return err
		}
		at, name := d.InputOffset(), raw[1:len(raw)-1]
		if bytes.IndexByte(name, '\\') >= 0 {
			name = content(raw) // escaped: seldom
		}
		if err := f(name); err != nil {
			return err
		}
		if d.InputOffset() == at {
			if err := d.SkipValue(); err != nil {
				return err
			}
		}
	}
	_, err := d.ReadToken()
	return err
}

// content returns what the JSON string v holds, without a copy when it has
// no escapes; nothing for other values. Invalid UTF-8 stays: the push
// encoding replaces it.
func content(v jsontext.Value) []byte {
	if v.Kind() != '"' {
		return nil
	}
	if bytes.IndexByte(v, '\\') < 0 {
		return v[1 : len(v)-1]
	}
	b, _ := jsontext.AppendUnquote(nil, v)
	return b
}

// unquote returns what the JSON string v holds ("" for other values).
func unquote(v jsontext.Value) string { return string(content(v)) }

// number returns the JSON number v, or 0.
func number(v jsontext.Value) float64 {
	f, _ := strconv.ParseFloat(string(v), 64)
	return f
}

// event converts one element of the array and adds it to dv, if the
// configuration ships it; an element without a type adds nothing. Every
// element comes here, one that could not be read (unreadable) too: then
// record is the rest of the body, with the time and type read before the
// failure, and it is a text line as written (no fields are read from it).
// l.mu is held.
func (l *listener) event(dv *delivery, rawTime, rawType, record jsontext.Value, fields *recordFields, unreadable bool) {
	at, ok := parseTime(rawTime)
	if !ok {
		at = dv.received
	}
	var e entry
	switch typ := content(rawType); string(typ) {
	case "function":
		e, ok = l.logEntry(record, fields, at, sourceFunction, unreadable)
	case "extension":
		e, ok = l.logEntry(record, fields, at, sourceExtension, unreadable)
	default:
		if len(typ) == 0 || len(typ) > maxMetaValue {
			return
		}
		var rec platformRecord
		if !unreadable {
			rec = l.platformRecord(record)
		}
		typ := string(typ)
		switch typ {
		case "platform.start":
			l.startSpan(&rec, at)
		case "platform.runtimeDone":
			dv.done = append(dv.done, rec.requestID)
			if sp := l.spanOf(rec.requestID, time.Time{}); sp != nil && sp.done.IsZero() {
				sp.done = at
			}
		case "platform.logsDropped":
			dv.dropped += max(rec.droppedRecords, 0)
		}
		e, ok = l.platformEntry(typ, record, &rec, at)
	}
	if !ok {
		return
	}
	// Here a line's level is final: the text prefix's, a JSON record's, or
	// error for a failed platform event (those follow LOKI_TYPES only).
	if e.src != sourcePlatform && e.level != 0 && e.level < l.minLevel {
		dv.filtered++
		return
	}
	if len(e.line) > l.maxLine {
		e.line, e.escaped = truncate(e.line, l.maxLine), false
		dv.truncated++
	}
	if l.rate > 0 && e.src != sourcePlatform {
		if l.tokens < float64(len(e.line)) {
			dv.overRate++
			return
		}
		l.tokens -= float64(len(e.line))
	}
	if e.ts%int64(time.Millisecond) == 0 {
		e.ts += l.offset
	}
	l.add(dv, e)
}

// add appends e to dv, unless dv already holds more than the buffer takes.
func (l *listener) add(dv *delivery, e entry) {
	if dv.cost += e.cost(); dv.cost > l.batch.capBytes {
		dv.overflow++
		return
	}
	dv.entries = append(dv.entries, e)
}

// startSpan starts the span of an invocation; one still open ends.
func (l *listener) startSpan(rec *platformRecord, at time.Time) {
	if rec.requestID == "" {
		return
	}
	for i := range l.spans {
		if sp := &l.spans[i]; sp.done.IsZero() && l.inferRequestID {
			sp.done = at // invocations are sequential: it ended unseen
		}
	}
	l.spans[l.nextSpan] = span{requestID: rec.requestID, traceID: traceID(rec.traceValue), tenantID: rec.tenantID, start: at}
	l.nextSpan = (l.nextSpan + 1) % recentSpans
}

// spanOf returns the recent invocation requestID, or if that is "" the one
// whose span holds the time at; nil if there is none. A span holds the
// time of its runtimeDone only for lines that come before that event (the
// span is still open then): the times have millisecond precision.
func (l *listener) spanOf(requestID string, at time.Time) *span {
	for i := range recentSpans {
		sp := &l.spans[(l.nextSpan+recentSpans-1-i)%recentSpans] // newest first
		if requestID != "" && sp.requestID == requestID ||
			requestID == "" && !sp.start.IsZero() && !at.Before(sp.start) && (sp.done.IsZero() || at.Before(sp.done)) {
			return sp
		}
	}
	return nil
}

// logEntry turns a function or extension record into an entry, if the
// configuration ships it; fields are a JSON record's, if read already. Its
// request id, trace and tenant come from the record, or else (but on
// Managed Instances) from the invocation whose span holds the event's time
// at. An unreadable element's text is kept as written. l.mu is held.
func (l *listener) logEntry(raw jsontext.Value, fields *recordFields, at time.Time, src source, unreadable bool) (entry, bool) {
	if !l.types[src.String()] {
		return entry{}, false
	}
	e := entry{src: src, ts: at.UnixNano()}
	switch {
	case unreadable:
		e.line = string(raw)
	case raw.Kind() == '"':
		// The text, less one final newline, and where raw holds it.
		inner, _ := bytes.CutSuffix(raw[1:len(raw)-1], []byte(`\n`))
		text, tab, err := inner, []byte(`\t`), error(nil)
		if !l.strict || !readsEscaped(inner) || len(inner) > l.maxLine {
			// Unquoted by jsontext, into l.text; an error means invalid
			// UTF-8 or a lone surrogate escape, each U+FFFD now.
			text, err = jsontext.AppendUnquote(l.text[:0], raw)
			if cap(text) <= 64<<10 {
				l.text = text // else a rare long line's buffer would stay
			}
			var nl bool
			text, nl = bytes.CutSuffix(text, []byte("\n"))
			if inner, tab = raw[1:len(raw)-1], []byte("\t"); nl && bytes.HasSuffix(inner, []byte(`\n`)) {
				inner = inner[:len(inner)-2] // the newline's escape
			} else if nl {
				inner = inner[:len(inner)-6] // \u000a
			}
		}
		if src == sourceExtension && bytes.HasPrefix(text, []byte(l.ownPrefix)) {
			return entry{}, false // our own output (its prefix has no tab; no other record is text)
		}
		if fields = new(recordFields); len(text) > 0 && text[0] == '{' && l.readRecord(text, fields) {
			e.line = string(text)
			e.ts, e.meta.requestID, e.meta.tenantID, e.level = fields.at(at), fields.requestID, fields.tenantID, fields.level
			break // JSON printed as text
		}
		id, level := parseTextPrefix(text, tab)
		e.meta.requestID, e.level = l.intern(id), level
		// Valid text within the limit goes to Loki as Lambda escaped it,
		// not escaped again: that would cost the shipper a third more
		// time per line (BenchmarkEncodeEscaped: 396 against 290 ns).
		if err != nil || len(inner) > l.maxLine {
			e.line = string(text)
		} else {
			e.line, e.escaped = string(inner), true
		}
	case raw.Kind() == '{':
		if fields == nil {
			fields = new(recordFields)
			l.readRecord(raw, fields)
		}
		e.line = string(raw)
		e.ts, e.meta.requestID, e.meta.tenantID, e.level = fields.at(at), fields.requestID, fields.tenantID, fields.level
	default: // a number, array, bool or null: kept as written
		e.line = string(raw)
	}
	if sp := l.spanOf(e.meta.requestID, at); sp != nil && (e.meta.requestID != "" || l.inferRequestID) {
		e.meta.requestID, e.meta.traceID = sp.requestID, sp.traceID
		e.meta.tenantID = cmp.Or(e.meta.tenantID, sp.tenantID)
	}
	return e, true
}

// readsEscaped reports whether s, a JSON string's content from a strict
// read (valid UTF-8, no lone surrogate escape), reads the same escaped
// where the listener looks: it does not begin a JSON object or end with a
// backslash (of a \n cut off that was not the newline's), and escapes
// nothing but tabs before its third tab (the runtimes' prefix, a tab
// written `\t`; our own prefix, or a brace, could be a \u escape). What
// follows is the message, for Loki to read. Most lines are so, and skip
// unquoting: about 140 ns a line (BenchmarkListener/text: 610-640 µs
// against 740-950 µs when every line was unquoted).
func readsEscaped(s []byte) bool {
	if len(s) > 0 && s[0] == '{' || bytes.HasSuffix(s, []byte(`\`)) {
		return false
	}
	for range 3 { // the prefix's tabs
		i := bytes.IndexByte(s, '\\')
		if i < 0 {
			return true
		} else if s[i+1] != 't' { // s does not end with a backslash
			return false
		}
		s = s[i+2:]
	}
	return true
}

// recordFields is what a JSON log record tells of itself.
type recordFields struct {
	time                time.Time
	level               severity
	requestID, tenantID string
}

// at returns the time of the record's entry: its own, if it is within
// maxRecordTimeAge before and maxRecordTimeSkew after the event's time
// event, else that.
func (f *recordFields) at(event time.Time) int64 {
	if f.time.Before(event.Add(maxRecordTimeSkew)) && f.time.After(event.Add(-maxRecordTimeAge)) {
		return f.time.UnixNano()
	}
	return event.UnixNano()
}

// readFields reads the JSON log record next in d into f: its timestamp,
// level, request id and tenant. Fields of the wrong type are ignored.
// l.mu is held.
func (l *listener) readFields(d *jsontext.Decoder, f *recordFields) (err error) {
	value := func() (v jsontext.Value) {
		v, err = d.ReadValue()
		return v
	}
	return members(d, func(name []byte) error {
		switch string(name) { // name is void after the next read
		case "timestamp":
			f.time, _ = parseTime(value())
		case "level":
			f.level = cmp.Or(f.level, levelOf(content(value())))
		case "requestId", "AWSRequestId", "function_request_id":
			if id := content(value()); f.requestID == "" && isRequestID(id) {
				f.requestID = l.intern(id)
			}
		case "tenantId":
			if id := unquote(value()); len(id) <= maxMetaValue {
				f.tenantID = id
			}
		}
		return err
	})
}

// readRecord reads obj into f and reports whether it is a JSON object and
// nothing more. l.mu is held.
func (l *listener) readRecord(obj []byte, f *recordFields) bool {
	d := l.recordDecoder(obj)
	err := l.readFields(d, f)
	_, eof := d.ReadToken()
	return err == nil && eof == io.EOF
}

// recordDecoder returns l.records reading obj. l.mu is held.
func (l *listener) recordDecoder(obj []byte) *jsontext.Decoder {
	l.recordBytes.Reset(obj)
	l.records.Reset(&l.recordBytes, decodeOptions(false)...)
	return l.records
}

// intern returns id as a string, without allocating when it is a recent
// invocation's. l.mu is held.
func (l *listener) intern(id []byte) string {
	for i := range l.spans { // not by value: a span is 96 bytes
		if l.spans[i].requestID == string(id) {
			return l.spans[i].requestID
		}
	}
	return string(id)
}

// levelOf returns the level s names, case-insensitively, or 0.
func levelOf[T string | []byte](s T) severity {
	var lower [8]byte
	if len(s) > len(lower) {
		return 0
	}
	for i := range len(s) {
		lower[i] = s[i] | 0x20 // ASCII letters only fold to letters
	}
	w := string(lower[:len(s)])
	// Each level's other name, or its name again.
	for v, alias := range [...]string{"", "trace", "debug", "info", "warning", "err", "fatal", "crit"} {
		if w == alias || w == severity(v).String() {
			return severity(v)
		}
	}
	return 0
}

// platformRecord reads a platform record; fields of the wrong type stay
// empty. l.mu is held.
func (l *listener) platformRecord(raw jsontext.Value) platformRecord {
	var r platformRecord
	d := l.recordDecoder(raw)
	value := func() jsontext.Value { v, _ := d.ReadValue(); return v }
	members(d, func(name []byte) error {
		switch string(name) {
		case "requestId":
			r.requestID = unquote(value())
		case "status":
			r.status = unquote(value())
		case "errorType":
			r.errorType = unquote(value())
		case "tenantId":
			if r.tenantID = unquote(value()); len(r.tenantID) > maxMetaValue {
				r.tenantID = ""
			}
		case "droppedRecords":
			r.droppedRecords = int64(number(value()))
		case "tracing":
			return members(d, func(name []byte) error {
				if string(name) == "value" {
					r.traceValue = unquote(value())
				}
				return nil
			})
		case "metrics":
			r.metrics = map[string]float64{}
			return members(d, func(name []byte) error {
				key := string(name) // void after the read
				r.metrics[key] = number(value())
				return nil
			})
		}
		return nil
	})
	return r
}

// platformEntry renders a platform event, if the configuration ships it.
// l.mu is held.
func (l *listener) platformEntry(typ string, raw jsontext.Value, rec *platformRecord, at time.Time) (entry, bool) {
	failed := (rec.status != "" && rec.status != "success") || typ == "platform.logsDropped"
	if !l.types["platform"] && !l.types[typ] && !(failed && l.types["platform.error"]) {
		return entry{}, false
	}
	e := entry{src: sourcePlatform, ts: at.UnixNano()}
	e.meta.eventType, e.meta.requestID, e.meta.tenantID = typ, rec.requestID, rec.tenantID
	if failed {
		e.level = levelOf("error")
	}
	if e.meta.traceID = traceID(rec.traceValue); e.meta.traceID == "" && rec.requestID != "" {
		if sp := l.spanOf(rec.requestID, at); sp != nil {
			e.meta.traceID = sp.traceID
		}
	}
	if typ == "platform.report" {
		e.line = reportLine(rec)
		return e, true
	}
	e.line = typ + " " + string(raw) // as Lambda wrote it: compact
	return e, true
}

// reportLine renders platform.report the way CloudWatch Logs shows it.
func reportLine(rec *platformRecord) string {
	b := fmt.Appendf(nil, "REPORT RequestId: %s\tDuration: %.2f ms", rec.requestID, rec.metrics["durationMs"])
	for _, m := range [...][2]string{{"billedDurationMs", "\tBilled Duration: %.0f ms"}, {"memorySizeMB", "\tMemory Size: %.0f MB"},
		{"maxMemoryUsedMB", "\tMax Memory Used: %.0f MB"}, {"initDurationMs", "\tInit Duration: %.2f ms"}, {"restoreDurationMs", "\tRestore Duration: %.2f ms"}} {
		if v := rec.metrics[m[0]]; v > 0 {
			b = fmt.Appendf(b, m[1], v)
		}
	}
	if rec.status != "" && rec.status != "success" {
		b = fmt.Appendf(b, "\tStatus: %s", rec.status)
	}
	if rec.errorType != "" {
		b = fmt.Appendf(b, "\tError Type: %s", rec.errorType)
	}
	return string(b)
}

// waitRuntimeDone waits until platform.runtimeDone for requestID has been
// stored, until the time until, or until ctx ends. It reports whether the
// event came.
func (l *listener) waitRuntimeDone(ctx context.Context, requestID string, until time.Time) bool {
	timer := time.NewTimer(time.Until(until))
	defer timer.Stop()
	for {
		l.mu.Lock()
		seen := slices.Contains(l.done[:], requestID)
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

// parseTime reads a raw JSON string holding an RFC 3339 time. The form
// Lambda writes, "2024-11-25T10:15:30.123Z", takes a fast path.
func parseTime(raw jsontext.Value) (time.Time, bool) {
	if len(raw) == 26 && raw[5] == '-' && raw[8] == '-' && raw[11] == 'T' && raw[14] == ':' && raw[17] == ':' && raw[20] == '.' && raw[24] == 'Z' {
		n := func(i, width int) int {
			v := 0
			for _, c := range raw[i : i+width] {
				v = v*10 + int(c-'0')
				if c < '0' || c > '9' {
					return -100
				}
			}
			return v
		}
		y, mo, d, h, mi, sec, ms := n(1, 4), n(6, 2), n(9, 2), n(12, 2), n(15, 2), n(18, 2), n(21, 3)
		t := time.Date(y, time.Month(mo), d, h, mi, sec, ms*1e6, time.UTC)
		if min(y, mo-1, d-1, h, mi, sec, ms) >= 0 && mo <= 12 && (d <= 28 || t.Day() == d) && h < 24 && mi < 60 && sec < 60 {
			return t, true
		}
	}
	t, err := time.Parse(time.RFC3339Nano, string(content(raw)))
	return t, err == nil && raw.Kind() == '"'
}

// parseTextPrefix finds the request id and level in the tab-separated prefix
// of the managed runtimes: Node.js and others write
// "<time>\t<request id>\t<LEVEL>\t<message>", Python "[<LEVEL>]\t<time>\t<request id>\t<message>".
// tab is how line writes a tab: "\t", or `\t` in a line read escaped
// (readsEscaped).
func parseTextPrefix(line, tab []byte) (requestID []byte, level severity) {
	f1, rest, _ := bytes.Cut(line, tab)
	f2, rest, _ := bytes.Cut(rest, tab)
	f3, _, ok := bytes.Cut(rest, tab) // not ok if either cut before was not
	if !ok {
		return nil, 0
	}
	if len(f1) > 2 && f1[0] == '[' && f1[len(f1)-1] == ']' && isTimestamp(f2) {
		requestID, level = f3, levelOf(f1[1:len(f1)-1])
	} else if isTimestamp(f1) {
		requestID, level = f2, levelOf(f3)
	}
	if level == 0 || !isRequestID(requestID) {
		requestID = nil // e.g. "undefined" during Init
	}
	return requestID, level
}

// isTimestamp reports whether s looks like an RFC 3339 time.
func isTimestamp(s []byte) bool {
	return len(s) >= 20 && s[4] == '-' && s[7] == '-' && s[10] == 'T'
}

// isRequestID reports whether s has the form of a Lambda request id, a UUID.
func isRequestID[T string | []byte](s T) bool {
	if len(s) != 36 || s[8] != '-' || s[13] != '-' || s[18] != '-' || s[23] != '-' {
		return false
	}
	for i := range 36 {
		if c := s[i]; !('0' <= c && c <= '9' || 'a' <= c|0x20 && c|0x20 <= 'f' || 1<<i&(1<<8|1<<13|1<<18|1<<23) != 0) {
			return false
		}
	}
	return true
}

// traceID returns the Root of an X-Amzn-Trace-Id value
// ("Root=1-...;Parent=...;Sampled=0"), or "" if there is none.
func traceID(value string) string {
	for _, field := range strings.Split(value, ";") {
		if id, ok := strings.CutPrefix(strings.TrimSpace(field), "Root="); ok && len(id) <= 64 {
			return id
		}
	}
	return ""
}

// truncate cuts line to at most limit bytes, on a rune boundary, ending
// with a marker that says how much was cut.
func truncate(line string, limit int) string {
	const marker = "…[truncated %d bytes]"
	cut := max(0, limit-len(fmt.Sprintf(marker, len(line))))
	for cut > 0 && !utf8.RuneStart(line[cut]) {
		cut--
	}
	return line[:cut] + fmt.Sprintf(marker, len(line)-cut)
}

// typeFilter says which telemetry is shipped to Loki: by the names of
// LOKI_TYPES (function, extension, platform, platform.error, platform.<type>).
type typeFilter map[string]bool

// parseTypes reads LOKI_TYPES: a comma-separated list of function,
// extension, platform, platform.error or a platform event type.
func parseTypes(s string) (typeFilter, error) {
	f := typeFilter{}
	for _, t := range strings.Split(s, ",") {
		if t = strings.TrimSpace(t); t != "function" && t != "extension" && t != "platform" && (!strings.HasPrefix(t, "platform.") || t == "platform.") {
			return f, fmt.Errorf("unknown type %s; use function, extension, platform, platform.error or a platform event type such as platform.report", strconv.Quote(t))
		}
		f[t] = true
	}
	return f, nil
}
