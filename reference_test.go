package main

import (
	"encoding/json"
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// This file is a reference for the listener, written plainly from the
// README's rules over encoding/json: each event is decoded into generic
// values (json.RawMessage where a record is kept as written), then turned
// into entries. It shares no decoding code with listener.go; it uses only
// truncate (TestTruncate checks it) and the entry's types.

// refConfig is what the reference needs of the listener's configuration.
type refConfig struct {
	types     typeFilter
	maxLine   int
	infer     bool   // request ids from the spans (not on Managed Instances)
	ownPrefix string // our own output's prefix
	offset    int64  // this environment's offset, added to millisecond times
	received  time.Time
	minLevel  string // LOKI_MIN_LEVEL, "" for none
}

// refResult is what the listener makes of a delivery: its entries, as the
// tests compare them, and what it counted.
type refResult struct {
	Status          int
	Entries         []got
	Truncated       int64 // lines cut to the line limit
	DroppedByLambda int64 // records platform.logsDropped reported
	Filtered        int64 // lines below LOKI_MIN_LEVEL
}

// refSpan is an invocation, from platform.start to platform.runtimeDone.
type refSpan struct {
	requestID, traceID, tenantID string
	start, done                  time.Time
}

// refState is what the reference remembers across events.
type refState struct {
	c     refConfig
	spans []refSpan // newest last; at most 8 are remembered
	out   refResult
}

var refUUID = regexp.MustCompile(`^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$`)

// refLevels are the README's level words, lower case.
var refLevels = map[string]string{"trace": "trace", "debug": "debug", "info": "info", "warn": "warn", "warning": "warn",
	"error": "error", "err": "error", "fatal": "fatal", "critical": "critical", "crit": "critical"}

func refLevel(v any) string {
	s, _ := v.(string)
	if len(s) > 8 { // none is longer; ToLower may grow a string
		return ""
	}
	return refLevels[strings.ToLower(s)]
}

// refMember is one member of a JSON object, in order.
type refMember struct {
	name  string
	value json.RawMessage
}

// refMembers returns the members of the JSON object raw, in order, as far
// as they can be read, and whether all of it could; nil for other values.
func refMembers(raw []byte) ([]refMember, bool) {
	d := json.NewDecoder(strings.NewReader(string(raw)))
	if t, err := d.Token(); err != nil || t != json.Delim('{') {
		return nil, err == nil
	}
	var ms []refMember
	for d.More() {
		name, err := d.Token()
		if err != nil {
			return ms, false
		}
		var v json.RawMessage
		if err := d.Decode(&v); err != nil {
			return ms, false
		}
		ms = append(ms, refMember{name.(string), v})
	}
	_, err := d.Token()
	return ms, err == nil
}

// refValue decodes a JSON value into a generic value (numbers as
// json.Number); nil if it is not one.
func refValue(raw []byte) any {
	d := json.NewDecoder(strings.NewReader(string(raw)))
	d.UseNumber()
	var v any
	if d.Decode(&v) != nil {
		return nil
	}
	return v
}

func refString(raw []byte) string {
	s, _ := refValue(raw).(string)
	return s
}

func refNumber(raw []byte) float64 {
	n, _ := refValue(raw).(json.Number)
	f, _ := strconv.ParseFloat(string(n), 64)
	return f
}

// refTime reads an RFC 3339 time from a JSON string.
func refTime(raw []byte) (time.Time, bool) {
	s, ok := refValue(raw).(string)
	t, err := time.Parse(time.RFC3339Nano, s)
	return t, ok && err == nil
}

// reference decodes body as the README says the listener does.
func reference(body string, c refConfig) refResult {
	st := &refState{c: c, out: refResult{Status: 400}}
	if !strings.HasPrefix(strings.TrimLeft(body, " \t\r\n"), "[") {
		return st.out // not a JSON array
	}
	st.out.Status = 200
	d := json.NewDecoder(strings.NewReader(body))
	d.Token() // [
	for i := 0; d.More(); i++ {
		at := d.InputOffset()
		var element json.RawMessage
		if err := d.Decode(&element); err != nil {
			// Unreadable: the rest of the body is one text line, of the
			// time and type read before the failure; none if it came
			// before the element (no comma, or more than one).
			rest := strings.TrimLeft(body[at:], ", \t\r\n")
			var ms []refMember
			if commas := strings.Count(body[at:len(body)-len(rest)], ","); commas == min(i, 1) {
				ms, _ = refMembers([]byte(rest))
			}
			st.event(ms, []byte(rest), true)
			break
		}
		ms, _ := refMembers(element)
		st.event(ms, nil, false)
	}
	return st.out
}

// event converts one element: its members, or if it is unreadable, the
// members read before the failure and the rest of the body.
func (st *refState) event(ms []refMember, rest []byte, unreadable bool) {
	var rawTime, rawType, record []byte
	for _, m := range ms {
		switch m.name {
		case "time":
			rawTime = m.value
		case "type":
			rawType = m.value
		case "record":
			record = m.value
		}
	}
	if unreadable {
		record = rest
	}
	at, ok := refTime(rawTime)
	if !ok {
		at = st.c.received
	}
	typ := refString(rawType)
	var e got
	var m meta
	line, ts := "", at
	switch typ {
	case "":
		return
	case "function", "extension":
		if !st.c.types[typ] {
			return
		}
		e.Src = typ
		switch v := refValue(record); {
		case unreadable:
			line = string(record)
		case v == nil && len(record) == 0: // no record
		case isString(v):
			text := strings.TrimSuffix(v.(string), "\n")
			if typ == "extension" && strings.HasPrefix(text, st.c.ownPrefix) {
				return
			}
			line = text
			if strings.HasPrefix(text, "{") && isObject(text) {
				ts, m = refRecord([]byte(text), at)
				break
			}
			m.requestID, m.level = refTextPrefix(text)
		case isObject(string(record)):
			line = string(record)
			ts, m = refRecord(record, at)
		default:
			line = string(record)
		}
		// LOKI_MIN_LEVEL: a known level below it drops the line.
		if order := "trace debug info warn error fatal critical"; m.level != "" && st.c.minLevel != "" &&
			strings.Index(order, m.level) < strings.Index(order, st.c.minLevel) {
			st.out.Filtered++
			return
		}
		// A line without a request id of its own takes its invocation's.
		if sp := st.span(m.requestID, at); sp != nil && (m.requestID != "" || st.c.infer) {
			m.requestID, m.traceID = sp.requestID, sp.traceID
			if m.tenantID == "" {
				m.tenantID = sp.tenantID
			}
		}
	default:
		if len(typ) > 256 {
			return
		}
		var requestID, status, errorType, tenantID, traceValue string
		var dropped float64
		metrics := map[string]float64{}
		if !unreadable {
			rms, _ := refMembers(record)
			for _, rm := range rms {
				switch rm.name {
				case "requestId":
					requestID = refString(rm.value)
				case "status":
					status = refString(rm.value)
				case "errorType":
					errorType = refString(rm.value)
				case "tenantId":
					tenantID = refString(rm.value)
				case "droppedRecords":
					dropped = refNumber(rm.value)
				case "tracing":
					tms, _ := refMembers(rm.value)
					for _, tm := range tms {
						if tm.name == "value" {
							traceValue = refString(tm.value)
						}
					}
				case "metrics":
					metrics = map[string]float64{}
					mms, _ := refMembers(rm.value)
					for _, mm := range mms {
						metrics[mm.name] = refNumber(mm.value)
					}
				}
			}
		}
		if len(tenantID) > 256 {
			tenantID = ""
		}
		trace := refTraceID(traceValue)
		switch typ {
		case "platform.start":
			if requestID != "" {
				for i := range st.spans {
					if st.spans[i].done.IsZero() && st.c.infer {
						st.spans[i].done = at
					}
				}
				st.spans = append(st.spans, refSpan{requestID, trace, tenantID, at, time.Time{}})
				if len(st.spans) > recentSpans {
					st.spans = st.spans[1:]
				}
			}
		case "platform.runtimeDone":
			if sp := st.span(requestID, time.Time{}); sp != nil && sp.done.IsZero() {
				sp.done = at
			}
		case "platform.logsDropped":
			if d := int64(dropped); d > 0 {
				st.out.DroppedByLambda += d
			}
		}
		failed := status != "" && status != "success" || typ == "platform.logsDropped"
		if !st.c.types["platform"] && !st.c.types[typ] && !(failed && st.c.types["platform.error"]) {
			return
		}
		e.Src = "platform"
		m = meta{requestID: requestID, tenantID: tenantID, eventType: typ, traceID: trace}
		if failed {
			m.level = "error"
		}
		if trace == "" && requestID != "" {
			if sp := st.span(requestID, at); sp != nil {
				m.traceID = sp.traceID
			}
		}
		line = typ + " " + string(record)
		if typ == "platform.report" {
			line = fmt.Sprintf("REPORT RequestId: %s\tDuration: %.2f ms", requestID, metrics["durationMs"])
			for _, f := range [...][2]string{{"billedDurationMs", "\tBilled Duration: %.0f ms"}, {"memorySizeMB", "\tMemory Size: %.0f MB"},
				{"maxMemoryUsedMB", "\tMax Memory Used: %.0f MB"}, {"initDurationMs", "\tInit Duration: %.2f ms"}, {"restoreDurationMs", "\tRestore Duration: %.2f ms"}} {
				if metrics[f[0]] > 0 {
					line += fmt.Sprintf(f[1], metrics[f[0]])
				}
			}
			if failed {
				line += "\tStatus: " + status
			}
			if errorType != "" {
				line += "\tError Type: " + errorType
			}
		}
	}
	if len(line) > st.c.maxLine { // a line kept as written: its bytes
		line = truncate(line, st.c.maxLine)
		st.out.Truncated++
	}
	line = jsonRoundTrip(line) // invalid UTF-8 reaches Loki as U+FFFD
	ns := ts.UnixNano()
	if ns%int64(time.Millisecond) == 0 {
		ns += st.c.offset
	}
	e.TS, e.Line, e.Meta = time.Unix(0, ns).UTC().Format(time.RFC3339Nano), line, m
	st.out.Entries = append(st.out.Entries, e)
}

func isString(v any) bool { _, ok := v.(string); return ok }

// isObject reports whether s is one JSON object and nothing more.
func isObject(s string) bool {
	_, ok := refValue([]byte(s)).(map[string]any)
	return ok && json.Valid([]byte(s))
}

// refRecord reads a JSON log record: its time (its own timestamp, within
// an hour before and a second after the event's time at), and the first
// level and request id it names, and its tenant.
func refRecord(raw []byte, at time.Time) (time.Time, meta) {
	var m meta
	var own time.Time
	ms, _ := refMembers(raw)
	for _, rm := range ms {
		switch rm.name {
		case "timestamp":
			own, _ = refTime(rm.value)
		case "level":
			if m.level == "" {
				m.level = refLevel(refValue(rm.value))
			}
		case "requestId", "AWSRequestId", "function_request_id":
			if id := refString(rm.value); m.requestID == "" && refUUID.MatchString(id) {
				m.requestID = id
			}
		case "tenantId":
			if id := refString(rm.value); len(id) <= 256 {
				m.tenantID = id
			}
		}
	}
	if own.After(at.Add(-time.Hour)) && own.Before(at.Add(time.Second)) {
		return own, m
	}
	return at, m
}

// refTextPrefix reads the managed runtimes' prefix: "<time>\t<request
// id>\t<LEVEL>\t…" or "[<LEVEL>]\t<time>\t<request id>\t…". A request id
// counts only with a level.
func refTextPrefix(text string) (requestID, level string) {
	f := strings.SplitN(text, "\t", 4)
	if len(f) < 4 {
		return "", ""
	}
	looksLikeTime := func(s string) bool { return len(s) >= 20 && s[4] == '-' && s[7] == '-' && s[10] == 'T' }
	switch {
	case len(f[0]) > 2 && f[0][0] == '[' && f[0][len(f[0])-1] == ']' && looksLikeTime(f[1]):
		requestID, level = f[2], refLevel(f[0][1:len(f[0])-1])
	case looksLikeTime(f[0]):
		requestID, level = f[1], refLevel(f[2])
	}
	if level == "" || !refUUID.MatchString(requestID) {
		requestID = ""
	}
	return requestID, level
}

// refTraceID is the Root of an X-Amzn-Trace-Id value.
func refTraceID(value string) string {
	for _, field := range strings.Split(value, ";") {
		if id, ok := strings.CutPrefix(strings.TrimSpace(field), "Root="); ok && len(id) <= 64 {
			return id
		}
	}
	return ""
}

// span returns the newest remembered invocation requestID, or if that is
// "", the newest whose span holds the time at.
func (st *refState) span(requestID string, at time.Time) *refSpan {
	for i := len(st.spans) - 1; i >= 0; i-- {
		sp := &st.spans[i]
		if requestID != "" && sp.requestID == requestID ||
			requestID == "" && !at.Before(sp.start) && (sp.done.IsZero() || at.Before(sp.done)) {
			return sp
		}
	}
	return nil
}
