package main

import (
	"fmt"
	"sync"
	"testing"

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
		return e.line
	}
	s, ok := jsonString([]byte(`"` + e.line + `"`))
	if !ok {
		panic("not a JSON string: " + e.line)
	}
	return s
}

func TestAddMakesTimestampsStrictlyIncreasingPerSource(t *testing.T) {
	b := newBatch(1<<20, 1<<20)
	b.add([]entry{
		{ts: 100, line: "a"},
		{ts: 100, line: "b"}, // same millisecond: kept after a
		{ts: 50, line: "c"},  // earlier time, later arrival: kept after b
		{ts: 100, line: "p", src: sourcePlatform},
		{ts: 200, line: "d"},
	})
	b.add([]entry{{ts: 200, line: "e"}})
	type tl struct {
		TS   int64
		Line string
	}
	var got []tl
	for _, e := range b.take(1 << 20) {
		got = append(got, tl{e.ts, e.line})
	}
	want := []tl{{100, "a"}, {101, "b"}, {102, "c"}, {100, "p"}, {200, "d"}, {201, "e"}}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
}

func TestAddDropsWhenFullAndCounts(t *testing.T) {
	b := newBatch(3*(entryOverhead+10), 1<<20)
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
	// Taken lines still count against the cap until settled.
	taken := b.take(1 << 20)
	b.add([]entry{{ts: 9, line: "line 0009."}})
	if got := b.counters().droppedFull; got != 3 {
		t.Errorf("after take: droppedFull = %d, want 3", got)
	}
	b.settle(taken)
	b.add([]entry{{ts: 10, line: "line 0010."}})
	if got := lines(b.entries); !cmp.Equal([]string{"line 0010."}, got) {
		t.Errorf("after settle: %q", got)
	}
}

func TestTakeRequeueKeepsOrder(t *testing.T) {
	b := newBatch(1<<20, 1<<20)
	for i := range 6 {
		b.add([]entry{{ts: int64(i + 1), line: fmt.Sprint(i)}})
	}
	first := b.take(2 * (entryOverhead + 1)) // two entries
	if got := lines(first); !cmp.Equal([]string{"0", "1"}, got) {
		t.Fatalf("take = %q", got)
	}
	b.add([]entry{{ts: 99, line: "6"}})
	b.requeue(first)
	if got, want := lines(b.take(1<<20)), []string{"0", "1", "2", "3", "4", "5", "6"}; !cmp.Equal(want, got) {
		t.Errorf("after requeue: %q, want %q", got, want)
	}
	if b.queued != 0 || b.inflight != sizeOf(nil)+7*(entryOverhead+1) {
		t.Errorf("queued %d, inflight %d", b.queued, b.inflight)
	}
}

func TestTakeReturnsAtLeastOneEntry(t *testing.T) {
	b := newBatch(1<<20, 1<<20)
	b.add([]entry{{ts: 1, line: string(make([]byte, 1000))}, {ts: 2, line: "x"}})
	if got := len(b.take(10)); got != 1 {
		t.Errorf("take(10) returned %d entries, want 1", got)
	}
}

func TestReadySignalsAtFlushBytes(t *testing.T) {
	b := newBatch(1<<20, 2*(entryOverhead+1))
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
			if bt.queuedBytes() > 64<<20 {
				bt.settle(bt.take(1 << 30))
			}
			mu.Unlock()
		}
	})
}
