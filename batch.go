package main

import (
	"slices"
	"sync"
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
func (s source) String() string {
	switch s {
	case sourceFunction:
		return "function"
	case sourcePlatform:
		return "platform"
	}
	return "extension"
}

// entryOverhead approximates the memory an entry costs beyond its strings,
// so that the byte cap bounds real memory, not only line bytes.
const entryOverhead = 96

// entry is one log line bound for Loki. Its fields never change once the
// batch has accepted it, so a resend carries the same bytes and Loki drops
// what it already has.
type entry struct {
	ts   int64 // Unix nanoseconds, strictly increasing within a source
	line string
	// escaped: line is JSON string content, escapes and all, as Lambda
	// sent it (valid UTF-8, validated escapes).
	escaped bool
	src     source
	meta    metadata
	report  bool // the extension's own stats line, not counted as a line
	nbytes  int  // set by add: the bytes it holds against the cap
}

// metadata is the structured metadata of an entry; empty fields are omitted.
type metadata struct {
	requestID string
	traceID   string
	level     string
	eventType string
}

// counters are what the extension tells about its own work, in Loki and in
// its last line of output.
type counters struct {
	sent            int64 // lines Loki accepted
	retries         int64 // push attempts repeated after a retryable failure
	truncated       int64 // lines cut to the maximum line size
	droppedFull     int64 // lines refused because the buffer was full
	droppedLoki     int64 // lines Loki rejected with a 4xx
	droppedTooOld   int64 // lines Loki rejected as too old (also in droppedLoki)
	droppedAtExit   int64 // lines still buffered when SHUTDOWN's time ran out
	droppedByLambda int64 // records Lambda reported dropping (platform.logsDropped)
}

// batch is the bounded buffer between the listener and the shipper.
type batch struct {
	capBytes   int           // entries plus in-flight entries never exceed this
	flushBytes int           // queued bytes that make ready fire
	ready      chan struct{} // capacity 1; a value means "worth flushing now"

	mu       sync.Mutex // guards the fields below
	entries  []entry    // oldest first
	queued   int        // bytes of entries
	inflight int        // bytes taken by the shipper and not yet settled
	lastTS   [numSources]int64
	lastTake int   // entries taken last time: the capacity to start with
	head     int64 // how many entries were ever taken (and not put back)
	stats    counters
}

// newBatch returns a batch that holds at most capBytes and signals ready
// when flushBytes are queued.
func newBatch(capBytes, flushBytes int) *batch {
	return &batch{capBytes: capBytes, flushBytes: flushBytes, ready: make(chan struct{}, 1)}
}

// add appends entries in order. It makes timestamps strictly increasing per
// source, so that lines with the same time keep their order and none is
// taken for a duplicate by Loki. Entries that do not fit are dropped and
// counted.
func (b *batch) add(es []entry) {
	b.mu.Lock()
	if b.entries == nil {
		b.entries = make([]entry, 0, max(len(es), b.lastTake))
	}
	for i := range es {
		e := es[i]
		e.nbytes = len(e.line) + len(e.meta.requestID) + len(e.meta.traceID) +
			len(e.meta.level) + len(e.meta.eventType) + entryOverhead
		if b.queued+b.inflight+e.nbytes > b.capBytes {
			b.stats.droppedFull++
			continue
		}
		if last := b.lastTS[e.src]; e.ts <= last {
			e.ts = last + 1
		}
		b.lastTS[e.src] = e.ts
		b.entries = append(b.entries, e)
		b.queued += e.nbytes
	}
	full := b.queued >= b.flushBytes
	b.mu.Unlock()
	if full {
		select {
		case b.ready <- struct{}{}:
		default:
		}
	}
}

// addReport appends the extension's own report line, replacing one still
// queued: the newest counters say it all. It bypasses the cap, as a report
// says what the cap dropped; there is at most one queued.
func (b *batch) addReport(e entry) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if i := slices.IndexFunc(b.entries, func(e entry) bool { return e.report }); i >= 0 {
		b.queued -= b.entries[i].nbytes
		b.entries = slices.Delete(b.entries, i, i+1)
	}
	e.nbytes = len(e.line) + len(e.meta.eventType) + entryOverhead
	if last := b.lastTS[e.src]; e.ts <= last {
		e.ts = last + 1
	}
	b.lastTS[e.src] = e.ts
	b.entries = append(b.entries, e)
	b.queued += e.nbytes
}

// take removes and returns the oldest entries, up to maxBytes of them but at
// least one. They stay counted against the cap until settle or requeue.
func (b *batch) take(maxBytes int) []entry {
	b.mu.Lock()
	defer b.mu.Unlock()
	n, size := 0, 0
	for n < len(b.entries) && (n == 0 || size+b.entries[n].nbytes <= maxBytes) {
		size += b.entries[n].nbytes
		n++
	}
	taken := b.entries[:n:n]
	b.lastTake = n
	b.head += int64(n)
	if n == len(b.entries) {
		b.entries = nil
	} else {
		b.entries = b.entries[n:]
	}
	b.queued -= size
	b.inflight += size
	return taken
}

// settle releases taken entries that were delivered or dropped.
func (b *batch) settle(es []entry) {
	b.mu.Lock()
	b.inflight -= sizeOf(es)
	b.mu.Unlock()
	clear(es) // the backing array may outlive them: let the lines go
}

// requeue puts taken entries back in front of the queue, where they were,
// for the next flush.
func (b *batch) requeue(es []entry) {
	if len(es) == 0 {
		return
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	n := sizeOf(es)
	b.inflight -= n
	b.queued += n
	b.head -= int64(len(es))
	b.entries = append(es[:len(es):len(es)], b.entries...)
}

// discard drops everything queued and returns how many lines that was.
func (b *batch) discard() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	n := lineCount(b.entries)
	b.head += int64(len(b.entries))
	b.entries, b.queued = nil, 0
	return n
}

// mark returns a mark after the entries queued now; taken reports whether
// all of them have been taken since, and not put back.
func (b *batch) mark() int64 {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.head + int64(len(b.entries))
}

func (b *batch) taken(mark int64) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.head >= mark
}

// queuedBytes returns the bytes waiting to be taken.
func (b *batch) queuedBytes() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.queued
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

// lineCount counts the entries that are log lines, not reports.
func lineCount(es []entry) int {
	n := 0
	for i := range es {
		if !es[i].report {
			n++
		}
	}
	return n
}

func sizeOf(es []entry) int {
	n := 0
	for i := range es {
		n += es[i].nbytes
	}
	return n
}
