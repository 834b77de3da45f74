package main

import (
	"hash/maphash"
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
	// Per stream, the newest time of an entry, and by a hash of line and
	// metadata the latest time given to an entry of that time.
	newest [numSources]int64
	twins  [numSources]map[uint64]int64
	seed   maphash.Seed
}

// newBatch returns a batch that holds at most capBytes and signals ready
// when flushBytes are queued.
func newBatch(capBytes, flushBytes int) *batch {
	b := &batch{capBytes: capBytes, flushBytes: flushBytes, ready: make(chan struct{}, 1), seed: maphash.MakeSeed()}
	for src := range numSources {
		b.twins[src] = map[uint64]int64{}
	}
	return b
}

// add appends entries in order. An entry that would be identical to one
// before it, which Loki would drop, moves a few nanoseconds, past the
// latest of its twins; any other keeps its time. Entries that do not fit
// are dropped and counted.
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
		b.unique(&e)
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

// unique moves e's time if an entry of its stream with the same time,
// line and metadata came before: Loki would keep only one. It checks the
// entries of the stream's newest time (lines of one millisecond share it),
// and moves e past the latest of its twins. b.mu is held.
func (b *batch) unique(e *entry) {
	twins := b.twins[e.src]
	switch {
	case e.ts > b.newest[e.src]:
		b.newest[e.src] = e.ts
		clear(twins)
	case e.ts < b.newest[e.src]:
		return // older than the stream's newest: seldom a twin
	}
	// The rest of the metadata follows from these. Two string hashes and
	// the level as a number: cheaper than one maphash.Comparable of all
	// three (25 against 45 ns a line, when the level was a string too).
	content := maphash.String(b.seed, e.line) ^ 3*maphash.String(b.seed, e.meta.requestID) ^ 5*uint64(e.level)
	if latest, ok := twins[content]; ok {
		e.ts = latest + 1
	}
	twins[content] = e.ts
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
