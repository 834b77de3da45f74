package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"time"
)

const (
	extensionAPIVersion = "2020-01-01"

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

// tracing is the X-Ray context of an INVOKE event.
type tracing struct {
	Value string // X-Amzn-Trace-Id: "Root=...;Parent=...;Sampled=..."
}

// lifecycleEvent is an INVOKE or SHUTDOWN event returned by /next.
type lifecycleEvent struct {
	EventType      string
	DeadlineMs     int64
	RequestID      string
	ShutdownReason string
	Tracing        tracing
}

// apiError is a non-success answer of a Lambda API.
type apiError struct {
	status int
	body   string
}

func (e *apiError) Error() string {
	return fmt.Sprintf("status %d: %s", e.status, e.body)
}

// newExtensionClient returns a client for the API at runtimeAPI (host:port).
func newExtensionClient(runtimeAPI, name string) *extensionClient {
	return &extensionClient{
		baseURL: "http://" + runtimeAPI,
		name:    name,
		http:    &http.Client{},
	}
}

// register registers the extension for events and keeps its identifier.
func (c *extensionClient) register(ctx context.Context, events []string) (registerResponse, error) {
	var reg registerResponse
	body := []byte(`{"events":[`)
	for i, ev := range events {
		if i > 0 {
			body = append(body, ',')
		}
		body = appendJSONString(body, ev)
	}
	body = append(body, "]}"...)
	ctx, cancel := context.WithTimeout(ctx, apiCallTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.url("register"), bytes.NewReader(body))
	if err != nil {
		return reg, err
	}
	req.Header.Set(headerExtensionName, c.name)
	req.Header.Set("Content-Type", "application/json")
	resp, err := c.http.Do(req)
	if err != nil {
		return reg, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return reg, readAPIError(resp)
	}
	c.id = resp.Header.Get(headerExtensionIdentifier)
	if c.id == "" {
		return reg, errors.New("no " + headerExtensionIdentifier + " in the answer")
	}
	obj, err := readObject(resp.Body)
	if err != nil {
		return reg, fmt.Errorf("decode answer: %w", err)
	}
	members(obj, func(key, v []byte) {
		if string(key) == "functionName" {
			reg.FunctionName, _ = jsonString(v)
		}
	})
	return reg, nil
}

// next blocks until the next lifecycle event. Calling it tells Lambda that
// the extension is done with the current phase.
func (c *extensionClient) next(ctx context.Context) (lifecycleEvent, error) {
	var ev lifecycleEvent
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.url("event/next"), nil)
	if err != nil {
		return ev, err
	}
	req.Header.Set(headerExtensionIdentifier, c.id)
	resp, err := c.http.Do(req)
	if err != nil {
		return ev, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return ev, readAPIError(resp)
	}
	obj, err := readObject(resp.Body)
	if err != nil {
		return ev, fmt.Errorf("decode event: %w", err)
	}
	members(obj, func(key, v []byte) {
		switch string(key) {
		case "eventType":
			ev.EventType, _ = jsonString(v)
		case "deadlineMs":
			ev.DeadlineMs = int64(jsonNumber(v))
		case "requestId":
			ev.RequestID, _ = jsonString(v)
		case "shutdownReason":
			ev.ShutdownReason, _ = jsonString(v)
		case "tracing":
			members(v, func(key, v []byte) {
				if string(key) == "value" {
					ev.Tracing.Value, _ = jsonString(v)
				}
			})
		}
	})
	return ev, nil
}

// initError reports a failed initialization; Lambda then fails the Init phase.
func (c *extensionClient) initError(ctx context.Context, errorType string, cause error) error {
	return c.reportError(ctx, "init/error", errorType, cause)
}

// exitError reports an unexpected failure before the extension exits.
func (c *extensionClient) exitError(ctx context.Context, errorType string, cause error) error {
	return c.reportError(ctx, "exit/error", errorType, cause)
}

func (c *extensionClient) reportError(ctx context.Context, path, errorType string, cause error) error {
	body := appendJSONString([]byte(`{"errorMessage":`), cause.Error())
	body = appendJSONString(append(body, `,"errorType":`...), errorType)
	body = append(body, '}')
	ctx, cancel := context.WithTimeout(ctx, apiCallTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.url(path), bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set(headerExtensionIdentifier, c.id)
	req.Header.Set(headerExtensionErrorType, errorType)
	req.Header.Set("Content-Type", "application/json")
	resp, err := c.http.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		return readAPIError(resp)
	}
	return nil
}

func (c *extensionClient) url(path string) string {
	return c.baseURL + "/" + extensionAPIVersion + "/extension/" + path
}

// readObject reads a response body that must be one JSON object.
func readObject(r io.Reader) ([]byte, error) {
	b, err := io.ReadAll(io.LimitReader(r, 1<<20))
	if err != nil {
		return nil, err
	}
	if !isWhole(b, '{') {
		return nil, errors.New("not a JSON object")
	}
	return b, nil
}

// readAPIError turns a non-success response into an *apiError holding the
// start of its body.
func readAPIError(resp *http.Response) error {
	b, _ := io.ReadAll(io.LimitReader(resp.Body, maxErrorBody))
	return &apiError{status: resp.StatusCode, body: string(bytes.TrimSpace(b))}
}
