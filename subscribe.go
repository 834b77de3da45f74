package main

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"time"
)

const (
	telemetryAPIVersion = "2022-07-01"

	// schemaVersion is required on Lambda Managed Instances and gives JSON
	// log records as objects; oldSchemaVersion is the fallback for a
	// platform that answers 400 to it.
	schemaVersion    = "2025-01-29"
	oldSchemaVersion = "2022-12-13"

	// subscribeBudget bounds subscribe with its retries: Init has 10 s
	// for every extension and the function together.
	subscribeBudget = 4 * time.Second
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
// /next. It tries the older schema if the newest is refused with 400, and
// returns errTelemetryUnsupported on 202. A 5xx answer or none is tried
// again, the pause doubling from 100 ms, for up to subscribeBudget: one
// failure must not silence the environment for life.
func (c *extensionClient) subscribe(ctx context.Context, sr subscribeRequest) error {
	ctx, cancel := context.WithTimeout(ctx, subscribeBudget)
	defer cancel()
	for pause := 100 * time.Millisecond; ; pause *= 2 {
		err := c.putSubscription(ctx, sr)
		ae, answered := errors.AsType[*apiError](err)
		switch {
		case answered && ae.status == http.StatusBadRequest && sr.SchemaVersion != oldSchemaVersion:
			sr.SchemaVersion = oldSchemaVersion
			continue
		case err == nil || errors.Is(err, errTelemetryUnsupported) || answered && ae.status < 500:
			return err
		}
		select {
		case <-ctx.Done():
			return err
		case <-time.After(pause):
		}
	}
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
