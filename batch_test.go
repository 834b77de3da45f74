package main

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"runtime"
	"strconv"
	"sync"
	"testing"
	"time"
	"unsafe"

	"github.com/google/go-cmp/cmp"
)

func lines(es []entry) []string {
	var out []string
	for _, e := range es {
		out = append(out, lineText(e))
	}
	return out
}

// lineText is an entry's line as Loki will have it.
func lineText(e entry) string {
	if !e.escaped {
		return jsonRoundTrip(e.line) // invalid UTF-8: U+FFFD for each byte
	}
	var s string
	if err := json.Unmarshal([]byte(`"`+e.line+`"`), &s); err != nil {
		panic("not JSON string content: " + e.line)
	}
	return s
}

// TestAddKeepsEachStreamInOrder: within a stream, an entry at most a
// millisecond older than the newest moves to 1 ns after it, so that time
// increases strictly in the order of writing (lines of one millisecond,
// identical ones too); an older entry keeps its time; streams are apart.
func TestAddKeepsEachStreamInOrder(t *testing.T) {
	const ms = int64(time.Millisecond)
	b := newBatch(1<<20, 1<<20)
	b.add([]entry{
		{ts: 10 * ms, line: "a"},
		{ts: 10 * ms, line: "b"},                           // same time: after a
		{ts: 10 * ms, line: "a"},                           // identical to the first: after b
		{ts: 10 * ms, line: "a", src: sourcePlatform},      // another stream: its own time
		{ts: 9*ms + 2, line: "c"},                          // a millisecond older than the newest: moves too
		{ts: 9*ms + 1, line: "d"},                          // older than that: keeps its time
		{ts: 10*ms + 2, line: "e", level: levelOf("info")}, // taken: after c
		{ts: 12 * ms, line: "f"},                           // newer: keeps its time
	})
	b.add([]entry{{ts: 12 * ms, line: "f"}, {ts: 10 * ms, line: "g", src: sourcePlatform}})
	type tl struct {
		TS   int64
		Line string
	}
	var got []tl
	es, _ := b.take(1 << 20)
	for _, e := range es {
		got = append(got, tl{e.ts, e.line})
	}
	want := []tl{{10 * ms, "a"}, {10*ms + 1, "b"}, {10*ms + 2, "a"}, {10 * ms, "a"}, {10*ms + 3, "c"}, {9*ms + 1, "d"},
		{10*ms + 4, "e"}, {12 * ms, "f"}, {12*ms + 1, "f"}, {10*ms + 1, "g"}}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
	// A flood of lines in one millisecond keeps its order, one ns apart.
	var flood []entry
	for i := range 5000 {
		flood = append(flood, entry{ts: 20 * ms, line: strconv.Itoa(i % 3)})
	}
	b.add(flood)
	es, _ = b.take(1 << 30)
	for i, e := range es {
		if e.ts != 20*ms+int64(i) {
			t.Fatalf("flood entry %d at %d, want %d", i, e.ts, 20*ms+int64(i))
		}
	}
}

// tenBytes is the cost of an entry with a 10-byte line.
var tenBytes = (&entry{line: "0123456789"}).cost()

func TestAddDropsWhenFullAndCounts(t *testing.T) {
	b := newBatch(3*tenBytes, 1<<20)
	var es []entry
	for i := range 5 {
		es = append(es, entry{ts: int64(i), line: fmt.Sprintf("line %04d.", i)}) // 10 bytes each
	}
	b.add(es)
	if got, want := lines(b.entries), []string{"line 0000.", "line 0001.", "line 0002."}; !cmp.Equal(want, got) {
		t.Errorf("kept %q, want %q", got, want)
	}
	if got := b.counters().droppedFull; got != 2 {
		t.Errorf("droppedFull = %d, want 2", got)
	}
	// The shipper's requests count against the cap until it lets them go.
	b.take(1 << 20)
	b.hold(3 * tenBytes)
	b.add([]entry{{ts: 9, line: "line 0009."}})
	if got := b.counters().droppedFull; got != 3 {
		t.Errorf("while held: droppedFull = %d, want 3", got)
	}
	b.hold(-3 * tenBytes)
	b.add([]entry{{ts: 10, line: "line 0010."}})
	if got := lines(b.entries); !cmp.Equal([]string{"line 0010."}, got) {
		t.Errorf("after release: %q", got)
	}
}

func TestTakeKeepsOrderAndCounts(t *testing.T) {
	b := newBatch(1<<20, 1<<20)
	for i := range 6 {
		b.add([]entry{{ts: int64(i + 1), line: fmt.Sprint(i)}})
	}
	one := (&entry{line: "0"}).cost()
	first, last := b.take(2 * one) // two entries
	if got := lines(first); !cmp.Equal([]string{"0", "1"}, got) || last != 2 {
		t.Fatalf("take = %q, last %d", got, last)
	}
	if _, _, taken := b.waiting(); taken != 2 || b.mark() != 6 || b.queued != 4*one {
		t.Errorf("taken %d, mark %d, queued %d", taken, b.mark(), b.queued)
	}
	rest, last := b.take(1 << 20)
	if got := lines(rest); !cmp.Equal([]string{"2", "3", "4", "5"}, got) || last != 6 || b.queued != 0 {
		t.Errorf("take = %q, last %d, queued %d", got, last, b.queued)
	}
	if queued, _, taken := b.waiting(); queued != 0 || taken != 6 {
		t.Errorf("empty batch: waiting %d, taken %d, want 0 and 6", queued, taken)
	}
}

func TestTakeReturnsAtLeastOneEntry(t *testing.T) {
	b := newBatch(1<<20, 1<<20)
	b.add([]entry{{ts: 1, line: string(make([]byte, 1000))}, {ts: 2, line: "x"}})
	if got, _ := b.take(10); len(got) != 1 {
		t.Errorf("take(10) returned %d entries, want 1", len(got))
	}
}

func TestReadySignalsAtFlushBytes(t *testing.T) {
	one := (&entry{line: "a"}).cost()
	b := newBatch(1<<20, 2*one)
	b.add([]entry{{ts: 1, line: "a"}})
	select {
	case <-b.ready:
		t.Fatal("ready before flushBytes")
	default:
	}
	b.add([]entry{{ts: 2, line: "b"}})
	select {
	case <-b.ready:
	default:
		t.Fatal("not ready at flushBytes")
	}
}

func TestEntrySize(t *testing.T) {
	if got := unsafe.Sizeof(entry{}); got != entrySize {
		t.Errorf("unsafe.Sizeof(entry{}) = %d, entrySize = %d", got, entrySize)
	}
}

// TestCapCountsTheHeap: what the batch charges against its cap is what the
// Go heap holds for the queued lines, within a quarter.
func TestCapCountsTheHeap(t *testing.T) {
	for _, size := range []int{20, 150, 2000} {
		var before, after runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&before)
		b := newBatch(1<<30, 1<<30)
		es := make([]entry, 0, 100)
		for i := range 20000 {
			line := make([]byte, size/2+rand.N(size)) // lengths spread over size classes
			for j := range line {
				line[j] = 'a' + byte(j%26)
			}
			es = append(es, entry{ts: int64(i), line: string(line), meta: metadata{requestID: rid}})
			if len(es) == cap(es) {
				b.add(es)
				es = es[:0]
			}
		}
		b.add(es)
		es = nil
		runtime.GC()
		runtime.ReadMemStats(&after)
		held := float64(after.HeapAlloc) - float64(before.HeapAlloc)
		if ratio := held / float64(b.queued); ratio < 0.75 || ratio > 1.25 {
			t.Errorf("lines of about %d bytes: the heap holds %.0f bytes, the batch charges %d (ratio %.2f)", size, held, b.queued, ratio)
		}
		runtime.KeepAlive(b)
	}
}

func BenchmarkBatchAdd(b *testing.B) {
	bt := newBatch(1<<30, 1<<30)
	es := make([]entry, 100)
	for i := range es {
		es[i] = entry{ts: int64(i), line: "2024-11-25T10:15:30.100Z\t8f5c0a61-0d4e-4c1e-9f55-3c0b2c7e9a10\tINFO\tloaded 3 items from the cache"}
	}
	var mu sync.Mutex
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			bt.add(es)
			mu.Lock()
			if q, _, _ := bt.waiting(); q > 64<<20 {
				bt.take(1 << 30)
			}
			mu.Unlock()
		}
	})
}
