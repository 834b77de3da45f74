package main

import (
	"bytes"
	"cmp"
	"compress/gzip"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp/cmpopts"
)

// anyOrder compares lines as sets: lines that share a timestamp, or come
// in requests that were in flight at once, reach Loki in any order.
var anyOrder = cmpopts.SortSlices(func(a, b string) bool { return a < b })

// waitLimit bounds every wait in the tests.
const waitLimit = 10 * time.Second

const debugLoki = false

// replyLost is a fakeLoki reply: store the push, then drop the connection.
const replyLost = -1

// fakeLambda is an in-process Extensions API and Telemetry API. /next
// answers with the events the test sends on events; each call to /next is
// announced on nextCalls first.
type fakeLambda struct {
	t         *testing.T
	srv       *httptest.Server
	events    chan lifecycleEvent
	nextCalls chan struct{}

	mu             sync.Mutex // guards the fields below
	registerStatus int        // 0: 200
	subscribeCodes []int      // statuses of successive subscribe calls (0: no answer); then 200
	registered     [][]string
	subscriptions  []subscribeRequest
	errorTypes     []string // Lambda-Extension-Function-Error-Type of init/exit errors
	errorPaths     []string
}

func newFakeLambda(t *testing.T) *fakeLambda {
	f := &fakeLambda{t: t, events: make(chan lifecycleEvent), nextCalls: make(chan struct{}, 100)}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /2020-01-01/extension/register", f.register)
	mux.HandleFunc("GET /2020-01-01/extension/event/next", f.next)
	mux.HandleFunc("POST /2020-01-01/extension/init/error", f.reportedError)
	mux.HandleFunc("POST /2020-01-01/extension/exit/error", f.reportedError)
	mux.HandleFunc("PUT /2022-07-01/telemetry", f.subscribe)
	f.srv = httptest.NewServer(mux)
	t.Cleanup(f.srv.Close)
	return f
}

func (f *fakeLambda) register(w http.ResponseWriter, r *http.Request) {
	var body struct{ Events []string }
	json.NewDecoder(r.Body).Decode(&body)
	f.mu.Lock()
	f.registered = append(f.registered, body.Events)
	status := f.registerStatus
	f.mu.Unlock()
	if r.Header.Get(headerExtensionName) != "loki-extension" {
		status = http.StatusForbidden
	}
	if status != 0 {
		http.Error(w, `{"errorType":"Extension.Forbidden","errorMessage":"no"}`, status)
		return
	}
	w.Header().Set(headerExtensionIdentifier, "3f7a4a8e-0000-4000-8000-000000000001")
	fmt.Fprint(w, `{"functionName":"orders-api","functionVersion":"$LATEST","handler":"index.handler"}`)
}

func (f *fakeLambda) next(w http.ResponseWriter, r *http.Request) {
	if r.Header.Get(headerExtensionIdentifier) == "" {
		http.Error(w, "no id", http.StatusForbidden)
		return
	}
	f.nextCalls <- struct{}{}
	select {
	case ev := <-f.events:
		wire := map[string]any{"eventType": ev.EventType, "deadlineMs": ev.DeadlineMs}
		if ev.EventType == "INVOKE" {
			wire["requestId"] = ev.RequestID
			wire["invokedFunctionArn"] = "arn:aws:lambda:eu-west-1:111122223333:function:orders-api"
			wire["tracing"] = map[string]string{"type": "X-Amzn-Trace-Id", "value": "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1"}
		} else {
			wire["shutdownReason"] = ev.ShutdownReason
		}
		json.NewEncoder(w).Encode(wire)
	case <-r.Context().Done():
	}
}

func (f *fakeLambda) reportedError(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	f.errorTypes = append(f.errorTypes, r.Header.Get(headerExtensionErrorType))
	f.errorPaths = append(f.errorPaths, r.URL.Path)
	f.mu.Unlock()
	w.WriteHeader(http.StatusAccepted)
}

func (f *fakeLambda) subscribe(w http.ResponseWriter, r *http.Request) {
	var sr subscribeRequest
	if err := json.NewDecoder(r.Body).Decode(&sr); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	f.mu.Lock()
	f.subscriptions = append(f.subscriptions, sr)
	status := http.StatusOK
	if len(f.subscribeCodes) > 0 {
		status, f.subscribeCodes = f.subscribeCodes[0], f.subscribeCodes[1:]
	}
	f.mu.Unlock()
	if status == 0 {
		conn, _, _ := http.NewResponseController(w).Hijack()
		conn.Close()
		return
	}
	if status == http.StatusAccepted {
		w.WriteHeader(status)
		fmt.Fprint(w, `{"errorType":"Telemetry.NotSupported","errorMessage":"not here"}`)
		return
	}
	w.WriteHeader(status)
	fmt.Fprint(w, `"OK"`)
}

// awaitNext waits until the extension calls /next.
func (f *fakeLambda) awaitNext() {
	f.t.Helper()
	select {
	case <-f.nextCalls:
	case <-time.After(waitLimit):
		f.t.Fatal("the extension did not call /next")
	}
}

// send answers the pending /next with ev.
func (f *fakeLambda) send(ev lifecycleEvent) {
	f.t.Helper()
	select {
	case f.events <- ev:
	case <-time.After(waitLimit):
		f.t.Fatal("the extension is not waiting in /next")
	}
}

// invoke starts an invocation: an INVOKE event with a deadline in 5 s.
func (f *fakeLambda) invoke(requestID string) {
	f.send(lifecycleEvent{EventType: "INVOKE", RequestID: requestID,
		DeadlineMs: time.Now().Add(5 * time.Second).UnixMilli()})
}

// shutdown sends SHUTDOWN with a deadline in 2 s, as Lambda does.
func (f *fakeLambda) shutdown() {
	f.send(lifecycleEvent{EventType: "SHUTDOWN", ShutdownReason: "spindown",
		DeadlineMs: time.Now().Add(2 * time.Second).UnixMilli()})
}

// listenerURL is where the subscription asked for telemetry; like Lambda,
// it sends to 127.0.0.1 at the subscribed port.
func (f *fakeLambda) listenerURL() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.subscriptions) == 0 {
		f.t.Fatal("no subscription")
	}
	u, err := url.Parse(f.subscriptions[len(f.subscriptions)-1].Destination.URI)
	if err != nil {
		f.t.Fatal(err)
	}
	return "http://127.0.0.1:" + u.Port() + "/"
}

// deliver posts one telemetry batch and requires a 200.
func (f *fakeLambda) deliver(events ...any) {
	f.t.Helper()
	body, err := json.Marshal(events)
	if err != nil {
		f.t.Fatal(err)
	}
	resp, err := http.Post(f.listenerURL(), "application/json", bytes.NewReader(body))
	if err != nil {
		f.t.Fatalf("deliver telemetry: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		f.t.Fatalf("deliver telemetry: status %d", resp.StatusCode)
	}
}

// tev is a telemetry event as Lambda sends it.
func tev(typ string, record any) map[string]any {
	return map[string]any{"time": time.Now().UTC().Format("2006-01-02T15:04:05.000Z"), "type": typ, "record": record}
}

// lokiEntry is one entry as the fake Loki stored it.
type lokiEntry struct {
	Source string
	TS     int64
	Line   string
	Meta   map[string]string
}

// fakeLoki is an in-process Loki push endpoint. reply decides the status of
// each request (numbered from 1): entries are stored only on 2xx; 0 means
// reply answered itself and nothing is stored; replyLost stores the entries
// and then drops the connection without an answer. An entry identical in
// stream, timestamp and line to a stored one is dropped, as Loki does.
type fakeLoki struct {
	t     *testing.T
	srv   *httptest.Server
	reply func(n int, w http.ResponseWriter) int

	mu       sync.Mutex // guards the fields below
	resets   int        // connections to reset before reading the body
	requests int
	entries  []lokiEntry
	labels   []map[string]string
	headers  []http.Header
	stored   map[string]bool
	dups     int    // identical entries received again after being stored
	auth     string // if set, the Authorization header a push needs; else 401
	refused  int    // pushes answered 401
	active   int    // requests received and not yet answered
	busiest  int    // the most requests unanswered at once
}

func newFakeLoki(t *testing.T) *fakeLoki {
	l := &fakeLoki{t: t, stored: map[string]bool{}}
	l.srv = httptest.NewServer(http.HandlerFunc(l.push))
	t.Cleanup(l.srv.Close)
	return l
}

func (l *fakeLoki) push(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path != pushPath {
		http.Error(w, "404 page not found", http.StatusNotFound)
		return
	}
	l.mu.Lock()
	reset := l.resets > 0
	l.resets--
	l.mu.Unlock()
	if reset { // a reset in the middle of the body: nothing read, nothing stored
		conn, _, err := http.NewResponseController(w).Hijack()
		if err == nil {
			conn.(*net.TCPConn).SetLinger(0)
			conn.Close()
		}
		return
	}
	l.mu.Lock()
	refuse := l.auth != "" && r.Header.Get("Authorization") != l.auth
	if refuse {
		l.refused++
	}
	l.mu.Unlock()
	if refuse {
		http.Error(w, "invalid authentication credentials", http.StatusUnauthorized)
		return
	}
	req, err := decodePush(r)
	if err != nil {

		l.t.Errorf("fake loki: bad push: %v", err)
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	l.mu.Lock()
	l.requests++
	n := l.requests
	l.headers = append(l.headers, r.Header.Clone())
	l.active++
	l.busiest = max(l.busiest, l.active)
	l.mu.Unlock()
	status := http.StatusNoContent
	if l.reply != nil {
		status = l.reply(n, w)
	}
	l.mu.Lock()
	l.active--
	l.mu.Unlock()
	if debugLoki {
		cnt := 0
		for _, st := range req.Streams {
			cnt += len(st.Values)
		}
		fmt.Printf("loki req %d: %d entries -> %d (ctx err %v)\n", n, cnt, status, r.Context().Err())
	}
	switch {
	case status == 0:
	case status == replyLost:
		l.store(req)
		panic(http.ErrAbortHandler) // the connection closes with no answer
	case status/100 == 2:
		l.store(req)
		w.WriteHeader(status)
	default:
		w.WriteHeader(status)
	}
}

func (l *fakeLoki) store(req pushRequest) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, s := range req.Streams {
		l.labels = append(l.labels, s.Stream)
		for _, v := range s.Values {
			e := lokiEntry{Source: s.Stream["source"], TS: v.TS, Line: v.Line, Meta: v.Meta}
			key := fmt.Sprint(s.Stream, e.TS, e.Line)
			if l.stored[key] {
				l.dups++
				continue
			}
			l.stored[key] = true
			l.entries = append(l.entries, e)
		}
	}
}

// lines returns the stored lines of source src in the order of their
// timestamps, as a Loki query returns them.
func (l *fakeLoki) lines(src string) []string {
	var lines []string
	for _, e := range l.entriesOf(src) {
		lines = append(lines, e.Line)
	}
	return lines
}

// entriesOf returns a copy of the stored entries of source src, in the
// order of their timestamps.
func (l *fakeLoki) entriesOf(src string) []lokiEntry {
	l.mu.Lock()
	defer l.mu.Unlock()
	var es []lokiEntry
	for _, e := range l.entries {
		if e.Source == src {
			es = append(es, e)
		}
	}
	slices.SortStableFunc(es, func(a, b lokiEntry) int { return cmp.Compare(a.TS, b.TS) })
	return es
}

// pushRequest is a decoded Loki push body.
type pushRequest struct {
	Streams []struct {
		Stream map[string]string `json:"stream"`
		Values []pushValue       `json:"values"`
	} `json:"streams"`
}

// pushValue is one ["<ns>","<line>",{metadata}] value.
type pushValue struct {
	TS   int64
	Line string
	Meta map[string]string
}

func (v *pushValue) UnmarshalJSON(b []byte) error {
	var raw []json.RawMessage
	if err := json.Unmarshal(b, &raw); err != nil {
		return err
	}
	if len(raw) < 2 || len(raw) > 3 {
		return fmt.Errorf("value has %d elements", len(raw))
	}
	var ts string
	if err := json.Unmarshal(raw[0], &ts); err != nil {
		return fmt.Errorf("timestamp must be a string: %w", err)
	}
	if _, err := fmt.Sscan(ts, &v.TS); err != nil {
		return fmt.Errorf("timestamp %q: %w", ts, err)
	}
	if err := json.Unmarshal(raw[1], &v.Line); err != nil {
		return err
	}
	if len(raw) == 3 {
		return json.Unmarshal(raw[2], &v.Meta)
	}
	return nil
}

// decodePush checks the headers Loki needs and decodes the body.
func decodePush(r *http.Request) (pushRequest, error) {
	var req pushRequest
	if ct := r.Header.Get("Content-Type"); ct != "application/json" {
		return req, fmt.Errorf("Content-Type %q", ct)
	}
	var body io.Reader = r.Body
	if r.Header.Get("Content-Encoding") == "gzip" {
		zr, err := gzip.NewReader(r.Body)
		if err != nil {
			return req, err
		}
		body = zr
	}
	dec := json.NewDecoder(body)
	dec.DisallowUnknownFields()
	err := dec.Decode(&req)
	return req, err
}

// syncBuffer is a bytes.Buffer safe for the extension's logger.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// running is an extension started by startExtension.
type running struct {
	done chan error
	out  *syncBuffer
}

// startExtension runs the extension's main loop against f with env (on top
// of a base environment pointing it at f and a free listener port).
func startExtension(t *testing.T, f *fakeLambda, env map[string]string) *running {
	t.Helper()
	base := map[string]string{
		"AWS_LAMBDA_RUNTIME_API":   strings.TrimPrefix(f.srv.URL, "http://"),
		"AWS_LAMBDA_FUNCTION_NAME": "orders-api",
		"LOKI_LISTENER_PORT":       "0",
	}
	for k, v := range env {
		base[k] = v
	}
	r := &running{done: make(chan error, 1), out: &syncBuffer{}}
	ctx, cancel := context.WithCancel(context.Background())
	getenv := func(k string) string { return base[k] }
	cfg, cfgErr := loadConfig(getenv)
	go func() {
		r.done <- run(ctx, cfg, cfgErr, getenv, "loki-extension", log.New(r.out, "loki-extension: ", 0))
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case <-r.done:
		case <-time.After(waitLimit):
			t.Error("the extension did not stop")
		}
	})
	return r
}

// wait returns the extension's result.
func (r *running) wait(t *testing.T) error {
	t.Helper()
	select {
	case err := <-r.done:
		r.done <- err // for Cleanup
		return err
	case <-time.After(waitLimit):
		t.Fatal("the extension did not exit")
		return nil
	}
}

// freePort returns a loopback address where nothing listens right now.
func freePort(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}
