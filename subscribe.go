package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
)

const (
	telemetryAPIVersion = "2022-07-01"

	// schemaVersion is required on Lambda Managed Instances and gives JSON
	// log records as objects; oldSchemaVersion is the fallback for a
	// platform that answers 400 to it.
	schemaVersion    = "2025-01-29"
	oldSchemaVersion = "2022-12-13"
)

// errTelemetryUnsupported means the Telemetry API accepted the subscription
// with 202: a local emulator that will never deliver anything.
var errTelemetryUnsupported = errors.New("the Telemetry API is not supported here (202); no logs will be shipped")

// subscribeRequest is the body of PUT /2022-07-01/telemetry.
type subscribeRequest struct {
	SchemaVersion string
	Types         []string
	Buffering     buffering
	Destination   destination
}

// buffering tells Lambda how long and how much to batch before a delivery.
type buffering struct {
	MaxItems  int
	MaxBytes  int
	TimeoutMs int
}

// destination is where Lambda POSTs telemetry batches.
type destination struct {
	Protocol string
	URI      string
}

// appendJSON appends the request as the Telemetry API's JSON.
func (sr subscribeRequest) appendJSON(b []byte) []byte {
	b = appendJSONString(append(b, `{"schemaVersion":`...), sr.SchemaVersion)
	b = append(b, `,"types":[`...)
	for i, t := range sr.Types {
		if i > 0 {
			b = append(b, ',')
		}
		b = appendJSONString(b, t)
	}
	b = fmt.Appendf(b, `],"buffering":{"maxItems":%d,"maxBytes":%d,"timeoutMs":%d}`,
		sr.Buffering.MaxItems, sr.Buffering.MaxBytes, sr.Buffering.TimeoutMs)
	b = appendJSONString(append(b, `,"destination":{"protocol":`...), sr.Destination.Protocol)
	b = appendJSONString(append(b, `,"URI":`...), sr.Destination.URI)
	return append(b, "}}"...)
}

// newSubscribeRequest asks for types, delivered to the listener on port.
func newSubscribeRequest(types []string, buf buffering, port int) subscribeRequest {
	return subscribeRequest{
		SchemaVersion: schemaVersion,
		Types:         types,
		Buffering:     buf,
		Destination: destination{
			Protocol: "HTTP",
			URI:      "http://sandbox.localdomain:" + strconv.Itoa(port),
		},
	}
}

// subscribe subscribes to the Telemetry API; it must happen before the first
// /next. It retries once with the older schema if the newest is refused with
// 400, and returns errTelemetryUnsupported on 202.
func (c *extensionClient) subscribe(ctx context.Context, sr subscribeRequest) error {
	err := c.putSubscription(ctx, sr)
	var ae *apiError
	if errors.As(err, &ae) && ae.status == http.StatusBadRequest {
		sr.SchemaVersion = oldSchemaVersion
		if err2 := c.putSubscription(ctx, sr); err2 == nil || errors.Is(err2, errTelemetryUnsupported) {
			return err2
		}
	}
	return err
}

func (c *extensionClient) putSubscription(ctx context.Context, sr subscribeRequest) error {
	body := sr.appendJSON(nil)
	ctx, cancel := context.WithTimeout(ctx, apiCallTimeout)
	defer cancel()
	url := c.baseURL + "/" + telemetryAPIVersion + "/telemetry"
	req, err := http.NewRequestWithContext(ctx, http.MethodPut, url, bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set(headerExtensionIdentifier, c.id)
	req.Header.Set("Content-Type", "application/json")
	resp, err := c.http.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	switch {
	case resp.StatusCode == http.StatusAccepted:
		io.Copy(io.Discard, io.LimitReader(resp.Body, maxErrorBody))
		return errTelemetryUnsupported
	case resp.StatusCode/100 == 2:
		io.Copy(io.Discard, io.LimitReader(resp.Body, maxErrorBody))
		return nil
	default:
		return fmt.Errorf("schema %s: %w", sr.SchemaVersion, readAPIError(resp))
	}
}
