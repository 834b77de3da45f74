package main

import (
	"bytes"
	"context"
	"encoding/json/jsontext"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"
)

const (
	extensionAPIVersion = "2020-01-01"
	nextPath            = "/extension/event/next"

	headerExtensionName       = "Lambda-Extension-Name"
	headerExtensionIdentifier = "Lambda-Extension-Identifier"
	headerExtensionErrorType  = "Lambda-Extension-Function-Error-Type"

	// apiCallTimeout bounds every Extensions and Telemetry API call except
	// /next, which long-polls while the environment may be frozen.
	apiCallTimeout = 5 * time.Second
	// maxErrorBody is how much of an error response body goes into an error.
	maxErrorBody = 1024
)

// extensionClient talks to the Lambda Extensions API (and, in subscribe.go,
// to the Telemetry API, which lives on the same host).
type extensionClient struct {
	baseURL string // http://$AWS_LAMBDA_RUNTIME_API
	name    string // must equal the executable's file name in /opt/extensions
	id      string // Lambda-Extension-Identifier, set by register
	// http has no Timeout: /next blocks until the next event, possibly
	// across a freeze of many minutes. Other calls set a context deadline.
	http *http.Client
}

// registerResponse is the body of a successful register call.
type registerResponse struct {
	FunctionName string
}

// lifecycleEvent is an INVOKE or SHUTDOWN event returned by /next.
type lifecycleEvent struct {
	EventType, RequestID, ShutdownReason string
	DeadlineMs                           int64
}

// apiError is a non-success answer of a Lambda API.
type apiError struct {
	status int
	body   string
}

func (e *apiError) Error() string { return fmt.Sprintf("status %d: %s", e.status, e.body) }

// newExtensionClient returns a client for the API at runtimeAPI (host:port).
func newExtensionClient(runtimeAPI, name string) *extensionClient {
	return &extensionClient{baseURL: "http://" + runtimeAPI, name: name, http: &http.Client{}}
}

// register registers the extension for events and keeps its identifier.
func (c *extensionClient) register(ctx context.Context, events []string) (registerResponse, error) {
	var reg registerResponse
	body := `{"events":["` + strings.Join(events, `","`) + `"]}` // names with nothing to escape
	resp, answer, err := c.call(ctx, http.MethodPost, "/extension/register", []byte(body))
	if err != nil {
		return reg, err
	}
	if c.id = resp.Header.Get(headerExtensionIdentifier); c.id == "" {
		return reg, errors.New("no " + headerExtensionIdentifier + " in the answer")
	}
	err = readObject(answer, func(name string, v jsontext.Value) {
		if name == "functionName" {
			reg.FunctionName = unquote(v)
		}
	})
	return reg, err
}

// next blocks until the next lifecycle event. Calling it tells Lambda that
// the extension is done with the current phase.
func (c *extensionClient) next(ctx context.Context) (lifecycleEvent, error) {
	var ev lifecycleEvent
	_, answer, err := c.call(ctx, http.MethodGet, nextPath, nil)
	if err != nil {
		return ev, err
	}
	err = readObject(answer, func(name string, v jsontext.Value) {
		switch name {
		case "eventType":
			ev.EventType = unquote(v)
		case "deadlineMs":
			ev.DeadlineMs, _ = strconv.ParseInt(string(v), 10, 64)
		case "requestId":
			ev.RequestID = unquote(v)
		case "shutdownReason":
			ev.ShutdownReason = unquote(v)
		}
	})
	return ev, err
}

// reportError reports a failure at path: init/error fails the Init phase,
// exit/error tells of a failure before the extension exits.
func (c *extensionClient) reportError(ctx context.Context, path, errorType string, cause error) error {
	body, _ := jsontext.AppendQuote([]byte(`{"errorMessage":`), cause.Error())
	body, _ = jsontext.AppendQuote(append(body, `,"errorType":`...), errorType)
	_, _, err := c.call(ctx, http.MethodPost, "/extension/"+path, append(body, '}'), headerExtensionErrorType, errorType)
	return err
}

// call makes a call to the API at path (under /2020-01-01, unless it
// starts with another version) with a JSON body or none, as the registered
// extension (or, before register, by name), with more header name-value
// pairs. It returns the answer to a 2xx status, read whole, else an
// *apiError. Every call but /next is bounded by apiCallTimeout.
func (c *extensionClient) call(ctx context.Context, method, path string, body []byte, header ...string) (*http.Response, []byte, error) {
	if path != nextPath {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, apiCallTimeout)
		defer cancel()
	}
	if !strings.HasPrefix(path, "/20") {
		path = "/" + extensionAPIVersion + path
	}
	req, err := http.NewRequestWithContext(ctx, method, c.baseURL+path, bytes.NewReader(body))
	if err != nil {
		return nil, nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	if c.id == "" {
		req.Header.Set(headerExtensionName, c.name)
	} else {
		req.Header.Set(headerExtensionIdentifier, c.id)
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, nil, err
	}
	defer resp.Body.Close()
	answer, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if resp.StatusCode/100 != 2 {
		return resp, nil, &apiError{status: resp.StatusCode, body: string(bytes.TrimSpace(answer[:min(len(answer), maxErrorBody)]))}
	}
	return resp, answer, err
}

// readObject reads b, which must be one JSON object, calling f with the
// name and value of each member. The value is void once f returns.
func readObject(b []byte, f func(name string, value jsontext.Value)) error {
	d := jsontext.NewDecoder(bytes.NewReader(b), lenient()...)
	if d.PeekKind() != '{' {
		return errors.New("the answer is not a JSON object")
	}
	return members(d, func(name []byte) error {
		key := string(name) // void after the next read
		v, err := d.ReadValue()
		f(key, v)
		return err
	})
}
