// Command loki-extension is an AWS Lambda external extension that ships the
// function's logs to Grafana Loki. It subscribes to the Lambda Telemetry
// API, buffers what Lambda delivers, and pushes it to Loki's HTTP push API
// before each invocation ends and at shutdown.
//
// The event loop: register, listen, subscribe, then for each INVOKE wait for
// the runtime to finish (platform.runtimeDone), flush, and call /next; on
// SHUTDOWN flush what is left and exit. A background loop also flushes every
// LOKI_FLUSH_INTERVAL and whenever a megabyte is waiting.
package main

import (
	"cmp"
	"context"
	"crypto/x509"
	"encoding/base64"
	"errors"
	"fmt"
	"log"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"path/filepath"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
	"unicode"
)

// version is the extension's version, set by build.sh
// (-ldflags "-X main.version=…"): debug.ReadBuildInfo would cost 12 KB of
// binary.
var version = "devel"

// Defaults of the configuration, and fixed timings.
const (
	defaultListenerPort = 4243
	defaultTypes        = "function,platform.report,platform.error"
	// Telemetry API buffering: events and bytes per delivery, and its
	// longest wait, in ms.
	defaultTelemetryMaxItems, defaultTelemetryMaxBytes, defaultTelemetryTimeoutMs = 1000, 262144, 25
	// The buffer's cap is bufferPerMB for each MB of the function's
	// memory, within bufferMin and bufferMax: 4 MiB at 128 MB.
	bufferPerMB, bufferMin, bufferMax = 32 << 10, 1 << 20, 64 << 20
	// memoryHeadroom over the buffer's cap is the Go runtime's soft
	// memory limit: the heap beyond the buffer, and the runtime's own. At
	// 6 MiB, a 128 MB function writing 10,000 lines per invocation kept
	// the GC running: 2.5 times the CPU, for about 1 MB less RSS (go run
	// ./bench -lines 10000; a Loki outage's peak RSS is the same).
	memoryHeadroom       = 8 << 20
	defaultMaxLineBytes  = 256 << 10
	defaultFlushInterval = time.Second
	defaultFlushTimeout  = 300 * time.Millisecond

	// flushBytes of queued lines wake the background flush.
	flushBytes = 1 << 20
	// shutdownMargin is kept free before SHUTDOWN's deadline.
	shutdownMargin = 150 * time.Millisecond
	// shutdownQuiet: at SHUTDOWN, telemetry is taken to be complete once
	// none has arrived for this long; shutdownMaxWait caps that wait.
	shutdownQuiet, shutdownMaxWait = 100 * time.Millisecond, 300 * time.Millisecond
	// fallbackShutdown is the budget when SHUTDOWN carries no usable
	// deadline (none, or more than maxShutdown away).
	fallbackShutdown, maxShutdown = 1500 * time.Millisecond, 10 * time.Second
	// invokeMargin is kept free before an invocation's deadline;
	// maxInvocation stands in for a missing or unusable one.
	invokeMargin, maxInvocation = 50 * time.Millisecond, 15 * time.Minute
)

func main() {
	// The memory the extension takes is the function's: a heap goal of half
	// the live heap, not all of it, cut the peak RSS of a 100k-line burst
	// from 11.7 to 10.4 MB for no CPU we could measure (go run ./bench).
	debug.SetGCPercent(50)
	// And a soft limit a little over the buffer's cap: under a Loki
	// outage with a flood of lines, it took the peak RSS of a 128 MB
	// function from 16.4 to 14.0 MB (go run ./bench -faults).
	cfg, cfgErr := loadConfig(os.Getenv)
	if cfgErr == nil {
		debug.SetMemoryLimit(int64(cfg.bufferBytes) + memoryHeadroom)
	}
	name := filepath.Base(os.Args[0])
	logger := log.New(os.Stderr, name+": ", 0)
	if err := run(context.Background(), cfg, cfgErr, os.Getenv, name, logger); err != nil {
		logger.Print(err)
		os.Exit(1)
	}
}

// config is the extension's configuration, read once from the environment.
type config struct {
	target                          lokiTarget
	types                           typeFilter
	buffering                       buffering
	port, bufferBytes, maxLineBytes int
	flushInterval                   time.Duration
	flushTimeout                    time.Duration // cap on the time a flush adds to an invocation
	runtimeDoneWait                 time.Duration // cap on the wait for platform.runtimeDone; 0: the deadline
	managedInstances                bool          // Lambda Managed Instances: SHUTDOWN only, concurrent invocations
	minLevel                        severity      // LOKI_MIN_LEVEL; 0: none
	maxBytesPerSecond               int           // LOKI_MAX_BYTES_PER_SECOND; 0: no cap
	adaptive                        bool          // LOKI_FLUSH_MODE=adaptive
}

// loadConfig reads the configuration. Its errors name the variable and the
// fix and never contain secrets.
func loadConfig(getenv func(string) string) (cfg config, err error) {
	cfg.managedInstances = getenv("AWS_LAMBDA_INITIALIZATION_TYPE") == "lambda-managed-instances"
	raw := strings.TrimSpace(getenv("LOKI_URL"))
	if raw == "" {
		return cfg, errors.New("LOKI_URL is not set: set it to your Loki URL, e.g. https://logs-prod-012.grafana.net or http://loki.example.internal:3100")
	}
	u, err := url.Parse(raw)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return cfg, errors.New("LOKI_URL is not an http:// or https:// URL with a host: set it to your Loki URL, e.g. https://logs-prod-012.grafana.net")
	}
	cfg.target.pushURL = pushURL(u)

	user, pass, bearer := strings.TrimSpace(getenv("LOKI_USERNAME")), strings.TrimSpace(getenv("LOKI_PASSWORD")), strings.TrimSpace(getenv("LOKI_BEARER_TOKEN"))
	if u.User != nil && user == "" && pass == "" {
		user = u.User.Username()
		pass, _ = u.User.Password()
	}
	switch {
	case (user == "") != (pass == ""):
		return cfg, errors.New("LOKI_USERNAME and LOKI_PASSWORD go together: set both (on Grafana Cloud, the numeric user of your Loki instance and an access policy token with logs:write)")
	case user != "" && bearer != "":
		return cfg, errors.New("LOKI_BEARER_TOKEN and LOKI_USERNAME/LOKI_PASSWORD are both set: keep one of them")
	}
	// Each may be the ARN of a secret or parameter, fetched at run time.
	sec := &secrets{values: [3]string{user, pass, bearer}, getenv: getenv, again: make(chan struct{}, 1), hurry: make(chan struct{}, 1)}
	for i, name := range [...]string{"LOKI_USERNAME", "LOKI_PASSWORD", "LOKI_BEARER_TOKEN"} {
		if strings.HasPrefix(sec.values[i], "arn:") {
			if sec.refs[i], err = parseSecretARN(name, sec.values[i]); err != nil {
				return cfg, err
			}
			sec.values[i], cfg.target.secrets = "", sec
		}
	}
	// The container credentials' URI is checked where it is used, for a
	// value kept in AWS without AWS_ACCESS_KEY_ID (on SnapStart): a bad one,
	// or none, can never give credentials. The token file is read later.
	if _, _, err := containerRequest(context.Background(), getenv); err != nil && cfg.target.secrets != nil && getenv("AWS_ACCESS_KEY_ID") == "" {
		return cfg, err
	}
	if cfg.target.authorization, err = authorization(sec.values[0], sec.values[1], sec.values[2]); err != nil {
		return cfg, err
	}
	if file := getenv("LOKI_CA_FILE"); file != "" {
		pem, err := os.ReadFile(file)
		if cfg.target.roots, _ = x509.SystemCertPool(); cfg.target.roots == nil {
			cfg.target.roots = x509.NewCertPool()
		}
		if err != nil || !cfg.target.roots.AppendCertsFromPEM(pem) {
			return cfg, fmt.Errorf("LOKI_CA_FILE: %s holds no PEM certificate (%v)", file, cmp.Or(err, errors.New("none found")))
		}
	}
	if cfg.target.tenant = getenv("LOKI_TENANT_ID"); !validTenant(cfg.target.tenant) {
		return cfg, errors.New("LOKI_TENANT_ID: a tenant is not . or .. and has at most 150 characters of 0-9 a-z A-Z ! - _ . * ' ( )")
	}
	if cfg.target.labels, err = parseLabels(getenv("LOKI_LABELS")); err != nil {
		return cfg, fmt.Errorf("LOKI_LABELS: %w", err)
	}
	if cfg.types, err = parseTypes(cmp.Or(strings.TrimSpace(getenv("LOKI_TYPES")), defaultTypes)); err != nil {
		return cfg, fmt.Errorf("LOKI_TYPES: %w", err)
	}
	mode := cmp.Or(strings.TrimSpace(getenv("LOKI_FLUSH_MODE")), "invocation")
	if cfg.adaptive = mode == "adaptive"; !cfg.adaptive && mode != "invocation" {
		return cfg, fmt.Errorf("LOKI_FLUSH_MODE: %q is not a flush mode; use invocation (the default) or adaptive", mode)
	}

	level := strings.ToLower(strings.TrimSpace(getenv("LOKI_MIN_LEVEL")))
	if i := slices.Index([]string{"", "trace", "debug", "info", "warn", "error", "fatal"}, level); i >= 0 {
		cfg.minLevel = severity(i)
	} else {
		return cfg, fmt.Errorf("LOKI_MIN_LEVEL: %q is not a level; use trace, debug, info, warn, error or fatal (any case)", level)
	}

	env := envReader{getenv: getenv}

	cfg.port = env.int("LOKI_LISTENER_PORT", defaultListenerPort, 0, 65535)
	cfg.buffering.MaxItems = env.int("LOKI_TELEMETRY_MAX_ITEMS", defaultTelemetryMaxItems, 1000, 10000)
	cfg.buffering.MaxBytes = env.int("LOKI_TELEMETRY_MAX_BYTES", defaultTelemetryMaxBytes, 262144, 1048576)
	cfg.buffering.TimeoutMs = env.int("LOKI_TELEMETRY_TIMEOUT_MS", defaultTelemetryTimeoutMs, 25, 30000)
	memoryMB, _ := strconv.Atoi(getenv("AWS_LAMBDA_FUNCTION_MEMORY_SIZE"))
	cfg.bufferBytes = env.int("LOKI_BUFFER_BYTES", min(max(cmp.Or(memoryMB, 128)*bufferPerMB, bufferMin), bufferMax), 1<<20, 1<<30)
	cfg.maxLineBytes = env.int("LOKI_MAX_LINE_BYTES", defaultMaxLineBytes, 1024, 16<<20)
	cfg.flushInterval = env.duration("LOKI_FLUSH_INTERVAL", defaultFlushInterval, 100*time.Millisecond, time.Hour)
	cfg.flushTimeout = env.duration("LOKI_FLUSH_TIMEOUT", defaultFlushTimeout, 10*time.Millisecond, 15*time.Minute)
	cfg.runtimeDoneWait = env.duration("LOKI_RUNTIME_DONE_WAIT", 0, 0, 15*time.Minute)
	cfg.maxBytesPerSecond = env.int("LOKI_MAX_BYTES_PER_SECOND", 0, 0, 1<<40)
	switch {
	case env.err != nil:
	case cfg.port == 9001:
		env.err = errors.New("LOKI_LISTENER_PORT: 9001 is reserved by Lambda; pick another port, e.g. 4243")
	case cfg.maxLineBytes > cfg.bufferBytes/4:
		env.err = fmt.Errorf("LOKI_MAX_LINE_BYTES: %d is over a quarter of LOKI_BUFFER_BYTES (%d); lower it or raise the buffer", cfg.maxLineBytes, cfg.bufferBytes)
	}
	return cfg, env.err
}

// authorization returns the Authorization header for basic auth or a
// bearer token ("" for none). Its errors name variables, never values.
func authorization(user, pass, bearer string) (string, error) {
	switch {
	case strings.ContainsFunc(user+pass, unicode.IsControl) || strings.Contains(user, ":"):
		return "", errors.New("LOKI_USERNAME or LOKI_PASSWORD holds a control character (or the user a colon): copy them again from your Loki or Grafana Cloud settings")
	case strings.ContainsFunc(bearer, unicode.IsControl):
		return "", errors.New("LOKI_BEARER_TOKEN holds a control character: copy the token again")
	case user != "":
		return "Basic " + base64.StdEncoding.EncodeToString([]byte(user+":"+pass)), nil
	case bearer != "":
		return "Bearer " + bearer, nil
	}
	return "", nil
}

// envReader reads numeric variables and keeps the first error.
type envReader struct {
	getenv func(string) string
	err    error
}

func (r *envReader) int(name string, def, lo, hi int) int {
	return envNumber(r, name, def, lo, hi, strconv.Atoi, "a whole number")
}

func (r *envReader) duration(name string, def, lo, hi time.Duration) time.Duration {
	return envNumber(r, name, def, lo, hi, time.ParseDuration, "a duration such as 500ms or 2s")
}

// envNumber reads the variable name with parse: def if it is not set, and
// an error kept in r if it is not what kind says, within lo and hi.
func envNumber[T int | time.Duration](r *envReader, name string, def, lo, hi T, parse func(string) (T, error), kind string) T {
	v := strings.TrimSpace(r.getenv(name))
	if v == "" || r.err != nil {
		return def
	}
	n, err := parse(v)
	if err != nil || n < lo || n > hi {
		r.err = fmt.Errorf("%s: %q is not %s from %v to %v (default %v)", name, v, kind, lo, hi, def)
	}
	return n
}

// validTenant reports whether Loki accepts t as a tenant; "" means none.
func validTenant(t string) bool {
	return len(t) <= 150 && t != "." && t != ".." && strings.Trim(t, alphanumeric+"!-_.*'()") == ""
}

// onceLogger prints each kind of problem once per environment, so that a
// failing Loki costs the function one log line, not one per attempt.
type onceLogger struct {
	log  *log.Logger
	seen sync.Map // the kinds told
}

func (o *onceLogger) once(kind, format string, args ...any) {
	if _, told := o.seen.LoadOrStore(kind, true); !told {
		o.log.Printf(format, args...)
	}
}

// notify sends on ch, of capacity 1, unless a value already waits there.
func notify(ch chan struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}

// extension is the running extension, driven by the event loop in run.
type extension struct {
	cfg      config
	api      *extensionClient
	batch    *batch
	listener *listener
	shipper  *shipper
	server   *http.Server
	log      *onceLogger

	telemetry bool      // a subscription delivers events
	lastNext  time.Time // when the last invocation ended
}

// run registers the extension and runs the event loop until SHUTDOWN with
// the configuration that loadConfig read from getenv (a cfgErr is reported
// once registered).
func run(ctx context.Context, cfg config, cfgErr error, getenv func(string) string, name string, logger *log.Logger) error {
	api := &extensionClient{baseURL: "http://" + getenv("AWS_LAMBDA_RUNTIME_API"), name: name, http: &http.Client{}}
	events := []string{"INVOKE", "SHUTDOWN"}
	if cfg.managedInstances {
		events = events[1:]
	}
	functionName, err := api.register(ctx, events)
	if ae, ok := errors.AsType[*apiError](err); ok && len(events) == 2 && strings.Contains(ae.body, "InvalidEventType") {
		cfg.managedInstances = true // Lambda Managed Instances refuse INVOKE
		functionName, err = api.register(ctx, events[1:])
	}
	if err != nil {
		return fmt.Errorf("register: %w", err)
	}
	initFailed := func(errorType string, err error) error {
		if rerr := api.reportError(ctx, "init/error", errorType, err); rerr != nil {
			logger.Printf("init/error: %v", rerr)
		}
		return err
	}
	if cfgErr != nil {
		return initFailed("Extension.ConfigInvalid", cfgErr)
	}
	x, err := start(ctx, cfg, api, functionName, getenv, logger)
	if err != nil {
		return initFailed("Extension.ListenFailed", err)
	}
	// Lambda ends extensions with SHUTDOWN, not signals; a stray SIGTERM or
	// SIGINT only asks for a flush.
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT)
	defer close(sigs)
	defer signal.Stop(sigs)
	go func() {
		for range sigs {
			x.shipper.kick()
		}
	}()
	for {
		if !cfg.managedInstances {
			x.shipper.pause() // the environment may freeze now
		}
		ev, err := api.next(ctx)
		x.shipper.resume()
		if err != nil {
			return x.fail(ctx, fmt.Errorf("next: %w", err))
		}
		switch ev.EventType {
		case "INVOKE":
			x.invoke(ctx, ev)
		case "SHUTDOWN":
			x.shutdown(ctx, ev)
			return nil
		}
	}
}

// start starts the listener and the background flush, and subscribes.
func start(ctx context.Context, cfg config, api *extensionClient, functionName string, getenv func(string) string, logger *log.Logger) (*extension, error) {
	if cfg.target.labels["service_name"] == "" {
		cfg.target.labels["service_name"] = cmp.Or(functionName, getenv("AWS_LAMBDA_FUNCTION_NAME"), "lambda")
	}
	b := newBatch(cfg.bufferBytes, flushBytes)
	olog := &onceLogger{log: logger}
	x := &extension{cfg: cfg, api: api, batch: b, log: olog, shipper: newShipper(cfg.target, b, olog, version, cfg.flushInterval),
		listener: newListener(b, cfg.types, cfg.maxLineBytes, logger.Prefix(), !cfg.managedInstances)}
	x.listener.minLevel, x.listener.rate, x.listener.log = cfg.minLevel, float64(cfg.maxBytesPerSecond), olog
	ln, err := net.Listen("tcp", ":"+strconv.Itoa(cfg.port))
	if err != nil {
		return nil, fmt.Errorf("LOKI_LISTENER_PORT: listen for telemetry: %w", err)
	}
	x.server = &http.Server{Handler: x.listener, ReadHeaderTimeout: 5 * time.Second, ReadTimeout: 30 * time.Second}
	go x.server.Serve(ln)

	types := []string{"platform", "function"}
	if cfg.types["extension"] {
		types = append(types, "extension")
	}
	uri := "http://sandbox.localdomain:" + strconv.Itoa(ln.Addr().(*net.TCPAddr).Port)
	sr := subscribeRequest{SchemaVersion: schemaVersion, Types: types, Buffering: cfg.buffering, Destination: destination{Protocol: "HTTP", URI: uri}}
	switch err := api.subscribe(ctx, sr); {
	case err == nil:
		x.telemetry = true
	case errors.Is(err, errTelemetryUnsupported):
		logger.Print(err)
	default:
		logger.Printf("subscribe to the Telemetry API: %v; no logs will be shipped", err)
	}

	if sec := cfg.target.secrets; sec != nil {
		sec.client, sec.log, sec.changed = x.shipper.client, olog, x.shipper.kick
		if getenv("AWS_LAMBDA_INITIALIZATION_TYPE") != "snap-start" {
			x.startSecrets(ctx) // alongside Init; on SnapStart, after the restore
		}
	}
	x.shipper.start(ctx)
	return x, nil
}

// startSecrets starts fetching the credentials kept in AWS, once.
func (x *extension) startSecrets(ctx context.Context) {
	if sec := x.cfg.target.secrets; sec != nil {
		sec.start.Do(func() { go sec.run(ctx) })
	}
}

// invoke handles an INVOKE event: it waits until the runtime is done with
// the invocation, then for Loki's answer to every line buffered, at most
// LOKI_FLUSH_TIMEOUT and never when Loki fails or is slower than that. A
// push still in flight then goes on across the freeze.
//
// In the adaptive flush mode, while invocations come back to back (the last
// freeze was under a quarter of LOKI_FLUSH_INTERVAL), it waits only for the
// lines of earlier invocations: this invocation's go out in the background.
func (x *extension) invoke(ctx context.Context, ev lifecycleEvent) {
	backToBack := time.Since(x.lastNext) < x.cfg.flushInterval/4
	defer func() { x.lastNext = time.Now() }()
	x.startSecrets(ctx)
	before := x.batch.mark() // the lines of earlier invocations
	if !x.telemetry {
		return
	}
	now := time.Now()
	deadline := time.UnixMilli(ev.DeadlineMs)
	if !deadline.After(now) || deadline.After(now.Add(maxInvocation)) {
		deadline = now.Add(maxInvocation) // not a usable deadline
	}
	deadline = deadline.Add(-invokeMargin)
	until := deadline
	if w := x.cfg.runtimeDoneWait; w > 0 && now.Add(w).Before(until) {
		until = now.Add(w)
	}
	x.listener.waitRuntimeDone(ctx, ev.RequestID, until)

	end := time.Now().Add(x.cfg.flushTimeout)
	if deadline.Before(end) {
		end = deadline
	}
	fctx, cancel := context.WithDeadline(ctx, end)
	defer cancel()
	mark := x.batch.mark()
	if x.cfg.adaptive && backToBack {
		x.shipper.kick()
		mark = before
	}
	x.shipper.flush(fctx, mark, false)
}

// shutdown handles SHUTDOWN: it waits briefly for late telemetry, pushes
// everything left before the deadline, and reports what it could not.
func (x *extension) shutdown(ctx context.Context, ev lifecycleEvent) {
	now := time.Now()
	end := time.UnixMilli(ev.DeadlineMs).Add(-shutdownMargin)
	if ev.DeadlineMs <= 0 || end.After(now.Add(maxShutdown)) {
		end = now.Add(fallbackShutdown) // not a usable deadline
	}
	x.shipper.kick() // what is queued goes now, while late telemetry comes
	if sec := x.cfg.target.secrets; sec != nil {
		notify(sec.hurry)
	}
	if x.telemetry {
		x.awaitQuiet(end)
	}
	cctx, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	x.server.Shutdown(cctx) // no line arrives after this: the count is exact
	cancel()
	ectx, cancel := context.WithDeadline(ctx, end)
	defer cancel()
	x.shipper.flush(ectx, x.batch.mark(), true)
	n := x.shipper.stop()
	x.batch.count(func(c *counters) { c.droppedAtExit += int64(n) })
	x.shipper.pushStats(ectx)
	c := x.batch.counters()
	x.log.log.Printf("shutdown (%s): %d lines sent; dropped: %d buffer full, %d rejected by Loki, %d at shutdown, %d by Lambda, %d below LOKI_MIN_LEVEL, %d over LOKI_MAX_BYTES_PER_SECOND; %d retries",
		strings.ToLower(ev.ShutdownReason), c.sent, c.droppedFull, c.droppedLoki, c.droppedAtExit, c.droppedByLambda, c.droppedFiltered, c.droppedOverRate, c.retries)
}

// awaitQuiet waits until no telemetry has arrived for shutdownQuiet since
// SHUTDOWN, at most shutdownMaxWait and never past end.
func (x *extension) awaitQuiet(end time.Time) {
	for start := time.Now(); time.Since(start) < shutdownMaxWait && time.Now().Before(end); time.Sleep(10 * time.Millisecond) {
		if time.Since(start) >= shutdownQuiet && time.Since(x.listener.lastDeliveryTime()) >= shutdownQuiet {
			return
		}
	}
}

// fail handles a broken Extensions API: push what is buffered, report, and
// return err for the process to exit.
func (x *extension) fail(ctx context.Context, err error) error {
	fctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	x.shipper.flush(fctx, x.batch.mark(), true)
	x.shipper.stop()
	x.api.reportError(ctx, "exit/error", "Extension.NextFailed", err)
	return err
}
