package main

import (
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
	"unicode/utf8"
)

const (
	pushPath = "/loki/api/v1/push"

	// maxRequestBytes caps the entry bytes of one background push request;
	// Loki's default per-tenant burst is 6 MB. boundedRequestBytes caps
	// those of a flush against a deadline (end of invocation, SHUTDOWN): a
	// megabyte takes about 10 ms of CPU to encode on a full core.
	maxRequestBytes     = 4 << 20
	boundedRequestBytes = 1 << 20
	// backgroundFlushTimeout bounds one background flush, and every push
	// request as a backstop to the context deadline each one has.
	backgroundFlushTimeout = 10 * time.Second
	// retryBaseDelay and retryMaxDelay shape the exponential backoff.
	retryBaseDelay = 50 * time.Millisecond
	retryMaxDelay  = 2 * time.Second
	// idleReconnect: connections idle this long may have died in a freeze;
	// they are dropped before the next push.
	idleReconnect = 30 * time.Second
	// breakerThreshold consecutive failed flushes stop end-of-invocation
	// flushes from waiting on Loki until a push succeeds again, or the
	// cool-down (breakerCooldown, doubling up to breakerMaxCooldown) ends.
	breakerThreshold   = 3
	breakerCooldown    = 2 * time.Second
	breakerMaxCooldown = time.Minute
	// probeBytes caps the first request of a flush while the breaker is open.
	probeBytes = 64 << 10
	// maxResponseBody is how much of a Loki error answer is read.
	maxResponseBody = 64 << 10
	// gzipLevel: BestSpeed takes half the CPU of the default level for 6 %
	// more bytes on the wire (BenchmarkEncode: 0.135 vs 0.127 of the lines).
	gzipLevel = gzip.BestSpeed
)

// lokiTarget is where and how to push.
type lokiTarget struct {
	pushURL       string // full push URL, without credentials
	authorization string // value of the Authorization header, or ""
	tenant        string // X-Scope-OrgID, or ""
	labels        map[string]string
}

// shipper pushes the batch to Loki. Only the holder of gate pushes, so
// requests never overlap and lines keep their order.
type shipper struct {
	target    lokiTarget
	client    *http.Client
	transport *http.Transport
	batch     *batch
	log       *onceLogger
	userAgent string
	streams   [numSources][]byte // JSON of each stream's label set
	now       func() time.Time
	kick      chan struct{} // capacity 1: asks the background loop to flush now

	// gate has capacity 1; whoever sends into it may push. The event loop
	// holds it from the end-of-invocation flush until the next event, so
	// that no push is in flight when the environment freezes.
	gate chan struct{}

	// Used only by the gate holder.
	body      bytes.Buffer
	zw        *gzip.Writer
	scratch   []byte
	lastPush  time.Time
	notBefore time.Time // a Retry-After longer than a flush's time ends here

	mu       sync.Mutex // guards the fields below
	failures int        // consecutive failed flushes
	cooldown time.Duration
	retryAt  time.Time          // while the breaker is open, when to try again
	paused   bool               // the event loop holds or is taking the gate
	cancelBG context.CancelFunc // cancels the background push in progress
	reported counters           // as told by the last stats line
	statsSeq int
}

// pushError is a push that failed; status is -1 for transport errors.
type pushError struct {
	status int
	body   string
	err    error
}

func (e *pushError) Error() string {
	if e.status < 0 {
		return e.err.Error()
	}
	return fmt.Sprintf("status %d: %s", e.status, e.body)
}

func (e *pushError) Unwrap() error { return e.err }

// newShipper returns a shipper for target that drains b.
func newShipper(target lokiTarget, b *batch, log *onceLogger, version string) *shipper {
	tr := &http.Transport{
		Proxy:                 http.ProxyFromEnvironment,
		DialContext:           (&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		TLSHandshakeTimeout:   5 * time.Second,
		ResponseHeaderTimeout: backgroundFlushTimeout,
		MaxIdleConnsPerHost:   2,
		IdleConnTimeout:       idleReconnect,
		DisableCompression:    true,
	}
	s := &shipper{
		target:    target,
		client:    &http.Client{Transport: tr, Timeout: backgroundFlushTimeout},
		transport: tr,
		batch:     b,
		log:       log,
		userAgent: "loki-extension/" + version,
		now:       time.Now,
		kick:      make(chan struct{}, 1),
		gate:      make(chan struct{}, 1),
	}
	s.zw, _ = gzip.NewWriterLevel(io.Discard, gzipLevel)
	for src := range numSources {
		s.streams[src] = streamJSON(target.labels, src)
	}
	return s
}

// pushURL returns the push endpoint for a base URL: the URL itself if it
// already ends with the push path, else the URL with the path appended.
func pushURL(base *url.URL) string {
	u := *base
	u.User = nil
	u.Path = strings.TrimSuffix(u.Path, "/")
	if !strings.HasSuffix(u.Path, pushPath) {
		u.Path += pushPath
	}
	u.RawPath = ""
	return u.String()
}

// parseLabels reads LOKI_LABELS ("k=v,k2=v2") into a map and checks the
// names against Loki's rules.
func parseLabels(s string) (map[string]string, error) {
	labels := map[string]string{}
	for pair := range strings.SplitSeq(s, ",") {
		if strings.TrimSpace(pair) == "" {
			continue
		}
		name, value, ok := strings.Cut(pair, "=")
		name, value = strings.TrimSpace(name), strings.TrimSpace(value)
		switch {
		case !ok:
			return nil, fmt.Errorf("%q is not name=value", pair)
		case !validLabelName(name):
			return nil, fmt.Errorf("label name %q must match [a-zA-Z_][a-zA-Z0-9_]*", name)
		case strings.HasPrefix(name, "__"):
			return nil, fmt.Errorf("label name %q: names starting with __ are reserved", name)
		case name == "source":
			return nil, errors.New(`label "source" is set by the extension (function, platform or extension)`)
		case value == "":
			return nil, fmt.Errorf("label %q has an empty value; Loki drops empty labels", name)
		case len(value) > 2048 || !utf8.ValidString(value):
			return nil, fmt.Errorf("label %q: the value must be valid UTF-8 of at most 2048 bytes", name)
		}
		labels[name] = value
	}
	if len(labels) > 13 {
		return nil, errors.New("at most 13 labels: Loki allows 15 per stream and the extension sets service_name and source")
	}
	return labels, nil
}

// validLabelName reports whether Loki's parser accepts name:
// [a-zA-Z_][a-zA-Z0-9_]*, at most 1024 bytes.
func validLabelName(name string) bool {
	if name == "" || len(name) > 1024 {
		return false
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		if !(c == '_' || 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || i > 0 && '0' <= c && c <= '9') {
			return false
		}
	}
	return true
}

// streamJSON renders a stream's label set as a JSON object, keys sorted.
func streamJSON(labels map[string]string, src source) []byte {
	all := map[string]string{}
	for k, v := range labels {
		all[k] = v
	}
	all["source"] = src.String()
	keys := make([]string, 0, len(all))
	for k := range all {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	b := []byte{'{'}
	for i, k := range keys {
		if i > 0 {
			b = append(b, ',')
		}
		b = appendJSONString(b, k)
		b = append(b, ':')
		b = appendJSONString(b, all[k])
	}
	return append(b, '}')
}

// hold takes the gate for the event loop. It stops the background loop
// from starting pushes, and waits until ctx ends for the one in progress,
// if any, to finish; then, or at once if preempt, it cancels that push (its
// lines go back to the batch). It reports whether it got the gate; if not,
// no push will start until release.
func (s *shipper) hold(ctx context.Context, preempt bool) bool {
	s.mu.Lock()
	s.paused = true
	if preempt && s.cancelBG != nil {
		s.cancelBG()
	}
	s.mu.Unlock()
	select {
	case s.gate <- struct{}{}:
		return true
	case <-ctx.Done():
	}
	s.mu.Lock()
	if s.cancelBG != nil {
		s.cancelBG()
	}
	s.mu.Unlock()
	select { // a cancelled push lets go quickly
	case s.gate <- struct{}{}:
		return true
	case <-time.After(20 * time.Millisecond):
		return false
	}
}

// release gives the gate back, if held, and lets the background loop push
// again.
func (s *shipper) release(held bool) {
	s.mu.Lock()
	s.paused = false
	s.mu.Unlock()
	if held {
		<-s.gate
	}
}

// breakerOpen reports whether recent flushes failed so often that the end
// of an invocation should not wait for Loki. Once the cool-down is over it
// is half open: one end-of-invocation flush may try again.
func (s *shipper) breakerOpen() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.failures >= breakerThreshold && s.now().Before(s.retryAt)
}

// requestFlush asks the background loop for a flush without waiting.
func (s *shipper) requestFlush() {
	select {
	case s.kick <- struct{}{}:
	default:
	}
}

// background flushes every interval, whenever the batch is worth flushing
// and on request, until ctx ends. Ending ctx lets a flush in progress
// finish; hold cancels it. It skips a round while the event loop holds or
// is taking the gate.
func (s *shipper) background(ctx context.Context, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-s.batch.ready:
		case <-s.kick:
		}
		if ctx.Err() != nil {
			return // select picks at random among ready cases
		}
		fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), backgroundFlushTimeout)
		s.mu.Lock()
		paused := s.paused
		if !paused {
			s.cancelBG = cancel
		}
		s.mu.Unlock()
		if !paused {
			select {
			case s.gate <- struct{}{}:
				s.flush(fctx, maxRequestBytes)
				<-s.gate
			default:
			}
			s.mu.Lock()
			s.cancelBG = nil
			s.mu.Unlock()
		}
		cancel()
	}
}

// flush pushes what is queued, oldest first, in requests of at most
// maxBytes, until the queue is empty or ctx ends. Lines that could not be
// sent for a retryable reason stay queued, in order. After the first
// request it starts no other that would likely not finish before ctx's
// deadline, judging by the one before, so that a slow Loki costs queued
// lines, not lines taken and cut off mid-request. The caller holds the gate.
func (s *shipper) flush(ctx context.Context, maxBytes int) error {
	if ctx.Err() != nil {
		return ctx.Err()
	}
	if s.now().Before(s.notBefore) {
		return errors.New("loki asked to wait (Retry-After)")
	}
	s.queueStats(false)
	size := maxBytes
	if s.breakerOpen() {
		size = min(probeBytes, maxBytes) // small first, likely done before a preemption
	}
	deadline, hasDeadline := ctx.Deadline()
	var last time.Duration
	for limit := s.batch.queuedBytes(); limit > 0; size = maxBytes {
		if ctx.Err() != nil || (hasDeadline && time.Until(deadline) < last) {
			break
		}
		es := s.batch.take(size)
		if len(es) == 0 {
			break
		}
		limit -= sizeOf(es)
		start := time.Now()
		done, err := s.push(ctx, es)
		s.batch.requeue(es[done:])
		if err != nil {
			if !errors.Is(ctx.Err(), context.Canceled) { // preempted is not failed
				s.noteFlush(false)
			}
			return err
		}
		s.noteFlush(true)
		last = time.Since(start)
	}
	return nil
}

// noteFlush keeps the circuit breaker's state: after breakerThreshold
// failed flushes in a row it opens for a cool-down that doubles with each
// failed trial, up to breakerMaxCooldown; a successful push closes it.
func (s *shipper) noteFlush(ok bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if ok {
		s.failures, s.cooldown = 0, 0
		return
	}
	if s.failures++; s.failures >= breakerThreshold {
		s.cooldown = min(max(2*s.cooldown, breakerCooldown), breakerMaxCooldown)
		s.retryAt = s.now().Add(s.cooldown)
	}
}

// queueStats adds a stats line to the batch if the counters of trouble
// changed since the last one, or always if final. It returns the counters
// it reported.
func (s *shipper) queueStats(final bool) counters {
	c := s.batch.counters()
	s.mu.Lock()
	r := s.reported
	changed := c.retries != r.retries || c.truncated != r.truncated || c.droppedFull != r.droppedFull ||
		c.droppedLoki != r.droppedLoki || c.droppedAtExit != r.droppedAtExit || c.droppedByLambda != r.droppedByLambda
	if !changed && !final {
		s.mu.Unlock()
		return c
	}
	s.reported = c
	s.statsSeq++
	seq := s.statsSeq
	s.mu.Unlock()
	line := fmt.Sprintf("loki-extension stats seq=%d final=%t sent=%d retries=%d truncated=%d "+
		"dropped_buffer_full=%d dropped_rejected=%d dropped_too_old=%d dropped_shutdown=%d dropped_by_lambda=%d",
		seq, final, c.sent, c.retries, c.truncated, c.droppedFull, c.droppedLoki, c.droppedTooOld, c.droppedAtExit, c.droppedByLambda)
	s.batch.addReport(entry{ts: s.now().UnixNano(), line: line, src: sourceExtension,
		meta: metadata{eventType: "stats"}, report: true})
	return c
}

// push sends es in one request (halves on 413). It settles the entries it
// is done with, es[:done], counting them as sent or dropped, and leaves the
// rest, not sent for a retryable reason, to the caller; then err says why.
func (s *shipper) push(ctx context.Context, es []entry) (done int, err error) {
	s.encode(es)
	status, body, err := s.send(ctx)
	if err != nil {
		return 0, err
	}
	lines := int64(lineCount(es))
	switch {
	case status/100 == 2:
		s.batch.count(func(c *counters) { c.sent += lines })
	case status == http.StatusRequestEntityTooLarge && len(es) > 1:
		half := len(es) / 2
		if done, err := s.push(ctx, es[:half]); err != nil {
			return done, err
		}
		done, err := s.push(ctx, es[half:])
		return half + done, err
	case status == http.StatusBadRequest:
		rejected, tooOld := rejectedLines(body, int(lines))
		s.batch.count(func(c *counters) {
			c.sent += lines - int64(rejected)
			c.droppedLoki += int64(rejected)
			c.droppedTooOld += int64(tooOld)
		})
		s.log.once("push 400", "loki rejected %d of %d lines (400): %s", rejected, lines, firstLine(body))
	default:
		s.batch.count(func(c *counters) { c.droppedLoki += lines })
		msg := fmt.Sprintf("loki answered %d %s, dropping %d lines", status, http.StatusText(status), lines)
		if line := firstLine(body); line != "" {
			msg += ": " + line
		}
		s.log.once("push "+strconv.Itoa(status), "%s%s", msg, hint(status))
	}
	s.batch.settle(es)
	return len(es), nil
}

// hint tells what to check for a status that retrying can't fix.
func hint(status int) string {
	switch status {
	case http.StatusUnauthorized, http.StatusForbidden:
		return " (check LOKI_USERNAME and LOKI_PASSWORD, LOKI_BEARER_TOKEN or LOKI_TENANT_ID)"
	case http.StatusNotFound, http.StatusMethodNotAllowed:
		return " (check LOKI_URL)"
	}
	return ""
}

// send posts the encoded body, retrying connection errors, 429 and 5xx with
// exponential backoff and jitter while ctx allows. It returns the final
// status and the start of its body, or an error if no final answer came.
func (s *shipper) send(ctx context.Context) (int, string, error) {
	delay := retryBaseDelay
	resetRetried, noted := false, false
	for {
		status, retryAfter, body, err := s.post(ctx)
		if err == nil && !retryable(status) {
			return status, body, nil
		}
		perr := &pushError{status: status, body: body, err: err}
		if errors.Is(ctx.Err(), context.Canceled) || (noted && ctx.Err() != nil) {
			return 0, "", perr // preempted, or out of time after a failure told already
		}
		if err != nil {
			perr.status = -1
			// A connection that died in a freeze fails at once; one
			// immediate retry on a fresh connection is not a failure.
			if !resetRetried && ctx.Err() == nil && isConnReset(err) {
				resetRetried = true
				s.transport.CloseIdleConnections()
				continue
			}
		}
		s.noteFailure(perr)
		noted = true
		wait := delay/2 + rand.N(delay/2+1)
		if retryAfter > 0 {
			wait = retryAfter
			s.notBefore = s.now().Add(retryAfter) // later flushes wait too
		}
		if d, ok := ctx.Deadline(); ctx.Err() != nil || (ok && time.Until(d) < wait) {
			return 0, "", perr
		}
		select {
		case <-ctx.Done():
			return 0, "", perr
		case <-time.After(wait):
		}
		s.batch.count(func(c *counters) { c.retries++ })
		delay = min(delay*2, retryMaxDelay)
	}
}

// post makes one push request with the encoded body.
func (s *shipper) post(ctx context.Context) (status int, retryAfter time.Duration, body string, err error) {
	if now := s.now(); !s.lastPush.IsZero() && now.Sub(s.lastPush) > idleReconnect {
		s.transport.CloseIdleConnections() // likely dead after a freeze
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, s.target.pushURL, bytes.NewReader(s.body.Bytes()))
	if err != nil {
		return 0, 0, "", err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Content-Encoding", "gzip")
	req.Header.Set("User-Agent", s.userAgent)
	if s.target.authorization != "" {
		req.Header.Set("Authorization", s.target.authorization)
	}
	if s.target.tenant != "" {
		req.Header.Set("X-Scope-OrgID", s.target.tenant)
	}
	resp, err := s.client.Do(req)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err // its text holds the URL; keep secrets out of messages
		}
		return 0, 0, "", fmt.Errorf("push to %s: %w", redactedURL(s.target.pushURL), err)
	}
	defer resp.Body.Close()
	s.lastPush = s.now()
	if resp.StatusCode/100 == 2 {
		io.Copy(io.Discard, io.LimitReader(resp.Body, maxResponseBody))
		return resp.StatusCode, 0, "", nil
	}
	b, _ := io.ReadAll(io.LimitReader(resp.Body, maxResponseBody))
	return resp.StatusCode, parseRetryAfter(resp.Header.Get("Retry-After"), s.now()), string(b), nil
}

// noteFailure reports a retryable failure, once per kind.
func (s *shipper) noteFailure(err *pushError) {
	kind := "push transport"
	if err.status > 0 {
		kind = "push " + strconv.Itoa(err.status)
	}
	s.log.once(kind, "push to loki failed, will retry: %v", err)
}

// encode writes the gzip-compressed JSON push request for es into s.body.
// Streams are grouped by source; within a stream entries keep their order.
func (s *shipper) encode(es []entry) {
	s.body.Reset()
	s.zw.Reset(&s.body)
	b := append(s.scratch[:0], `{"streams":[`...)
	first := true
	for src := range numSources {
		n := 0
		for i := range es {
			if es[i].src != src {
				continue
			}
			if n == 0 {
				if !first {
					b = append(b, ',')
				}
				first = false
				b = append(b, `{"stream":`...)
				b = append(b, s.streams[src]...)
				b = append(b, `,"values":[`...)
			} else {
				b = append(b, ',')
			}
			n++
			b = appendValue(b, &es[i])
			if len(b) >= 32<<10 {
				s.zw.Write(b)
				b = b[:0]
			}
		}
		if n > 0 {
			b = append(b, "]}"...)
		}
	}
	b = append(b, "]}"...)
	s.zw.Write(b)
	s.zw.Close()
	s.scratch = b[:0]
}

// appendValue appends one ["<ns>","<line>",{metadata}] value.
func appendValue(b []byte, e *entry) []byte {
	b = append(b, `["`...)
	b = strconv.AppendInt(b, e.ts, 10)
	b = append(b, `",`...)
	if e.escaped {
		b = append(b, '"')
		b = append(b, e.line...)
		b = append(b, '"')
	} else {
		b = appendJSONString(b, e.line)
	}
	m := &e.meta
	if m.requestID != "" || m.traceID != "" || m.level != "" || m.eventType != "" {
		b = append(b, ",{"...)
		sep := false
		for _, kv := range [...]struct{ k, v string }{
			{"request_id", m.requestID}, {"trace_id", m.traceID}, {"level", m.level}, {"event_type", m.eventType},
		} {
			if kv.v == "" {
				continue
			}
			if sep {
				b = append(b, ',')
			}
			sep = true
			b = append(b, '"')
			b = append(b, kv.k...)
			b = append(b, `":`...)
			b = appendJSONString(b, kv.v)
		}
		b = append(b, '}')
	}
	return append(b, ']')
}

// appendJSONString appends s as a JSON string. Invalid UTF-8 becomes U+FFFD,
// as encoding/json does, so the request is always valid JSON.
func appendJSONString(b []byte, s string) []byte {
	const hex = "0123456789abcdef"
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if c >= 0x20 && c != '"' && c != '\\' {
				i++
				continue
			}
			b = append(b, s[start:i]...)
			switch c {
			case '"', '\\':
				b = append(b, '\\', c)
			case '\n':
				b = append(b, '\\', 'n')
			case '\r':
				b = append(b, '\\', 'r')
			case '\t':
				b = append(b, '\\', 't')
			default:
				b = append(b, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xf])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			b = append(b, s[start:i]...)
			b = append(b, `\ufffd`...)
			i++
			start = i
			continue
		}
		i += size
	}
	b = append(b, s[start:]...)
	return append(b, '"')
}

// retryable reports whether a push answered with status may succeed later.
func retryable(status int) bool {
	return status == http.StatusTooManyRequests || status >= 500
}

// isConnReset reports whether err is a connection that the peer closed,
// as happens to pooled connections after a freeze.
func isConnReset(err error) bool {
	return errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE) ||
		errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF)
}

// parseRetryAfter reads a Retry-After header: seconds or an HTTP date.
func parseRetryAfter(v string, now time.Time) time.Duration {
	if v == "" {
		return 0
	}
	if secs, err := strconv.Atoi(v); err == nil && secs > 0 {
		return time.Duration(min(secs, 3600)) * time.Second
	}
	if t, err := http.ParseTime(v); err == nil && t.After(now) {
		return min(t.Sub(now), time.Hour)
	}
	return 0
}

// rejectedLines reads a Loki 400 answer to a push of n lines and returns how
// many lines were rejected, and how many of those for their age. Loki
// writes one line per rejected entry, or a "total ignored: N out of M"
// summary per stream; an answer it can't read counts all n.
func rejectedLines(body string, n int) (rejected, tooOld int) {
	old := strings.Contains(body, "too old") || strings.Contains(body, "too far behind")
	const total = "total ignored: "
	for rest := body; ; {
		i := strings.Index(rest, total)
		if i < 0 {
			break
		}
		rest = rest[i+len(total):]
		digits := len(rest) - len(strings.TrimLeft(rest, "0123456789"))
		k, _ := strconv.Atoi(rest[:digits])
		rejected += min(max(k, 0), n)
	}
	if !strings.Contains(body, total) {
		for line := range strings.SplitSeq(body, "\n") {
			if strings.Contains(line, "for stream") {
				rejected++
			}
		}
	}
	if rejected <= 0 || rejected > n {
		rejected = n
	}
	if old {
		tooOld = rejected
	}
	return rejected, tooOld
}

// firstLine returns the first line of a response body, shortened.
func firstLine(body string) string {
	line, _, _ := strings.Cut(strings.TrimSpace(body), "\n")
	if len(line) > 200 {
		line = line[:200] + "…"
	}
	return line
}

// redactedURL returns u without credentials and query.
func redactedURL(u string) string {
	p, err := url.Parse(u)
	if err != nil {
		return "LOKI_URL"
	}
	p.User, p.RawQuery, p.Fragment = nil, "", ""
	return p.String()
}
