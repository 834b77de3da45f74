package main

import (
	"bytes"
	"cmp"
	"compress/gzip"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json/jsontext"
	"errors"
	"fmt"
	"io"
	"maps"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"time"
	"unicode/utf8"
)

const (
	pushPath = "/loki/api/v1/push"

	// requestBytes caps the entries (by cost) of one push request, up to
	// four times that while pushes take longer than slowPush. That much
	// waiting is compressed into a request even while every slot is busy:
	// compressed, it holds a fifth of the memory.
	requestBytes, slowPush = 1 << 20, 250 * time.Millisecond
	// probeEvery: after this many waits that ended as soon as the lines
	// were on the wire, for a Loki slower than the wait, one waits again.
	probeEvery = 10
	// maxInFlight requests may be unanswered at once. New lines wait for
	// a request in flight unless the end of an invocation wants them, so a
	// slow Loki gets fewer, larger requests, and a far one several at once.
	maxInFlight = 4
	// pushTimeout: a request unanswered for this long while the
	// environment runs (frozen time does not count) is taken as lost, and
	// sent again with the same bytes.
	pushTimeout = 30 * time.Second
	// failureThreshold failed attempts in a row make the end of an
	// invocation stop waiting on Loki, until a push succeeds again.
	failureThreshold = 3
	// retryBaseDelay and retryMaxDelay shape the exponential backoff;
	// maxRetryAfter caps what a Retry-After header may ask for.
	retryBaseDelay, retryMaxDelay, maxRetryAfter = 100 * time.Millisecond, 10 * time.Second, 30 * time.Second
	// idleReconnect: connections idle this long may have died in a freeze;
	// they are dropped before the next push.
	idleReconnect = 30 * time.Second
	// maxResponseBody is how much of a Loki error answer is read.
	maxResponseBody = 64 << 10
	// gzipLevel: BestSpeed takes half the CPU of the default level for 6 %
	// more bytes on the wire (BenchmarkEncode: 0.135 vs 0.127 of the lines).
	gzipLevel = gzip.BestSpeed
	// statusBlocked is Loki's answer when ingestion is blocked by policy:
	// a 2xx that stored nothing.
	statusBlocked = 260
)

// lokiTarget is where and how to push.
type lokiTarget struct {
	pushURL       string   // full push URL, without credentials
	authorization string   // value of the Authorization header, or ""
	secrets       *secrets // if set, it has the Authorization header
	tenant        string   // X-Scope-OrgID, or ""
	labels        map[string]string
	roots         *x509.CertPool // LOKI_CA_FILE and the system's; nil: the system's
}

// request is one push request. It is encoded once and sent again with the
// same bytes until Loki answers it, so that Loki can drop what it already
// has.
type request struct {
	body   []byte // gzip-compressed JSON
	lines  int    // log lines in it; 0 for a stats line
	last   int64  // the batch's sequence number of its last line
	header string // the Authorization header it goes with, taken at launch

	// While in flight (started is not zero):
	started time.Time
	awake   time.Duration // time in flight while the environment ran
	freezes int64         // shipper.freezes at the start
	written atomic.Bool   // the whole request is on the wire
	cancel  context.CancelFunc
	// cancelled for pushTimeout; a transport error was retried at once
	timedOut, quickRetried bool
}

// result is the outcome of one attempt to send a request.
type result struct {
	r          *request
	status     int
	retryAfter time.Duration
	body       string // the start of an error answer
	err        error  // no answer
}

// waiter is the event loop waiting for the lines up to mark.
type waiter struct {
	mark            int64
	since, deadline time.Time
	final, slow     bool          // SHUTDOWN: wait whatever Loki does; Loki answers after deadline
	done            chan struct{} // closed when the wait is over
}

// shipper pushes the batch to Loki. One goroutine, run, owns the requests,
// the retry schedule and the wait of the event loop; the event loop talks
// to it with flush, kick, pause and resume, and ends it with stop.
type shipper struct {
	target    lokiTarget
	client    *http.Client
	batch     *batch
	log       *onceLogger
	userAgent string
	streams   [numSources][]byte // JSON of each stream's label set
	now       func() time.Time
	interval  time.Duration // lines wait at most about this long

	waiters      chan *waiter
	kicks, wrote chan struct{} // capacity 1: send what is queued now; a request is on the wire
	results      chan result   // capacity maxInFlight
	cancel       context.CancelFunc
	stopped      chan struct{} // closed when run returns

	// Set by the event loop: the environment may be frozen while it is in
	// /next (never on Managed Instances).
	freezes atomic.Int64 // times it went to /next
	inNext  atomic.Bool

	// Owned by run (then by stop's caller).
	queue    []*request // not yet answered, oldest first
	inFlight int
	waiting  []*waiter
	failures int              // failed attempts in a row
	delay    time.Duration    // the last backoff
	retryAt  time.Time        // no attempt before this
	took     [2]time.Duration // the last successful pushes, newest first
	skipped  int              // waits ended for a slow Loki since the last probe
	lastPush time.Time
	zw       *gzip.Writer // compresses into out the request built in json
	out      bytes.Buffer
	json     []byte
	labels   []byte   // of the last stream added to json; nil: none yet
	reported counters // as told by the last stats line
	statsSeq int
}

// newShipper returns a shipper for target that drains b. Lines wait at
// most about interval before a push.
func newShipper(target lokiTarget, b *batch, log *onceLogger, version string, interval time.Duration) *shipper {
	// No timeout on the client: a push may go on across a freeze, and its
	// answer is read after the thaw. run ends requests that get no answer.
	tr := &http.Transport{
		Proxy:               http.ProxyFromEnvironment,
		DialContext:         (&net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		TLSHandshakeTimeout: 10 * time.Second,
		MaxIdleConnsPerHost: maxInFlight,
		IdleConnTimeout:     idleReconnect,
		DisableCompression:  true,
		TLSClientConfig:     &tls.Config{RootCAs: target.roots},
	}
	s := &shipper{
		target:    target,
		client:    &http.Client{Transport: tr},
		batch:     b,
		log:       log,
		userAgent: "loki-extension/" + version,
		now:       time.Now,
		interval:  interval,
		waiters:   make(chan *waiter),
		kicks:     make(chan struct{}, 1),
		wrote:     make(chan struct{}, 1),
		results:   make(chan result, maxInFlight),
		stopped:   make(chan struct{}),
	}
	s.zw, _ = gzip.NewWriterLevel(io.Discard, gzipLevel)
	for src := range numSources {
		s.streams[src] = streamJSON(target.labels, src)
	}
	return s
}

// start runs the shipper until stop.
func (s *shipper) start(ctx context.Context) {
	ctx, s.cancel = context.WithCancel(ctx)
	go s.run(ctx)
}

// flush asks for the lines up to mark to be sent, and waits until Loki has
// answered for all of them, until ctx ends, or until the shipper finds
// waiting pointless: Loki keeps failing, or answers more slowly than ctx
// leaves time for. Requests go on either way, across a freeze if need be.
// A final flush (SHUTDOWN) waits whatever Loki does, but ends early
// enough for one more push, the stats line, before the deadline.
func (s *shipper) flush(ctx context.Context, mark int64, final bool) {
	deadline, ok := ctx.Deadline()
	if !ok {
		deadline = s.now().Add(maxInvocation)
	}
	w := &waiter{mark: mark, since: s.now(), deadline: deadline, final: final, done: make(chan struct{})}
	select {
	case s.waiters <- w:
	case <-ctx.Done():
		return
	}
	select {
	case <-w.done:
	case <-ctx.Done():
	}
}

// kick asks for what is queued to be sent now, without waiting.
func (s *shipper) kick() { notify(s.kicks) }

// pause tells the shipper that the event loop goes to /next, after which
// the environment may freeze; resume, that /next returned.
func (s *shipper) pause() {
	s.freezes.Add(1)
	s.inNext.Store(true)
}

func (s *shipper) resume() { s.inNext.Store(false) }

// run sends requests and reads their answers until ctx ends.
func (s *shipper) run(ctx context.Context) {
	defer close(s.stopped)
	tick := time.NewTicker(s.interval / 2)
	defer tick.Stop()
	watch := time.NewTicker(time.Second)
	defer watch.Stop()
	wake := time.NewTimer(time.Hour) // for a retry, or the end of a wait
	defer wake.Stop()
	lastWatch := s.now()
	for {
		urgent := false
		select {
		case <-ctx.Done():
			return
		case w := <-s.waiters:
			s.release(false) // an earlier wait that timed out tells the latency
			if w.slow = !w.final && s.now().Add(s.latency()).After(w.deadline); w.slow {
				s.skipped++
			}
			if s.skipped > probeEvery {
				w.slow, s.skipped = false, 0 // wait: has Loki got faster?
			}
			s.waiting = append(s.waiting, w)
			urgent = true
		case <-s.kicks:
			urgent = true
		case res := <-s.results:
			s.settle(res)
		case now := <-watch.C:
			s.watch(min(now.Sub(lastWatch), 2*time.Second)) // a freeze counts as a tick
			lastWatch = now
		case <-tick.C:
		case <-s.batch.ready:
		case <-s.wrote:
		case <-wake.C:
		}
		s.release(false) // a wait on a failing Loki ends before any work
		s.send(ctx, urgent)
		s.release(true)
		now, next := s.now(), s.now().Add(time.Hour)
		if s.retryAt.After(now) && len(s.queue) > s.inFlight {
			next = s.retryAt
		}
		for _, w := range s.waiting {
			if s.end(w).Before(next) {
				next = s.end(w)
			}
		}
		wake.Reset(next.Sub(now))
	}
}

// end is when the wait w is over at the latest: its deadline, less, for
// a final one, the time the stats line takes.
func (s *shipper) end(w *waiter) time.Time {
	if !w.final {
		return w.deadline
	}
	return w.deadline.Add(-min(max(s.latency(), 50*time.Millisecond)+50*time.Millisecond, w.deadline.Sub(w.since)/4))
}

// release ends the waits that are over: their lines are answered for,
// their time is up, Loki keeps failing, refused credentials that are being
// fetched again, or asked to wait past the deadline, or, once

// sent is true and the requests holding them are on the wire, Loki answers
// too slowly for them. A wait whose time ran out while its lines were on
// the wire tells that Loki takes longer than that.
func (s *shipper) release(sent bool) {
	now := s.now()
	s.waiting = slices.DeleteFunc(s.waiting, func(w *waiter) bool {
		settled, timeUp := s.settled(w.mark), !now.Before(s.end(w))
		slow := sent && w.slow && !s.holding(w.mark, false)
		_, missing, failing := s.auth() // missing after a refusal: a fetch is slow
		hopeless := s.failures >= failureThreshold || s.retryAt.After(w.deadline) || missing && (failing || s.failures > 0)

		if !(settled || timeUp || !w.final && (slow || hopeless)) {
			return false
		}
		if timeUp && !settled && !w.final && s.holding(w.mark, true) {
			s.took = [2]time.Duration{now.Sub(w.since) * 5 / 4, s.took[0]} // Loki takes longer than that
		}
		close(w.done)
		return true
	})
	for _, w := range s.waiting {
		// SHUTDOWN: one last attempt before the deadline beats waiting
		// past it, whatever Retry-After asked for.
		last := s.end(w).Add(-max(2*s.latency(), 100*time.Millisecond))
		if w.final && s.retryAt.After(last) && now.Before(last) {
			s.retryAt = last
		}
	}
}

// settled reports whether Loki has answered for every line up to mark.
func (s *shipper) settled(mark int64) bool {
	if _, _, taken := s.batch.waiting(); taken < mark {
		return false
	}
	for _, r := range s.queue {
		if r.lines > 0 && r.last-int64(r.lines) < mark {
			return false
		}
	}
	return true
}

// holding reports whether a request in flight, written out or not, holds
// lines up to mark.
func (s *shipper) holding(mark int64, written bool) bool {
	return slices.ContainsFunc(s.queue, func(r *request) bool {
		return r.lines > 0 && r.last-int64(r.lines) < mark && !r.started.IsZero() && r.written.Load() == written
	})
}

// requestSize is the entry cost a new request takes: more while Loki is
// slow, so that throughput keeps up with fewer requests.
func (s *shipper) requestSize() int {
	return requestBytes * int(min(max(s.latency()/slowPush, 1), 4))
}

// auth returns the Authorization header ("" for none), and whether it is
// kept in AWS and not fetched yet, or the last fetch failed.
func (s *shipper) auth() (header string, missing, failing bool) {
	if s.target.secrets == nil {
		return s.target.authorization, false, false
	}
	header, failing = s.target.secrets.authorization()
	return header, header == "", failing
}

// latency is how long recent pushes took: the shorter of the last two, so
// that one slow answer (a new connection, say) changes nothing.
func (s *shipper) latency() time.Duration { return min(s.took[0], s.took[1]) }

// send starts requests while slots are free: those waiting first, oldest
// first, then a new one from the batch when that is worth it: the event
// loop asks, or the lines have waited, or they fill a request. Lines of
// an invocation that are already in flight start nothing new. While Loki
// fails, one request at a time probes it; at SHUTDOWN, twice the usual
// number go at once.
func (s *shipper) send(ctx context.Context, urgent bool) {
	slots := maxInFlight
	switch {
	case slices.ContainsFunc(s.waiting, func(w *waiter) bool { return w.final }):
		slots = 2 * maxInFlight // SHUTDOWN: everything, now
	case s.failures > 0:
		slots = 1
	}
	if _, missing, _ := s.auth(); missing || s.now().Before(s.retryAt) {
		slots = 0
	}
	for s.inFlight < slots {
		i := slices.IndexFunc(s.queue, func(r *request) bool { return r.started.IsZero() })
		if i < 0 {
			queued, age, taken := s.batch.waiting()
			wanted := slices.ContainsFunc(s.waiting, func(w *waiter) bool { return w.mark > taken })
			if queued == 0 || !(urgent || wanted || age >= s.interval/2 || queued >= s.requestSize()) {
				break
			}
			s.form()
			i = len(s.queue) - 1
		}
		s.launch(ctx, s.queue[i])
	}
	for queued, _, _ := s.batch.waiting(); queued >= s.requestSize(); queued, _, _ = s.batch.waiting() {
		s.form() // compress what waits behind busy slots
	}
}

// form takes the oldest queued entries into a new request, after the
// stats line if the counters of trouble changed.
func (s *shipper) form() {
	if r := s.stats(false); r != nil {
		i := slices.IndexFunc(s.queue, func(q *request) bool { return q.lines == 0 && q.started.IsZero() })
		if i >= 0 { // one stats line waits: the newest counters say it all
			s.batch.hold(-cap(s.queue[i].body))
			s.queue = slices.Delete(s.queue, i, i+1)
		}
		s.queue = append(s.queue, r)
		s.batch.hold(cap(r.body))
	}
	es, last := s.batch.take(s.requestSize())
	if len(es) == 0 {
		return
	}
	r := &request{body: s.encode(es), lines: len(es), last: last}
	clear(es) // let the lines go
	s.batch.hold(cap(r.body))
	s.queue = append(s.queue, r)
}

// launch sends r in its own goroutine; the answer comes back to run.
func (s *shipper) launch(ctx context.Context, r *request) {
	if !s.lastPush.IsZero() && s.now().Sub(s.lastPush) > idleReconnect {
		s.client.CloseIdleConnections() // likely dead after a freeze
	}
	ctx, r.cancel = context.WithCancel(context.WithoutCancel(ctx)) // stop lets it go on
	r.started, r.awake, r.timedOut, r.freezes = s.now(), 0, false, s.freezes.Load()
	r.header, _, _ = s.auth()
	r.written.Store(false)
	s.inFlight++
	go func() { s.results <- s.post(ctx, r) }()
}

// watch adds dt to the time in flight of the requests, unless the
// environment may be frozen, and cancels those in flight too long.
func (s *shipper) watch(dt time.Duration) {
	if s.inNext.Load() {
		return
	}
	for _, r := range s.queue {
		if r.started.IsZero() || r.timedOut {
			continue
		}
		if r.awake += dt; r.awake > pushTimeout {
			r.timedOut = true
			r.cancel()
		}
	}
}

// settle takes the outcome of an attempt: the request is done with, or
// waits for another attempt.
func (s *shipper) settle(res result) {
	r := res.r
	s.inFlight--
	r.cancel()
	now := s.now()
	took, froze := now.Sub(r.started), r.freezes != s.freezes.Load() || s.inNext.Load()
	r.started, s.lastPush = time.Time{}, now
	switch {
	case errors.As(res.err, new(*tls.CertificateVerificationError)):
		s.answered(r, res) // a configuration problem: not retried
		s.remove(r)
	case res.err != nil && !r.timedOut && !r.quickRetried:
		// A connection or a timer may have died in a freeze: one retry at
		// once, on a fresh connection, is not a failure.
		r.quickRetried = true
		s.client.CloseIdleConnections()
	case res.err != nil:
		if r.timedOut {
			res.err = fmt.Errorf("no answer from loki in %v", pushTimeout)
		}
		s.fail(r, "transport", res.err, 0)
	case (res.status == http.StatusUnauthorized || res.status == http.StatusForbidden) && s.target.secrets != nil:
		if header, _, _ := s.auth(); header == r.header {
			s.target.secrets.refresh() // rotated? the next attempt takes what it fetches
		}
		s.fail(r, strconv.Itoa(res.status), fmt.Errorf("status %d: %s", res.status, firstLine(res.body)), 0)
		s.retryAt = time.Time{} // the fetch, not a backoff, holds it back

	case res.status == http.StatusRequestEntityTooLarge && s.split(r):
	case retryable(res.status) || (res.retryAfter > 0 && res.status/100 != 2):
		s.fail(r, strconv.Itoa(res.status), fmt.Errorf("status %d: %s", res.status, firstLine(res.body)), res.retryAfter)
	default:
		s.answered(r, res)
		s.remove(r)
		s.failures, s.delay, s.retryAt = 0, 0, time.Time{}
		if res.status/100 == 2 && !froze {
			s.took = [2]time.Duration{took, s.took[0]}
		}
	}
}

// fail schedules the next attempt after a failed one: after Retry-After
// if Loki sent one (capped), else after an exponential backoff with jitter.
func (s *shipper) fail(r *request, kind string, err error, retryAfter time.Duration) {
	r.quickRetried = false
	s.failures++
	s.batch.count(func(c *counters) { c.retries++ })
	s.log.once("push "+kind, "push to loki failed, will retry: %v", err)
	s.delay = min(max(2*s.delay, retryBaseDelay), retryMaxDelay)
	wait := s.delay/2 + rand.N(s.delay/2+1)
	if retryAfter > 0 {
		wait = min(retryAfter, maxRetryAfter)
	}
	s.retryAt = s.now().Add(wait)
}

// remove drops r from the queue.
func (s *shipper) remove(r *request) {
	s.queue = slices.DeleteFunc(s.queue, func(q *request) bool { return q == r })
	s.batch.hold(-cap(r.body))
}

// answered counts the lines of a request Loki answered with a status that
// another attempt would not change.
func (s *shipper) answered(r *request, res result) {
	lines, status := int64(r.lines), res.status
	dropped, tooOld := lines, 0 // of lines
	switch {
	case res.err != nil:
		s.log.once("push tls", "dropping %d lines: %v (check LOKI_URL and LOKI_CA_FILE)", lines, res.err)
	case status == statusBlocked:
		s.log.once("push 260", "loki answered 260: ingestion is blocked for this tenant; dropping %d lines", lines)
	case status/100 == 2:
		dropped = 0
	case status == http.StatusBadRequest:
		var rejected int
		rejected, tooOld = rejectedLines(res.body, int(lines))
		dropped = int64(rejected)
		s.log.once("push 400", "loki rejected %d of %d lines (400): %s", rejected, lines, firstLine(res.body))
	default:
		check := map[int]string{401: "LOKI_USERNAME and LOKI_PASSWORD, LOKI_BEARER_TOKEN or LOKI_TENANT_ID", 404: "LOKI_URL"}
		check[403], check[405] = check[401], check[404]
		s.log.once("push "+strconv.Itoa(status), "loki answered %d %s, dropping %d lines (check %s): %s",
			status, http.StatusText(status), lines, cmp.Or(check[status], "Loki's logs"), firstLine(res.body))
	}
	s.batch.count(func(c *counters) {
		c.sent, c.droppedLoki, c.droppedTooOld = c.sent+lines-dropped, c.droppedLoki+dropped, c.droppedTooOld+int64(tooOld)
	})
}

// stop ends run and returns how many lines were not sent: still queued,
// or in requests Loki has not answered yet (those go on, and may land
// before the process exits). Its caller then owns the shipper.
func (s *shipper) stop() int {
	s.cancel()
	<-s.stopped
	n := s.batch.discard()
	for _, r := range s.queue {
		n += r.lines
	}
	return n
}

// pushStats sends the final stats line, once stop has returned.
func (s *shipper) pushStats(ctx context.Context) {
	r := s.stats(true)
	r.header, _, _ = s.auth()
	for range 2 { // a second try on a fresh connection
		if res := s.post(ctx, r); res.err == nil || ctx.Err() != nil {
			return
		}
		s.client.CloseIdleConnections()
	}
}

// stats returns a request with the stats line if the counters of trouble
// changed since the last one, or always if final.
func (s *shipper) stats(final bool) *request {
	c, r := s.batch.counters(), s.reported
	if r.sent = c.sent; c == r && !final { // sent is no trouble
		return nil
	}
	s.reported = c
	s.statsSeq++
	line := fmt.Sprintf("loki-extension stats seq=%d final=%t sent=%d retries=%d truncated=%d "+
		"dropped_buffer_full=%d dropped_rejected=%d dropped_too_old=%d dropped_shutdown=%d dropped_by_lambda=%d dropped_filtered=%d dropped_rate_limited=%d",
		s.statsSeq, final, c.sent, c.retries, c.truncated, c.droppedFull, c.droppedLoki, c.droppedTooOld, c.droppedAtExit, c.droppedByLambda, c.droppedFiltered, c.droppedOverRate)
	return &request{body: s.encode([]entry{{ts: s.now().UnixNano(), line: line, src: sourceExtension, meta: metadata{eventType: "stats"}}})}
}

// post makes one attempt to send r.
func (s *shipper) post(ctx context.Context, r *request) result {
	res := result{r: r}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, s.target.pushURL, &wire{bytes.NewReader(r.body), s, r})
	if err != nil {
		res.err = err
		return res
	}
	req.ContentLength = int64(len(r.body))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Content-Encoding", "gzip")
	req.Header.Set("User-Agent", s.userAgent)
	for _, h := range [...][2]string{{"Authorization", r.header}, {"X-Scope-OrgID", s.target.tenant}} {
		if h[1] != "" {
			req.Header.Set(h[0], h[1])
		}
	}
	resp, err := s.client.Do(req)
	if err != nil {
		if ue, ok := errors.AsType[*url.Error](err); ok {
			err = ue.Err // its text holds the URL; keep secrets out of messages
		}
		res.err = fmt.Errorf("push to %s: %w", req.URL.Host, err) // the host has no secrets
		return res
	}
	defer resp.Body.Close()
	res.status = resp.StatusCode
	if res.status/100 == 2 && res.status != statusBlocked {
		io.Copy(io.Discard, io.LimitReader(resp.Body, maxResponseBody))
		return res
	}
	b, _ := io.ReadAll(io.LimitReader(resp.Body, maxResponseBody))
	res.body, res.retryAfter = string(b), parseRetryAfter(resp.Header.Get("Retry-After"), s.now())
	return res
}

// wire is the body of a request: read to its end, the request is on the
// wire (in the connection's buffers, at least), and run hears of it. It
// has no other method, so that the transport reads it with Read.
type wire struct {
	body *bytes.Reader
	s    *shipper
	r    *request
}

func (w *wire) Read(p []byte) (int, error) {
	n, err := w.body.Read(p)
	if err == io.EOF && !w.r.written.Swap(true) {
		notify(w.s.wrote)
	}
	return n, err
}

// split replaces r, which Loki found too large, by its two halves, in
// order. It reads the body it encoded; a single line can't be split.
func (s *shipper) split(r *request) bool {
	zr, err := gzip.NewReader(bytes.NewReader(r.body))
	if err != nil {
		return false
	}
	d := jsontext.NewDecoder(zr)
	var values [][2]jsontext.Value // stream labels and value, in order
	d.ReadToken()                  // {
	d.ReadToken()                  // "streams"
	for d.ReadToken(); d.PeekKind() == '{'; d.ReadToken() {
		d.ReadToken() // {
		d.ReadToken() // "stream": written first by encode
		labels, _ := d.ReadValue()
		labels = labels.Clone()
		d.ReadToken() // "values"
		for d.ReadToken(); d.PeekKind() == '['; {
			v, _ := d.ReadValue()
			values = append(values, [2]jsontext.Value{labels, v.Clone()})
		}
		d.ReadToken() // ]
	}
	if len(values) < 2 {
		return false
	}
	halves := [2]*request{{lines: len(values) / 2, last: r.last - int64(len(values)-len(values)/2)}, {lines: len(values) - len(values)/2, last: r.last}}
	for h, vs := range [][][2]jsontext.Value{values[:len(values)/2], values[len(values)/2:]} {
		for _, v := range vs {
			s.add(v[0], v[1])
		}
		halves[h].body = s.compressed()
	}
	a, b := halves[0], halves[1]
	i := slices.Index(s.queue, r)
	s.queue = append(s.queue[:i], append([]*request{a, b}, s.queue[i+1:]...)...)
	s.batch.hold(cap(a.body) + cap(b.body) - cap(r.body))
	return true
}

// pushURL returns the push endpoint for a base URL: the URL itself if it
// already ends with the push path, else the URL with the path appended.
func pushURL(base *url.URL) string {
	u := *base
	u.User, u.RawPath, u.Path = nil, "", strings.TrimSuffix(u.Path, "/")
	if !strings.HasSuffix(u.Path, pushPath) {
		u.Path += pushPath
	}
	return u.String()
}

// parseLabels reads LOKI_LABELS ("k=v,k2=v2") into a map and checks the
// names against Loki's rules.
func parseLabels(s string) (map[string]string, error) {
	labels := map[string]string{}
	for _, pair := range strings.Split(s, ",") {
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

// alphanumeric are the ASCII letters and digits.
const alphanumeric = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"

// validLabelName reports whether Loki's parser accepts name:
// [a-zA-Z_][a-zA-Z0-9_]*, at most 1024 bytes.
func validLabelName(name string) bool {
	return name != "" && len(name) <= 1024 && strings.Trim(name, alphanumeric+"_") == "" && !strings.ContainsAny(name[:1], alphanumeric[:10])
}

// streamJSON renders a stream's label set as a JSON object, keys sorted.
func streamJSON(labels map[string]string, src source) []byte {
	all := map[string]string{}
	maps.Copy(all, labels)
	all["source"] = src.String()
	b := []byte{'{'}
	for i, k := range slices.Sorted(maps.Keys(all)) {
		if i > 0 {
			b = append(b, ',')
		}
		b, _ = jsontext.AppendQuote(b, k)
		b = append(b, ':')
		b, _ = jsontext.AppendQuote(b, all[k])
	}
	return append(b, '}')
}

// encode returns the gzip-compressed JSON push request for es, which is
// not empty. Streams are grouped by source; within a stream entries keep
// their order.
func (s *shipper) encode(es []entry) []byte {
	var value []byte
	for src := range numSources {
		for i := range es {
			if es[i].src == src {
				value = appendValue(value[:0], &es[i])
				s.add(s.streams[src], value)
			}
		}
	}
	return s.compressed()
}

// add appends value, of the stream with labels (a JSON object), to the
// request being built in s.json, and hands what it holds to the compressor
// every 32 KiB, so that a request is never held uncompressed. A value of
// another stream than the last starts its stream.
func (s *shipper) add(labels, value []byte) {
	if s.labels != nil && len(s.json) >= 32<<10 {
		s.zw.Write(s.json)
		s.json = s.json[:0]
	}
	switch {
	case s.labels == nil:
		s.zw.Reset(&s.out)
		s.json = append(s.json[:0], `{"streams":[`...)
	case bytes.Equal(labels, s.labels):
		s.json = append(append(s.json, ','), value...)
		return
	default:
		s.json = append(s.json, "]},"...)
	}
	s.labels = labels
	s.json = append(append(append(append(s.json, `{"stream":`...), labels...), `,"values":[`...), value...)
}

// compressed ends the request being built and returns it, compressed.
func (s *shipper) compressed() []byte {
	s.zw.Write(append(s.json, "]}]}"...))
	s.zw.Close()
	body := bytes.Clone(s.out.Bytes())
	s.out.Reset()
	s.labels = nil
	return body
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
		b, _ = jsontext.AppendQuote(b, e.line) // invalid UTF-8 becomes U+FFFD
	}
	m, sep := &e.meta, ",{"
	for _, kv := range [...][2]string{{`"request_id":`, m.requestID}, {`"trace_id":`, m.traceID},
		{`"tenant_id":`, m.tenantID}, {`"level":`, e.level.String()}, {`"event_type":`, m.eventType}} {
		if kv[1] != "" {
			b, _ = jsontext.AppendQuote(append(append(b, sep...), kv[0]...), kv[1])
			sep = ","
		}
	}
	if sep == "," {
		b = append(b, '}')
	}
	return append(b, ']')

}

// retryable reports whether a push answered with status may succeed later.
func retryable(status int) bool {
	return status == http.StatusTooManyRequests || status >= 500
}

// parseRetryAfter reads a Retry-After header: seconds or an HTTP date.
func parseRetryAfter(v string, now time.Time) time.Duration {
	if secs, err := strconv.Atoi(v); err == nil && secs > 0 {
		return min(time.Duration(secs)*time.Second, maxRetryAfter)
	}
	if t, err := http.ParseTime(v); err == nil && t.After(now) {
		return min(t.Sub(now), maxRetryAfter)
	}
	return 0
}

// rejectedLines reads a Loki 400 answer to a push of n lines and returns how
// many lines were rejected, and how many of those for their age. Loki
// writes a "total ignored: N out of M" summary per stream, or one line per
// rejected entry; an answer it can't read counts all n.
func rejectedLines(body string, n int) (rejected, tooOld int) {
	parts := strings.Split(body, "total ignored: ")
	for _, part := range parts[1:] {
		k, _ := strconv.Atoi(part[:len(part)-len(strings.TrimLeft(part, "0123456789"))])
		rejected += min(max(k, 0), n)
	}
	if len(parts) == 1 {
		rejected = strings.Count(body, "for stream")
	}
	if rejected <= 0 || rejected > n {
		rejected = n
	}
	if strings.Contains(body, "too old") || strings.Contains(body, "too far behind") {
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
