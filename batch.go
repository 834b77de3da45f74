package main

import (
	"sync"
	"time"
)

// source is where a line came from; it is the only label that varies, so
// each source is one Loki stream.
type source uint8

const (
	sourceFunction source = iota
	sourcePlatform
	sourceExtension
	numSources
)

// String returns the value of the source label.
func (s source) String() string { return [...]string{"function", "platform", "extension"}[s] }

// entrySize is the size of an entry struct (TestEntrySize checks it).
// Queued entries are charged a quarter more, for the slack of the slice
// that grows to hold them, plus their line and a little more for the
// allocator's rounding: what the Go heap really holds (TestCapCountsTheHeap).
const entrySize = 96

// entry is one log line bound for Loki. Its fields never change once the
// batch has accepted it, so a resend carries the same bytes and Loki drops
// what it already has.
type entry struct {
	ts   int64 // Unix nanoseconds
	line string
	meta metadata
	src  source
	// level is out of meta, whose padding would make an entry 8 bytes larger.
	level severity
	// escaped: line is JSON string content, escapes and all, as Lambda
	// sent it (valid UTF-8, validated escapes).
	escaped bool
}

// metadata is the structured metadata of an entry, but for its level;
// empty fields are omitted.
type metadata struct{ requestID, traceID, tenantID, eventType string }

// severity is a normalized log level; the zero value is none.
type severity uint8

func (v severity) String() string {
	return [...]string{"", "trace", "debug", "info", "warn", "error", "fatal", "critical"}[v]
}

// cost is what e holds of the heap while it is queued.
func (e *entry) cost() int { return len(e.line) + len(e.line)/16 + 8 + entrySize*5/4 }

// counters are what the extension tells about its own work, in Loki and in
// its last line of output.
type counters struct {
	sent            int64 // lines Loki accepted
	retries         int64 // push attempts repeated after a retryable failure
	truncated       int64 // lines cut to the maximum line size
	droppedFull     int64 // lines refused because the buffer was full
	droppedLoki     int64 // lines Loki rejected, or did not store (260)
	droppedTooOld   int64 // lines Loki rejected as too old (also in droppedLoki)
	droppedAtExit   int64 // lines still unsent when SHUTDOWN's time ran out
	droppedByLambda int64 // records Lambda reported dropping (platform.logsDropped)
	droppedFiltered int64 // lines below LOKI_MIN_LEVEL
	droppedOverRate int64 // lines over LOKI_MAX_BYTES_PER_SECOND
}

// batch is the bounded buffer between the listener and the shipper. Its
// cap covers the queued entries and the shipper's requests, compressed,
// that Loki has not answered yet. When it is full the newest lines are
// dropped, not the oldest: the start of a problem explains it best, and
// what waits is already compressed and in order.
type batch struct {
	capBytes   int           // queued + held never exceed this
	flushBytes int           // queued bytes that make ready fire
	ready      chan struct{} // capacity 1; a value means "worth sending now"

	mu       sync.Mutex // guards the fields below
	entries  []entry    // oldest first
	queued   int        // cost of entries
	held     int        // bytes of the shipper's unanswered requests
	oldest   time.Time  // when the oldest of entries was added
	lastTake int        // entries taken last time: the capacity to start with
	added    int64      // entries ever accepted; the last one's sequence number
	stats    counters
	newest   [numSources]int64 // per stream, the newest time of an entry
}

// newBatch returns a batch that holds at most capBytes and signals ready
// when flushBytes are queued.
func newBatch(capBytes, flushBytes int) *batch {
	return &batch{capBytes: capBytes, flushBytes: flushBytes, ready: make(chan struct{}, 1)}
}

// add appends entries in order. Entries that do not fit are dropped and
// counted. Within a stream, time increases strictly: an entry at most a
// millisecond older than the stream's newest (Lambda's times have
// millisecond precision) moves to 1 ns after it, so that Loki shows lines
// in the order they were written, and keeps identical ones apart. An
// older entry keeps its time.
func (b *batch) add(es []entry) {
	b.mu.Lock()
	if b.entries == nil {
		b.entries = make([]entry, 0, max(len(es), b.lastTake))
		b.oldest = time.Now()
	}
	for i := range es {
		e := es[i]
		if b.queued+b.held+e.cost() > b.capBytes {
			b.stats.droppedFull++
			continue
		}
		if newest := &b.newest[e.src]; e.ts >= *newest-int64(time.Millisecond) {
			e.ts = max(e.ts, *newest+1)
			*newest = e.ts
		}
		b.entries = append(b.entries, e)
		b.queued += e.cost()
		b.added++
	}
	full := b.queued >= b.flushBytes
	b.mu.Unlock()
	if full {
		notify(b.ready)
	}
}

// take removes and returns the oldest entries, up to maxBytes of them but at
// least one, and the sequence number of the last one.
func (b *batch) take(maxBytes int) ([]entry, int64) {
	b.mu.Lock()
	defer b.mu.Unlock()
	n, size := 0, 0
	for n < len(b.entries) && (n == 0 || size+b.entries[n].cost() <= maxBytes) {
		size += b.entries[n].cost()
		n++
	}
	taken := b.entries[:n:n]
	b.lastTake = n
	b.queued -= size
	if n == len(b.entries) {
		b.entries = nil
	} else { // a fresh array, so that the taken lines can go
		b.entries = append(make([]entry, 0, len(b.entries)-n), b.entries[n:]...)
	}
	return taken, b.added - int64(len(b.entries))
}

// hold counts n more (or, negative, fewer) bytes of requests against the cap.
func (b *batch) hold(n int) {
	b.mu.Lock()
	b.held += n
	b.mu.Unlock()
}

// mark returns the sequence number of the newest entry.
func (b *batch) mark() int64 {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.added
}

// waiting returns the bytes queued, how long the oldest entry has waited,
// and the sequence number of the newest entry taken: every entry up to it
// has been taken, every later one waits.
func (b *batch) waiting() (queued int, age time.Duration, taken int64) {
	b.mu.Lock()
	defer b.mu.Unlock()
	taken = b.added - int64(len(b.entries))
	if len(b.entries) == 0 {
		return 0, 0, taken
	}
	return b.queued, time.Since(b.oldest), taken
}

// discard drops everything queued and returns how many lines that was.
func (b *batch) discard() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	n := len(b.entries)
	b.entries, b.queued = nil, 0
	return n
}

// count applies f to the counters under the lock.
func (b *batch) count(f func(*counters)) {
	b.mu.Lock()
	f(&b.stats)
	b.mu.Unlock()
}

// counters returns a copy of the counters.
func (b *batch) counters() counters {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.stats
}
