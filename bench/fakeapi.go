package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"sync"
	"time"
)

// Paths of the Extensions and Telemetry APIs (PROTOCOLS.md A and B).
const (
	registerPath  = "/2020-01-01/extension/register"
	nextPath      = "/2020-01-01/extension/event/next"
	initErrorPath = "/2020-01-01/extension/init/error"
	exitErrorPath = "/2020-01-01/extension/exit/error"
	subscribePath = "/2022-07-01/telemetry"

	extensionName = "loki-extension"
)

// fakeAPI stands in for Lambda's Extensions and Telemetry APIs for one
// extension process. The extension's handler side runs in HTTP handlers;
// the benchmark drives it with awaitNext and send.
type fakeAPI struct {
	id     string
	addr   string // host:port, the value of AWS_LAMBDA_RUNTIME_API
	server *http.Server
	onNext func() // called when a /next arrives (samples the child's RSS)

	subscribed chan string    // the listener URL, on 127.0.0.1
	nexts      chan time.Time // arrival time of each /next
	events     chan []byte    // the answer to the pending /next

	mu       sync.Mutex // guards the fields below
	shutdown bool       // SHUTDOWN was sent
	problems []string   // contract violations and reported errors
}

// startFakeAPI serves a fake API on a free loopback port.
func startFakeAPI(onNext func()) (*fakeAPI, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("fake API: %w", err)
	}
	f := &fakeAPI{
		id:         newUUID(),
		addr:       ln.Addr().String(),
		onNext:     onNext,
		subscribed: make(chan string, 1),
		nexts:      make(chan time.Time, 16),
		events:     make(chan []byte),
	}
	f.server = &http.Server{Handler: f, ReadHeaderTimeout: 5 * time.Second}
	go f.server.Serve(ln)
	return f, nil
}

// close stops the server and ends pending /next calls.
func (f *fakeAPI) close() { f.server.Close() }

// ServeHTTP routes the API calls.
func (f *fakeAPI) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	route := r.Method + " " + r.URL.Path
	if route != "POST "+registerPath && r.Header.Get("Lambda-Extension-Identifier") != f.id {
		f.problem("%s without the identifier from register", route)
		apiError(w, http.StatusForbidden, "Extension.UnknownExtensionIdentifier")
		return
	}
	switch route {
	case "POST " + registerPath:
		f.register(w, r)
	case "PUT " + subscribePath:
		f.subscribe(w, r)
	case "GET " + nextPath:
		f.next(w, r)
	case "POST " + initErrorPath, "POST " + exitErrorPath:
		body, _ := io.ReadAll(io.LimitReader(r.Body, 4096))
		f.problem("extension reported %s %s: %s", r.URL.Path, r.Header.Get("Lambda-Extension-Function-Error-Type"), body)
		w.WriteHeader(http.StatusAccepted)
	default:
		f.problem("unexpected call %s", route)
		http.NotFound(w, r)
	}
}

// register checks the extension's name and answers with the identifier.
func (f *fakeAPI) register(w http.ResponseWriter, r *http.Request) {
	if name := r.Header.Get("Lambda-Extension-Name"); name != extensionName {
		f.problem("register with name %q, want %q", name, extensionName)
		apiError(w, http.StatusForbidden, "Extension.InvalidExtensionName")
		return
	}
	w.Header().Set("Lambda-Extension-Identifier", f.id)
	w.Header().Set("Content-Type", "application/json")
	io.WriteString(w, `{"functionName":"bench-fn","functionVersion":"$LATEST","handler":"h"}`)
}

// subscribe reads the destination URI and points it at 127.0.0.1, as
// sandbox.localdomain is in a Lambda environment.
func (f *fakeAPI) subscribe(w http.ResponseWriter, r *http.Request) {
	var req struct {
		Destination struct{ URI string }
	}
	if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
		f.problem("subscribe body: %v", err)
		apiError(w, http.StatusBadRequest, "InvalidRequestFormat")
		return
	}
	u, err := url.Parse(req.Destination.URI)
	if err != nil || u.Port() == "" {
		f.problem("subscribe: destination URI %q has no port", req.Destination.URI)
		apiError(w, http.StatusBadRequest, "InvalidRequestFormat")
		return
	}
	u.Host = "127.0.0.1:" + u.Port()
	select {
	case f.subscribed <- u.String():
	default:
		f.problem("subscribed twice")
	}
	io.WriteString(w, `"OK"`)
}

// next records the call and blocks until the benchmark sends an event.
func (f *fakeAPI) next(w http.ResponseWriter, r *http.Request) {
	at := time.Now()
	if f.onNext != nil {
		f.onNext()
	}
	f.mu.Lock()
	afterShutdown := f.shutdown
	f.mu.Unlock()
	if afterShutdown {
		f.problem("/next called after SHUTDOWN")
		return
	}
	select {
	case f.nexts <- at:
	default:
		f.problem("too many /next calls without an event")
		return
	}
	select {
	case ev := <-f.events:
		w.Header().Set("Content-Type", "application/json")
		w.Write(ev)
	case <-r.Context().Done():
	}
}

// awaitNext waits until the extension calls /next and returns when it
// arrived. It fails when the process exits or timeout passes first.
func (f *fakeAPI) awaitNext(ctx context.Context, exited <-chan struct{}, timeout time.Duration) (time.Time, error) {
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case at := <-f.nexts:
		return at, nil
	case <-exited:
		return time.Time{}, errors.New("the extension exited instead of calling /next")
	case <-t.C:
		return time.Time{}, fmt.Errorf("no /next within %v", timeout)
	case <-ctx.Done():
		return time.Time{}, ctx.Err()
	}
}

// sendShutdown answers the pending /next with SHUTDOWN; a later /next is
// a contract violation.
func (f *fakeAPI) sendShutdown(ctx context.Context) error {
	f.mu.Lock()
	f.shutdown = true
	f.mu.Unlock()
	return f.send(ctx, shutdownEvent())
}

// send answers the pending /next with ev.
func (f *fakeAPI) send(ctx context.Context, ev []byte) error {
	t := time.NewTimer(5 * time.Second)
	defer t.Stop()
	select {
	case f.events <- ev:
		return nil
	case <-t.C:
		return errors.New("the pending /next went away")
	case <-ctx.Done():
		return ctx.Err()
	}
}

// listenerURL returns the subscribed listener URL, or "" if the extension
// has not subscribed.
func (f *fakeAPI) listenerURL() string {
	select {
	case u := <-f.subscribed:
		f.subscribed <- u
		return u
	default:
		return ""
	}
}

// problem records a contract violation or an error the extension reported.
func (f *fakeAPI) problem(format string, args ...any) {
	f.mu.Lock()
	f.problems = append(f.problems, fmt.Sprintf(format, args...))
	f.mu.Unlock()
}

// reported returns the problems recorded so far.
func (f *fakeAPI) reported() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.problems...)
}

// invokeEvent is the INVOKE event of requestID.
func invokeEvent(requestID string) []byte {
	return fmt.Appendf(nil, `{"eventType":"INVOKE","deadlineMs":%d,"requestId":%q,"invokedFunctionArn":"arn:aws:lambda:eu-west-1:111122223333:function:bench-fn"}`,
		time.Now().Add(30*time.Second).UnixMilli(), requestID)
}

// shutdownEvent is a SHUTDOWN event with Lambda's 2 s budget.
func shutdownEvent() []byte {
	return fmt.Appendf(nil, `{"eventType":"SHUTDOWN","shutdownReason":"spindown","deadlineMs":%d}`,
		time.Now().Add(2*time.Second).UnixMilli())
}

// apiError writes an error in the Extensions API's shape.
func apiError(w http.ResponseWriter, status int, errorType string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	fmt.Fprintf(w, `{"errorType":%q,"errorMessage":"rejected by the benchmark's fake API"}`, errorType)
}
