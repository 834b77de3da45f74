package main

import (
	"bytes"
	"compress/gzip"
	"encoding/json"
	"fmt"
	"hash/fnv"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

const pushPath = "/loki/api/v1/push"

// fakeLoki accepts pushes and keeps them as received. It answers 204 at
// once and decodes nothing while the extension runs, so that it costs the
// measured invocations as little as possible; tally decodes afterwards.
type fakeLoki struct {
	url    string // base URL, the value of LOKI_URL
	server *http.Server
	onPush func() // called before answering a push (samples the child's RSS)
	fault  fault
	count  atomic.Int64 // pushes received

	mu     sync.Mutex // guards pushes
	pushes []push
}

// push is one request body as received.
type push struct {
	at   time.Time
	gzip bool
	body []byte
}

// startFakeLoki serves a fake Loki on a free loopback port.
func startFakeLoki(onPush func(), f fault) (*fakeLoki, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("fake Loki: %w", err)
	}
	l := &fakeLoki{url: "http://" + ln.Addr().String(), onPush: onPush, fault: f}
	l.server = &http.Server{Handler: l, ReadHeaderTimeout: 5 * time.Second}
	go l.server.Serve(ln)
	return l, nil
}

func (l *fakeLoki) close() { l.server.Close() }

// ServeHTTP stores a push and answers 204.
func (l *fakeLoki) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost || r.URL.Path != pushPath {
		http.NotFound(w, r)
		return
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, 64<<20))
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	n := int(l.count.Add(1))
	time.Sleep(l.fault.latency)
	if l.onPush != nil {
		l.onPush()
	}
	if l.fault.answer != nil {
		if status, retryAfter := l.fault.answer(n); status != http.StatusNoContent {
			if retryAfter != "" {
				w.Header().Set("Retry-After", retryAfter)
			}
			w.WriteHeader(status) // stored nothing
			return
		}
	}
	p := push{at: time.Now(), gzip: r.Header.Get("Content-Encoding") == "gzip", body: body}
	l.mu.Lock()
	l.pushes = append(l.pushes, p)
	l.mu.Unlock()
	w.WriteHeader(http.StatusNoContent)
}

// received returns the pushes so far.
func (l *fakeLoki) received() []push {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]push(nil), l.pushes...)
}

// tally is what arrived at the fake Loki, checked against the workload.
type tally struct {
	pushes    int
	wireBytes int64          // request bodies as sent (compressed for Loki's format)
	bySource  map[string]int // lines per stream "source" label, or events per type for the baseline
	arrivals  []int          // per generated line: how often it arrived
	altered   int            // function lines whose text differs from what was logged
	unknown   int            // function lines that are not from the workload
	stale     []time.Duration
}

// newTally decodes every push and checks each function line against w.
func newTally(pushes []push, w *workload) (*tally, error) {
	t := &tally{bySource: map[string]int{}, arrivals: make([]int, len(w.want))}
	for _, p := range pushes {
		t.pushes++
		t.wireBytes += int64(len(p.body))
		var err error
		if p.gzip {
			err = t.addLoki(p, w)
		} else {
			err = t.addEvents(p, w)
		}
		if err != nil {
			return nil, fmt.Errorf("push %d: %w", t.pushes, err)
		}
	}
	return t, nil
}

// addLoki reads a gzipped Loki push request.
func (t *tally) addLoki(p push, w *workload) error {
	zr, err := gzip.NewReader(bytes.NewReader(p.body))
	if err != nil {
		return fmt.Errorf("gunzip: %w", err)
	}
	var req struct {
		Streams []struct {
			Stream map[string]string
			Values [][]json.RawMessage
		}
	}
	if err := json.NewDecoder(zr).Decode(&req); err != nil {
		return fmt.Errorf("decode: %w", err)
	}
	for _, s := range req.Streams {
		src := s.Stream["source"]
		for _, v := range s.Values {
			var line string
			if len(v) < 2 || json.Unmarshal(v[1], &line) != nil {
				return fmt.Errorf("malformed value %s", v)
			}
			t.bySource[src]++
			if src == "function" {
				t.check(line, p.at, w)
			}
		}
	}
	return nil
}

// addEvents reads the baseline's push: a JSON array of telemetry events.
func (t *tally) addEvents(p push, w *workload) error {
	var events []struct {
		Type   string
		Record json.RawMessage
	}
	if err := json.Unmarshal(p.body, &events); err != nil {
		return fmt.Errorf("decode: %w", err)
	}
	for _, ev := range events {
		t.bySource[ev.Type]++
		var line string
		if ev.Type == "function" && json.Unmarshal(ev.Record, &line) == nil {
			t.check(strings.TrimSuffix(line, "\n"), p.at, w)
		}
	}
	return nil
}

// check counts the arrival of a function line that arrived at the given
// time and notes how long after its delivery that was.
func (t *tally) check(line string, at time.Time, w *workload) {
	i := strings.LastIndex(line, " seq=")
	if i < 0 {
		t.unknown++
		return
	}
	seq, err := strconv.Atoi(line[i+len(" seq="):])
	if err != nil || seq < 0 || seq >= len(w.want) {
		t.unknown++
		return
	}
	if hashLine(line) != w.want[seq] {
		t.altered++
	}
	t.arrivals[seq]++
	if t.arrivals[seq] == 1 {
		t.stale = append(t.stale, max(0, at.Sub(w.delivered[seq])))
	}
}

// lostAndDuplicated counts lines that never arrived and extra copies.
func (t *tally) lostAndDuplicated() (lost, dups int) {
	for _, n := range t.arrivals {
		if n == 0 {
			lost++
		} else {
			dups += n - 1
		}
	}
	return lost, dups
}

// hashLine is the fingerprint of a line as Loki should store it.
func hashLine(line string) uint64 {
	h := fnv.New64a()
	io.WriteString(h, line)
	return h.Sum64()
}
