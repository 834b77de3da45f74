// Command baseline is the reference point of the overhead benchmark: a
// Lambda telemetry extension written the way AWS's Go telemetry sample
// (aws-samples/aws-lambda-extensions, go-example-telemetry-api-extension)
// works, reimplemented here with the standard library only.
//
// Its approach, which the benchmark measures against:
//   - the listener decodes every telemetry batch with json.Unmarshal into
//     []interface{} (one map per event) and appends the events to a queue;
//   - on each INVOKE, and at SHUTDOWN, it re-marshals the queued events with
//     encoding/json and POSTs them, uncompressed, to LOKI_URL's push path.
//
// So the logs of invocation N leave at the start of invocation N+1, and the
// end of an invocation never waits on the sink.
package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
)

const (
	extensionAPI = "/2020-01-01/extension"
	telemetryAPI = "/2022-07-01/telemetry"
	pushPath     = "/loki/api/v1/push"
)

func main() {
	if err := run(); err != nil {
		log.Fatalf("baseline: %v", err)
	}
}

// run registers, starts the listener, subscribes, and serves lifecycle
// events until SHUTDOWN.
func run() error {
	api := "http://" + os.Getenv("AWS_LAMBDA_RUNTIME_API")
	sink := strings.TrimSuffix(os.Getenv("LOKI_URL"), "/") + pushPath
	id, err := register(api, filepath.Base(os.Args[0]))
	if err != nil {
		return fmt.Errorf("register: %w", err)
	}
	q := &queue{}
	port, err := listen(q)
	if err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	if err := subscribe(api, id, port); err != nil {
		return fmt.Errorf("subscribe: %w", err)
	}
	for {
		ev, err := next(api, id)
		if err != nil {
			return fmt.Errorf("next: %w", err)
		}
		// Dispatch what earlier invocations left in the queue.
		if err := dispatch(sink, q); err != nil {
			log.Printf("baseline: dispatch: %v", err)
		}
		if ev.EventType == "SHUTDOWN" {
			return nil
		}
	}
}

// queue holds decoded telemetry events until the next dispatch.
type queue struct {
	mu     sync.Mutex
	events []interface{}
}

func (q *queue) put(events []interface{}) {
	q.mu.Lock()
	q.events = append(q.events, events...)
	q.mu.Unlock()
}

func (q *queue) takeAll() []interface{} {
	q.mu.Lock()
	defer q.mu.Unlock()
	events := q.events
	q.events = nil
	return events
}

// listen serves the telemetry listener on LOKI_LISTENER_PORT (0: any free
// port) and returns the port.
func listen(q *queue) (int, error) {
	port := os.Getenv("LOKI_LISTENER_PORT")
	ln, err := net.Listen("tcp", ":"+port)
	if err != nil {
		return 0, err
	}
	handler := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(r.Body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		var events []interface{}
		if err := json.Unmarshal(body, &events); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		q.put(events)
	})
	go http.Serve(ln, handler)
	return ln.Addr().(*net.TCPAddr).Port, nil
}

// dispatch posts every queued event as one JSON array.
func dispatch(url string, q *queue) error {
	events := q.takeAll()
	if len(events) == 0 {
		return nil
	}
	body, err := json.Marshal(events)
	if err != nil {
		return err
	}
	resp, err := http.Post(url, "application/json", bytes.NewReader(body))
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	io.Copy(io.Discard, resp.Body)
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("sink answered %s", resp.Status)
	}
	return nil
}

// register registers for INVOKE and SHUTDOWN and returns the identifier.
func register(api, name string) (string, error) {
	req, err := http.NewRequest(http.MethodPost, api+extensionAPI+"/register",
		strings.NewReader(`{"events":["INVOKE","SHUTDOWN"]}`))
	if err != nil {
		return "", err
	}
	req.Header.Set("Lambda-Extension-Name", name)
	resp, err := call(req)
	if err != nil {
		return "", err
	}
	resp.Body.Close()
	id := resp.Header.Get("Lambda-Extension-Identifier")
	if id == "" {
		return "", errors.New("no Lambda-Extension-Identifier in the answer")
	}
	return id, nil
}

// subscribe subscribes the listener on port to platform and function
// telemetry.
func subscribe(api, id string, port int) error {
	body, err := json.Marshal(map[string]interface{}{
		"schemaVersion": "2022-12-13",
		"types":         []string{"platform", "function"},
		"buffering":     map[string]int{"maxItems": 1000, "maxBytes": 256 * 1024, "timeoutMs": 25},
		"destination": map[string]string{
			"protocol": "HTTP",
			"URI":      fmt.Sprintf("http://sandbox.localdomain:%d", port),
		},
	})
	if err != nil {
		return err
	}
	req, err := http.NewRequest(http.MethodPut, api+telemetryAPI, bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Lambda-Extension-Identifier", id)
	resp, err := call(req)
	if err != nil {
		return err
	}
	return resp.Body.Close()
}

// event is the part of a lifecycle event the baseline uses.
type event struct {
	EventType string `json:"eventType"`
}

// next blocks until the next lifecycle event.
func next(api, id string) (event, error) {
	var ev event
	req, err := http.NewRequest(http.MethodGet, api+extensionAPI+"/event/next", nil)
	if err != nil {
		return ev, err
	}
	req.Header.Set("Lambda-Extension-Identifier", id)
	resp, err := call(req)
	if err != nil {
		return ev, err
	}
	err = json.NewDecoder(resp.Body).Decode(&ev)
	resp.Body.Close()
	return ev, err
}

// call does req and fails on a non-200 answer. The default client has no
// timeout: /next blocks for as long as the environment waits for an event.
func call(req *http.Request) (*http.Response, error) {
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		msg, _ := io.ReadAll(io.LimitReader(resp.Body, 1024))
		resp.Body.Close()
		return nil, fmt.Errorf("%s: %s", resp.Status, msg)
	}
	return resp, nil
}
