package main

import (
	"context"
	"errors"
	"fmt"
	"net/http"
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
type buffering struct{ MaxItems, MaxBytes, TimeoutMs int }

// destination is where Lambda POSTs telemetry batches.
type destination struct{ Protocol, URI string }

// appendJSON appends the request as the Telemetry API's JSON.
func (sr subscribeRequest) appendJSON(b []byte) []byte {
	return fmt.Appendf(b, `{"schemaVersion":%s,"types":%s,"buffering":{"maxItems":%d,"maxBytes":%d,"timeoutMs":%d},"destination":{"protocol":%s,"URI":%s}}`,
		quote(sr.SchemaVersion), quoteAll(sr.Types), sr.Buffering.MaxItems, sr.Buffering.MaxBytes, sr.Buffering.TimeoutMs, quote(sr.Destination.Protocol), quote(sr.Destination.URI))
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
	resp, _, err := c.call(ctx, http.MethodPut, "/"+telemetryAPIVersion+"/telemetry", sr.appendJSON(nil))
	switch {
	case err != nil:
		return fmt.Errorf("schema %s: %w", sr.SchemaVersion, err)
	case resp.StatusCode == http.StatusAccepted:
		return errTelemetryUnsupported
	}
	return nil
}
