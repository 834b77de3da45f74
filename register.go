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

// register registers the extension for events, keeps its identifier and
// returns the function's name.
func (c *extensionClient) register(ctx context.Context, events []string) (functionName string, err error) {
	resp, answer, err := c.call(ctx, http.MethodPost, "/extension/register", append(append([]byte(`{"events":`), quoteAll(events)...), '}'))
	if err != nil {
		return "", err
	}
	if c.id = resp.Header.Get(headerExtensionIdentifier); c.id == "" {
		return "", errors.New("no " + headerExtensionIdentifier + " in the answer")
	}
	err = readObject(answer, func(name string, v jsontext.Token) {
		if name == "functionName" && v.Kind() == '"' {
			functionName = v.String()
		}
	})
	return functionName, err
}

// next blocks until the next lifecycle event. Calling it tells Lambda that
// the extension is done with the current phase.
func (c *extensionClient) next(ctx context.Context) (lifecycleEvent, error) {
	var ev lifecycleEvent
	_, answer, err := c.call(ctx, http.MethodGet, nextPath, nil)
	if err != nil {
		return ev, err
	}
	err = readObject(answer, func(name string, v jsontext.Token) {
		switch name {
		case "eventType":
			ev.EventType = v.String()
		case "deadlineMs":
			ev.DeadlineMs, _ = strconv.ParseInt(v.String(), 10, 64)
		case "requestId":
			ev.RequestID = v.String()
		case "shutdownReason":
			ev.ShutdownReason = v.String()
		}
	})
	return ev, err
}

// reportError reports a failure at path: init/error fails the Init phase,
// exit/error tells of a failure before the extension exits.
func (c *extensionClient) reportError(ctx context.Context, path, errorType string, cause error) error {
	body, _ := jsontext.AppendQuote([]byte(`{"errorMessage":`), cause.Error())
	body, _ = jsontext.AppendQuote(append(body, `,"errorType":`...), errorType)
	body = append(body, '}')
	_, _, err := c.call(ctx, http.MethodPost, "/extension/"+path, body, headerExtensionErrorType, errorType)
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

// quote returns s as a JSON string; quoteAll, ss as a JSON array of them.
// They build the bodies of extensionClient's calls, here and in
// subscribe.go.
func quote(s string) []byte {
	b, _ := jsontext.AppendQuote(nil, s)
	return b
}

func quoteAll(ss []string) []byte {
	b := []byte{'['}
	for i, s := range ss {
		if i > 0 {
			b = append(b, ',')
		}
		b, _ = jsontext.AppendQuote(b, s)
	}
	return append(b, ']')
}

// readObject reads b, which must be one JSON object, calling f with the
// name and value of each member that is not an object or an array. A
// string value is given unquoted; the value is void once f returns.
func readObject(b []byte, f func(name string, value jsontext.Token)) error {
	d := jsontext.NewDecoder(bytes.NewReader(b), jsontext.AllowDuplicateNames(true))
	if d.PeekKind() != '{' {
		return errors.New("the answer is not a JSON object")
	}
	d.ReadToken()
	for d.PeekKind() == '"' {
		name, _ := d.ReadToken() // if this fails, so does the next read
		key := name.String()
		if kind := d.PeekKind(); kind == '{' || kind == '[' {
			d.SkipValue()
			continue
		}
		v, err := d.ReadToken()
		if err != nil {
			return err
		}
		f(key, v)
	}
	_, err := d.ReadToken()
	return err
}
