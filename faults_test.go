package main

import (
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// timedInvocation is invocation, also returning the time from the
// runtimeDone delivery to the extension's /next: the time it added.
func timedInvocation(f *fakeLambda, requestID string, n int) ([]string, time.Duration) {
	f.t.Helper()
	f.invoke(requestID)
	var lines []string
	events := []any{tev("platform.start", map[string]any{"requestId": requestID})}
	for i := range n {
		lines = append(lines, fmt.Sprintf("%s line %d", requestID, i))
		events = append(events, tev("function", lines[i]+"\n"))
	}
	f.deliver(events...)
	f.deliver(tev("platform.runtimeDone", map[string]any{"requestId": requestID, "status": "success"}))
	start := time.Now()
	f.awaitNext()
	return lines, time.Since(start)
}

func requestID(i int) string { return fmt.Sprintf("00000000-0000-4000-8000-%012d", i) }

// statsLine returns the counters of the last stats line in Loki.
func statsLine(t *testing.T, loki *fakeLoki) map[string]string {
	t.Helper()
	lines := loki.lines("extension")
	if len(lines) == 0 {
		t.Fatal("no stats line in Loki")
	}
	kv := map[string]string{}
	for field := range strings.FieldsSeq(lines[len(lines)-1]) {
		if k, v, ok := strings.Cut(field, "="); ok {
			kv[k] = v
		}
	}
	return kv
}

// flood delivers batches of n distinct function lines of about size bytes
// each, and returns them.
func flood(f *fakeLambda, batches, n, size int) []string {
	f.t.Helper()
	var lines []string
	for b := range batches {
		var events []any
		for i := range n {
			line := fmt.Sprintf("batch %02d line %04d %s", b, i, strings.Repeat("x", size))
			lines = append(lines, line)
			events = append(events, tev("function", line))
		}
		f.deliver(events...)
	}
	return lines
}

// outage returns a fake Loki that answers down() while the returned flag is
// set, and 204 once it is cleared.
func outage(t *testing.T, down func() int) (*fakeLoki, *atomic.Bool) {
	loki := newFakeLoki(t)
	var on atomic.Bool
	on.Store(true)
	loki.reply = func(n int, w http.ResponseWriter) int {
		if on.Load() {
			return down()
		}
		return http.StatusNoContent
	}
	return loki, &on
}

// TestHungLokiCostsAtMostTheFlushTimeout: a Loki that does not answer adds
// at most LOKI_FLUSH_TIMEOUT to an invocation; when Loki is back every line
// arrives once.
func TestHungLokiCostsAtMostTheFlushTimeout(t *testing.T) {
	f := newFakeLambda(t)
	loki, hung := outage(t, func() int {
		time.Sleep(3 * time.Second) // far past the flush timeout
		return http.StatusServiceUnavailable
	})
	x := startExtension(t, f, map[string]string{"LOKI_URL": loki.srv.URL, "LOKI_FLUSH_TIMEOUT": "200ms"})
	f.awaitNext()
	var want []string
	for i := range 5 {
		lines, added := timedInvocation(f, requestID(i), 20)
		want = append(want, lines...)
		// Generous: a flush that waited for Loki would take 3 s.
		if added > 1500*time.Millisecond {
			t.Errorf("invocation %d: the extension added %v with a hung Loki (cap 200ms)", i, added)
		}
	}
	hung.Store(false)
	// Invocations go on; the requests that hung are answered (503) and
	// sent again, and every line arrives.
	deadline := time.Now().Add(waitLimit)
	for i := 5; len(loki.lines("function")) < len(want); i++ {
		lines, _ := timedInvocation(f, requestID(i), 20)
		want = append(want, lines...)
		if time.Now().After(deadline) {
			t.Fatal("the lines did not arrive after Loki came back")
		}
		time.Sleep(100 * time.Millisecond)
	}
	if diff := cmp.Diff(want, loki.lines("function"), anyOrder); diff != "" {
		t.Errorf("lines after recovery (-want +got):\n%s", diff)
	}
	f.shutdown()
	if err := x.wait(t); err != nil {
		t.Fatal(err)
	}
	if loki.dups != 0 { // a hung push is never cut off and sent again
		t.Errorf("%d entries were sent twice", loki.dups)
	}
}

// TestBreakerStopsWaitingForLoki: while Loki fails, after three failed
// flushes the end of an invocation no longer waits on it.
func TestBreakerStopsWaitingForLoki(t *testing.T) {
	f := newFakeLambda(t)
	loki, failing := outage(t, func() int { return http.StatusInternalServerError })
	x := startExtension(t, f, map[string]string{"LOKI_URL": loki.srv.URL, "LOKI_FLUSH_TIMEOUT": "1s"})
	f.awaitNext()
	var want []string
	var added []time.Duration
	for i := range 6 {
		lines, d := timedInvocation(f, requestID(i), 5)
		want = append(want, lines...)
		added = append(added, d)
	}
	// Without the breaker each would retry for the whole second.
	if open := added[3] + added[4] + added[5]; open > time.Second {
		t.Errorf("added times %v: the breaker did not stop the waits", added)
	}
	failing.Store(false)
	f.shutdown()
	if err := x.wait(t); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(want, loki.lines("function"), anyOrder); diff != "" {
		t.Errorf("lines (-want +got):\n%s", diff)
	}
	if n := strings.Count(x.out.String(), "will retry"); n != 1 {
		t.Errorf("the failure was reported %d times, want once:\n%s", n, x.out.String())
	}
}

// TestShutdownUnderPressure: tens of thousands of lines buffered during an
// outage and a slow Loki at SHUTDOWN: the extension still exits before
// the deadline, having sent the oldest lines first, and counts the rest.
func TestShutdownUnderPressure(t *testing.T) {
	f := newFakeLambda(t)
	loki := newFakeLoki(t)
	var down atomic.Bool
	down.Store(true)
	loki.reply = func(n int, w http.ResponseWriter) int {
		if down.Load() {
			return http.StatusServiceUnavailable
		}
		time.Sleep(400 * time.Millisecond)
		return http.StatusNoContent
	}
	x := startExtension(t, f, map[string]string{"LOKI_URL": loki.srv.URL,
		"AWS_LAMBDA_INITIALIZATION_TYPE": "lambda-managed-instances"})
	f.awaitNext()
	want := flood(f, 20, 1000, 100)
	down.Store(false)
	deadline := time.Now().Add(2 * time.Second)
	f.send(lifecycleEvent{EventType: "SHUTDOWN", ShutdownReason: "spindown", DeadlineMs: deadline.UnixMilli()})
	if err := x.wait(t); err != nil {
		t.Fatal(err)
	}
	if late := time.Since(deadline); late > 0 {
		t.Errorf("the extension exited %v after the SHUTDOWN deadline", late)
	}
	got := loki.lines("function")
	if len(got) == 0 || !cmp.Equal(want[:len(got)], got, anyOrder) {
		t.Fatalf("stored %d lines, not the oldest in order", len(got))
	}
	// The extension's own account is exact: every line is sent or counted.
	c := summary(t, x.out.String())
	if c.sent+c.droppedFull+c.droppedLoki+c.droppedAtExit != int64(len(want)) {
		t.Errorf("generated %d, but the extension accounts for %+v", len(want), c)
	}
	// Loki may also hold lines of requests still unanswered at the end,
	// which the extension counted as dropped.
	if unsure := int64(len(got)) - c.sent; unsure < 0 || unsure > c.droppedAtExit {
		t.Errorf("Loki stored %d lines, the extension says it sent %d and dropped %d at shutdown", len(got), c.sent, c.droppedAtExit)
	}
	if stats := loki.lines("extension"); len(stats) > 0 && !strings.Contains(stats[len(stats)-1], fmt.Sprintf("final=true sent=%d ", c.sent)) {
		t.Errorf("the last stats line disagrees with the summary %+v: %s", c, stats[len(stats)-1])
	}
	t.Logf("stored %d of %d lines before the deadline; the extension counts %+v", len(got), len(want), c)
}

// summary reads the counters from the extension's shutdown line.
func summary(t *testing.T, out string) counters {
	t.Helper()
	var c counters
	for line := range strings.SplitSeq(out, "\n") {
		_, rest, ok := strings.Cut(line, "): ")
		if !strings.Contains(line, "shutdown (") || !ok {
			continue
		}
		if _, err := fmt.Sscanf(rest, "%d lines sent; dropped: %d buffer full, %d rejected by Loki, %d at shutdown, %d by Lambda, %d below LOKI_MIN_LEVEL, %d over LOKI_MAX_BYTES_PER_SECOND; %d retries",
			&c.sent, &c.droppedFull, &c.droppedLoki, &c.droppedAtExit, &c.droppedByLambda, &c.droppedFiltered, &c.droppedOverRate, &c.retries); err != nil {
			t.Fatalf("summary line %q: %v", line, err)
		}
		return c
	}
	t.Fatalf("no summary line in:\n%s", out)
	return c
}

// TestBufferFullIsCounted: a function logging far more than the buffer
// holds while Loki is away loses the newest lines, and says how many.
func TestBufferFullIsCounted(t *testing.T) {
	f := newFakeLambda(t)
	loki, down := outage(t, func() int { return http.StatusBadGateway })
	x := startExtension(t, f, map[string]string{"LOKI_URL": loki.srv.URL, "LOKI_BUFFER_BYTES": "1048576",
		"AWS_LAMBDA_INITIALIZATION_TYPE": "lambda-managed-instances"})
	f.awaitNext()
	want := flood(f, 20, 1000, 60)
	down.Store(false)
	f.shutdown()
	if err := x.wait(t); err != nil {
		t.Fatal(err)
	}
	got := loki.lines("function")
	var full int
	fmt.Sscan(statsLine(t, loki)["dropped_buffer_full"], &full)
	// The oldest lines are kept: at least as many as the buffer holds
	// uncompressed. A later delivery may fit again once the shipper has
	// compressed what waits, as requests count compressed.
	stored := map[string]bool{}
	for _, line := range got {
		stored[line] = true
	}
	oldest, generated := 0, 0
	for i, line := range want {
		if stored[line] {
			generated++
			if oldest == i {
				oldest++
			}
		}
	}
	// flood's lines are all as long; less 1 KiB for the stats request the
	// shipper may hold.
	fit := (1<<20 - 1<<10) / (&entry{line: want[0]}).cost()
	if full == 0 || len(stored) != len(got) || generated != len(got) || len(got)+full != len(want) || oldest < fit {
		t.Errorf("generated %d: stored %d (%d once, %d generated, the oldest %d of at least %d), dropped_buffer_full %d",
			len(want), len(got), len(stored), generated, oldest, fit, full)
	}
}

// builtExtension builds the extension binary once for the tests that run
// it as a child process.
var builtExtension = sync.OnceValues(func() (string, error) {
	dir, err := os.MkdirTemp("", "loki-extension-test")
	if err != nil {
		return "", err
	}
	bin := filepath.Join(dir, "loki-extension")
	out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("go build: %v: %s", err, out)
	}
	return bin, nil
})

// startBinary runs the built extension against f and loki, and waits
// until its Init is over.
func startBinary(t *testing.T, f *fakeLambda, loki *fakeLoki) (*exec.Cmd, *syncBuffer) {
	t.Helper()
	bin, err := builtExtension()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin)
	cmd.Env = []string{"AWS_LAMBDA_RUNTIME_API=" + strings.TrimPrefix(f.srv.URL, "http://"),
		"AWS_LAMBDA_FUNCTION_NAME=orders-api", "LOKI_LISTENER_PORT=0", "LOKI_URL=" + loki.srv.URL}
	out := &syncBuffer{}
	cmd.Stderr = out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	f.awaitNext()
	return cmd, out
}

// shutDownBinary sends SHUTDOWN and waits until the binary has exited
// without an error.
func shutDownBinary(t *testing.T, f *fakeLambda, cmd *exec.Cmd, out *syncBuffer) {
	t.Helper()
	f.shutdown()
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("exit: %v\n%s", err, out.String())
		}
	case <-time.After(waitLimit):
		t.Fatal("the extension did not exit")
	}
}

// TestFreezeAndThaw runs the real binary and freezes it between
// invocations as Lambda does (SIGSTOP, SIGCONT), while Loki drops the
// pooled connection and telemetry of the frozen invocation arrives late.
func TestFreezeAndThaw(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	f, loki := newFakeLambda(t), newFakeLoki(t)
	cmd, out := startBinary(t, f, loki)

	var want []string
	for i := range 4 {
		id := requestID(i)
		f.invoke(id)
		var events []any
		if i > 0 { // a line of the previous invocation, delivered late
			late := fmt.Sprintf("%s late line", requestID(i-1))
			want = append(want, late)
			events = append(events, tev("function", late+"\n"))
		}
		events = append(events, tev("platform.start", map[string]any{"requestId": id}))
		for n := range 10 {
			want = append(want, fmt.Sprintf("%s line %d", id, n))
			events = append(events, tev("function", want[len(want)-1]+"\n"))
		}
		f.deliver(events...)
		f.deliver(tev("platform.runtimeDone", map[string]any{"requestId": id, "status": "success"}))
		f.awaitNext()
		if diff := cmp.Diff(want, loki.lines("function"), anyOrder); diff != "" {
			t.Fatalf("invocation %d: lines at /next (-want +got):\n%s", i, diff)
		}
		// Freeze; meanwhile Loki closes the idle connection.
		cmd.Process.Signal(syscall.SIGSTOP)
		loki.srv.CloseClientConnections()
		time.Sleep(200 * time.Millisecond)
		cmd.Process.Signal(syscall.SIGCONT)
	}
	shutDownBinary(t, f, cmd, out)
	if strings.Contains(out.String(), "will retry") {
		t.Errorf("a connection dropped during the freeze was reported as a failure:\n%s", out.String())
	}
	if loki.dups != 0 {
		t.Errorf("%d entries pushed twice", loki.dups)
	}
}

// TestSlowPushDoesNotStopLaterFlushes: one slow answer from Loki does not
// keep later invocations from flushing before /next.
func TestSlowPushDoesNotStopLaterFlushes(t *testing.T) {
	f := newFakeLambda(t)
	loki := newFakeLoki(t)
	loki.reply = func(n int, w http.ResponseWriter) int {
		if n == 1 {
			time.Sleep(400 * time.Millisecond) // longer than the flush timeout
		}
		return http.StatusNoContent
	}
	x := startExtension(t, f, map[string]string{"LOKI_URL": loki.srv.URL, "LOKI_FLUSH_INTERVAL": "100ms"})
	f.awaitNext()
	f.invoke(requestID(0))
	f.deliver(tev("function", "slow push\n"))
	time.Sleep(600 * time.Millisecond) // the background flush meets the slow answer
	f.deliver(tev("platform.runtimeDone", map[string]any{"requestId": requestID(0)}))
	f.awaitNext()
	want := []string{"slow push"}
	for i := 1; i <= 3; i++ {
		lines, _ := timedInvocation(f, requestID(i), 3)
		want = append(want, lines...)
		if diff := cmp.Diff(want, loki.lines("function"), anyOrder); diff != "" {
			t.Fatalf("invocation %d: lines at /next (-want +got):\n%s", i, diff)
		}
	}
	f.shutdown()
	x.wait(t)
}

// slowLoki is a fake Loki that answers every push after d.
func slowLoki(t *testing.T, d time.Duration) *fakeLoki {
	loki := newFakeLoki(t)
	loki.reply = func(int, http.ResponseWriter) int {
		time.Sleep(d)
		return http.StatusNoContent
	}
	return loki
}

// TestFarLokiIsNeverCutOff: a Loki 400 ms away, longer than the flush
// timeout, with invocations back to back: every push is answered, none is
// sent twice, the end of an invocation soon stops waiting for it, and
// nothing is lost at SHUTDOWN.
func TestFarLokiIsNeverCutOff(t *testing.T) {
	f := newFakeLambda(t)
	loki := slowLoki(t, 400*time.Millisecond)
	x := startExtension(t, f, map[string]string{"LOKI_URL": loki.srv.URL})
	f.awaitNext()
	var want []string
	held := 0
	const n = 12
	for i := range n {
		lines, added := timedInvocation(f, requestID(i), 50)
		want = append(want, lines...)
		if added >= 250*time.Millisecond { // held for the flush timeout
			held++
		}
	}
	f.shutdown()
	if err := x.wait(t); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(want, loki.lines("function"), anyOrder); diff != "" {
		t.Errorf("lines (-want +got):\n%s", diff)
	}
	if held > 2 {
		t.Errorf("%d of %d invocations waited out the flush timeout for a Loki slower than it", held, n)
	}
	loki.mu.Lock()
	defer loki.mu.Unlock()
	if loki.dups != 0 || loki.requests > n+3 || strings.Contains(x.out.String(), "will retry") {
		t.Errorf("%d requests for %d invocations, %d entries sent twice; output:\n%s", loki.requests, n, loki.dups, x.out.String())
	}
	if c := summary(t, x.out.String()); c.sent != int64(len(want)) || c.droppedAtExit != 0 {
		t.Errorf("the extension counts %+v for %d lines", c, len(want))
	}
}

// TestLokiOneSecondAwayKeepsUp: a Loki a second away and a busy function:
// requests grow and go several at once, and every line is in Loki by the
// end of SHUTDOWN.
func TestLokiOneSecondAwayKeepsUp(t *testing.T) {
	f := newFakeLambda(t)
	loki := slowLoki(t, time.Second)
	x := startExtension(t, f, map[string]string{"LOKI_URL": loki.srv.URL})
	f.awaitNext()
	var want []string
	for i := range 40 {
		lines, _ := timedInvocation(f, requestID(i), 200)
		want = append(want, lines...)
	}
	f.shutdown()
	if err := x.wait(t); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(want, loki.lines("function"), anyOrder); diff != "" {
		t.Errorf("lines (-want +got):\n%s", diff)
	}
	loki.mu.Lock()
	defer loki.mu.Unlock()
	if loki.busiest < 2 || loki.dups != 0 {
		t.Errorf("at most %d requests at once, %d entries twice", loki.busiest, loki.dups)
	}
	t.Logf("%d requests for 40 invocations, at most %d at once", loki.requests, loki.busiest)
}

// TestRetryAfterAtShutdown: a gateway that asks to wait, even past the
// SHUTDOWN deadline, costs no line: the extension makes a last attempt
// before the deadline.
func TestRetryAfterAtShutdown(t *testing.T) {
	for _, tc := range []struct {
		name       string
		retryAfter string
		throttled  func(n int, shutdown bool) bool
	}{
		{"first three pushes, Retry-After 1", "1", func(n int, _ bool) bool { return n <= 3 }},
		{"until SHUTDOWN, Retry-After 30", "30", func(_ int, shutdown bool) bool { return !shutdown }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			f := newFakeLambda(t)
			loki := newFakeLoki(t)
			var shutdown atomic.Bool
			loki.reply = func(n int, w http.ResponseWriter) int {
				if tc.throttled(n, shutdown.Load()) {
					w.Header().Set("Retry-After", tc.retryAfter)
					return http.StatusTooManyRequests
				}
				return http.StatusNoContent
			}
			x := startExtension(t, f, map[string]string{"LOKI_URL": loki.srv.URL})
			f.awaitNext()
			var want []string
			start := time.Now()
			for i := 0; time.Since(start) < 2*time.Second; i++ {
				lines, _ := timedInvocation(f, requestID(i), 20)
				want = append(want, lines...)
				time.Sleep(100 * time.Millisecond)
			}
			shutdown.Store(true)
			deadline := time.Now().Add(2 * time.Second)
			f.send(lifecycleEvent{EventType: "SHUTDOWN", ShutdownReason: "spindown", DeadlineMs: deadline.UnixMilli()})
			if err := x.wait(t); err != nil {
				t.Fatal(err)
			}
			if late := time.Since(deadline); late > 0 {
				t.Errorf("exited %v after the deadline", late)
			}
			if diff := cmp.Diff(want, loki.lines("function"), anyOrder); diff != "" {
				t.Errorf("lines (-want +got):\n%s", diff)
			}
			if c := summary(t, x.out.String()); c.sent != int64(len(want)) {
				t.Errorf("the extension counts %+v for %d lines", c, len(want))
			}
		})
	}
}

// TestOutageDoesNotHoldInvocations: with Loki refusing connections for the
// environment's whole life, only the first invocation waits for a few
// retries; the lines are counted, and memory stays within the cap.
func TestOutageDoesNotHoldInvocations(t *testing.T) {
	f := newFakeLambda(t)
	x := startExtension(t, f, map[string]string{"LOKI_URL": "http://" + freePort(t), "LOKI_FLUSH_TIMEOUT": "2s"})
	f.awaitNext()
	var slow []time.Duration
	total := 0
	for i := range 12 {
		lines, added := timedInvocation(f, requestID(i), 2000)
		total += len(lines)
		if added >= 200*time.Millisecond {
			slow = append(slow, added)
		}
	}
	if len(slow) > 1 {
		t.Errorf("%d invocations waited on a Loki that refuses connections: %v", len(slow), slow)
	}
	f.shutdown()
	if err := x.wait(t); err != nil {
		t.Fatal(err)
	}
	if c := summary(t, x.out.String()); c.sent != 0 || c.droppedAtExit+c.droppedFull != int64(total) {
		t.Errorf("the extension counts %+v for %d lines", c, total)
	}
	if n := strings.Count(x.out.String(), "\n"); n != 2 {
		t.Errorf("want one failure and one summary line, got:\n%s", x.out.String())
	}
}

// TestPushAnsweredAcrossAFreeze runs the real binary against a Loki slower
// than the flush timeout and freezes it between invocations: the push in
// flight at /next is answered during the freeze, read at the thaw, and
// neither resent nor reported as a failure.
func TestPushAnsweredAcrossAFreeze(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	f, loki := newFakeLambda(t), slowLoki(t, 600*time.Millisecond)
	cmd, out := startBinary(t, f, loki)
	var want []string
	for i := range 3 {
		lines, _ := timedInvocation(f, requestID(i), 10)
		want = append(want, lines...)
		if len(loki.lines("function")) == len(want) {
			t.Fatalf("invocation %d: Loki, slower than the flush timeout, had answered at /next", i)
		}
		cmd.Process.Signal(syscall.SIGSTOP) // Loki answers while the extension is frozen
		time.Sleep(time.Second)
		cmd.Process.Signal(syscall.SIGCONT)
	}
	shutDownBinary(t, f, cmd, out)
	if diff := cmp.Diff(want, loki.lines("function"), anyOrder); diff != "" {
		t.Errorf("lines (-want +got):\n%s", diff)
	}
	loki.mu.Lock()
	defer loki.mu.Unlock()
	if loki.dups != 0 || strings.Contains(out.String(), "will retry") {
		t.Errorf("%d entries pushed twice; output:\n%s", loki.dups, out.String())
	}
	if c := summary(t, out.String()); c.sent != int64(len(want)) {
		t.Errorf("the extension counts %+v for %d lines", c, len(want))
	}
}
