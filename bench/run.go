package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// Bounds of every wait on the extension.
const (
	nextTimeout = 10 * time.Second // INVOKE answered → /next, and spawn → first /next
	exitTimeout = 5 * time.Second  // SHUTDOWN → process exit; then it is killed
)

// runSpec describes one run of an extension binary.
type runSpec struct {
	label       string // who runs, for the table
	binary      string
	flushMode   string // LOKI_FLUSH_MODE; "" leaves it unset
	lines       int    // function lines per invocation
	invocations int
	gap         time.Duration // pause between /next and the next INVOKE
	fault       fault         // how the fake Loki misbehaves; zero: it doesn't
	shutdown    *atomic.Bool  // set when SHUTDOWN is sent
}

// runResult is what one run measured.
type runResult struct {
	spec     runSpec
	startup  time.Duration   // spawn → first /next
	added    []time.Duration // per invocation: runtimeDone answered → /next
	cpu      time.Duration   // user + system time of the process
	rssKB    int64           // peak resident set (VmHWM), KiB
	anonKB   int64           // largest anonymous part of it sampled (RssAnon), KiB
	rusageKB int64           // ru_maxrss, KiB (see README: inflated by the parent)
	rawBytes int64
	lines    int // function lines generated
	rejected int // telemetry deliveries refused by the listener
	tally    *tally
	problems []string // contract violations, exit status, kills
	stderr   string   // the extension's output (tail)
	err      error    // the run could not complete
}

// run runs the extension in spec once, end to end. Errors are kept in the
// result so that one failed run does not stop the benchmark.
func run(ctx context.Context, spec runSpec) *runResult {
	r := &runResult{spec: spec}
	if err := r.execute(ctx); err != nil {
		r.err = err
	}
	return r
}

// execute starts the fakes and the process, drives the invocations, shuts
// the process down and checks what reached the fake Loki.
func (r *runResult) execute(ctx context.Context) error {
	var peak rssPeak
	api, err := startFakeAPI(peak.sample)
	if err != nil {
		return err
	}
	defer api.close()
	loki, err := startFakeLoki(peak.sample, r.spec.fault)
	if err != nil {
		return err
	}
	defer loki.close()
	lokiURL := loki.url
	if r.spec.fault.refuse {
		if lokiURL, err = freeURL(); err != nil {
			return err
		}
	}

	out := &tailBuffer{max: 16 << 10}
	cmd := exec.Command(r.spec.binary)
	cmd.Env = childEnv(r.spec, api.addr, lokiURL)
	cmd.Stdout, cmd.Stderr = out, out
	spawned := time.Now()
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start %s: %w", r.spec.binary, err)
	}
	peak.pid.Store(int64(cmd.Process.Pid))
	exited := make(chan struct{})
	go func() {
		cmd.Wait()
		close(exited)
	}()
	defer func() {
		r.problems = append(r.problems, api.reported()...)
		r.stderr = out.String()
	}()

	w, err := r.drive(ctx, api, exited, spawned)
	if err != nil {
		cmd.Process.Kill()
		<-exited
		return fmt.Errorf("%w (process: %s)", err, cmd.ProcessState)
	}
	if r.spec.shutdown != nil {
		r.spec.shutdown.Store(true)
	}
	if err := api.sendShutdown(ctx); err != nil {
		return fmt.Errorf("SHUTDOWN: %w", err)
	}
	r.awaitExit(cmd, exited)
	r.rawBytes, r.lines, r.rejected = w.rawBytes, len(w.want), w.rejected
	r.tally, err = newTally(loki.received(), w)
	r.rssKB, r.anonKB = peak.kb.Load(), peak.anonKB.Load()
	return err
}

// drive waits for the first /next, then runs the invocations and delivers
// the last platform.report; it returns with a /next pending.
func (r *runResult) drive(ctx context.Context, api *fakeAPI, exited <-chan struct{}, spawned time.Time) (*workload, error) {
	first, err := api.awaitNext(ctx, exited, nextTimeout)
	if err != nil {
		return nil, fmt.Errorf("start-up: %w", err)
	}
	r.startup = first.Sub(spawned)
	listener := api.listenerURL()
	if listener == "" {
		return nil, errors.New("no telemetry subscription before the first /next")
	}
	w := newWorkload(listener)
	previous := ""
	for i := range r.spec.invocations {
		if r.spec.gap > 0 && i > 0 {
			time.Sleep(r.spec.gap)
		}
		id := newUUID()
		if err := api.send(ctx, invokeEvent(id)); err != nil {
			return nil, fmt.Errorf("invocation %d: INVOKE: %w", i, err)
		}
		done, err := w.invoke(ctx, id, previous, r.spec.lines)
		if err != nil {
			return nil, fmt.Errorf("invocation %d: %w", i, err)
		}
		next, err := api.awaitNext(ctx, exited, nextTimeout)
		if err != nil {
			return nil, fmt.Errorf("invocation %d: %w", i, err)
		}
		// An extension that does not wait for runtimeDone may be in /next
		// already: it adds nothing.
		r.added = append(r.added, max(0, next.Sub(done)))
		previous = id
	}
	if previous != "" {
		if err := w.report(ctx, previous); err != nil {
			return nil, fmt.Errorf("last platform.report: %w", err)
		}
	}
	return w, nil
}

// awaitExit waits for the process to exit after SHUTDOWN, kills it after
// exitTimeout, and reads its resource usage.
func (r *runResult) awaitExit(cmd *exec.Cmd, exited <-chan struct{}) {
	select {
	case <-exited:
	case <-time.After(exitTimeout):
		cmd.Process.Kill()
		<-exited
		r.problems = append(r.problems, fmt.Sprintf("still running %v after SHUTDOWN: killed", exitTimeout))
	}
	st := cmd.ProcessState
	if code := st.ExitCode(); code != 0 {
		r.problems = append(r.problems, fmt.Sprintf("exited with %s after SHUTDOWN", st))
	}
	r.cpu = st.UserTime() + st.SystemTime()
	if ru, ok := st.SysUsage().(*syscall.Rusage); ok {
		r.rusageKB = ru.Maxrss
	}
}

// childEnv is the process's whole environment: what Lambda sets and the
// extension's configuration, nothing inherited.
func childEnv(spec runSpec, runtimeAPI, lokiURL string) []string {
	env := []string{
		"AWS_LAMBDA_RUNTIME_API=" + runtimeAPI,
		"AWS_LAMBDA_FUNCTION_NAME=bench-fn",
		"AWS_LAMBDA_FUNCTION_VERSION=$LATEST",
		"AWS_LAMBDA_FUNCTION_MEMORY_SIZE=128",
		"AWS_LAMBDA_INITIALIZATION_TYPE=on-demand",
		"AWS_REGION=eu-west-1",
		"TZ=:UTC",
		"LOKI_URL=" + lokiURL,
		"LOKI_LISTENER_PORT=0",
	}
	if spec.flushMode != "" {
		env = append(env, "LOKI_FLUSH_MODE="+spec.flushMode)
	}
	return env
}

// rssPeak tracks the peak resident set of a process from /proc.
//
// Not ru_maxrss: os/exec starts children with vfork, and Linux then counts
// the parent's peak RSS in the child's ru_maxrss, so it would report the
// benchmark's memory, not the extension's. VmHWM is the high-water mark of
// the process's own memory since exec; sampling it at each /next and each
// push (the last one comes after SHUTDOWN) catches the peak. The largest
// RssAnon sampled tells the heap and the runtime's memory from the binary's
// pages, which the kernel maps 64 KiB at a time (fault-around).
type rssPeak struct {
	pid    atomic.Int64
	kb     atomic.Int64
	anonKB atomic.Int64
}

// sample reads VmHWM and RssAnon and keeps the largest values seen.
func (p *rssPeak) sample() {
	pid := p.pid.Load()
	if pid == 0 {
		return
	}
	status, err := os.ReadFile("/proc/" + strconv.FormatInt(pid, 10) + "/status")
	if err != nil {
		return
	}
	for line := range strings.Lines(string(status)) {
		key, rest, _ := strings.Cut(line, ":")
		peak := &p.kb
		switch key {
		case "VmHWM":
		case "RssAnon":
			peak = &p.anonKB
		default:
			continue
		}
		kb, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
		keepMax(peak, kb)
	}
}

// keepMax raises peak to kb if it is higher.
func keepMax(peak *atomic.Int64, kb int64) {
	for {
		old := peak.Load()
		if kb <= old || peak.CompareAndSwap(old, kb) {
			return
		}
	}
}

// tailBuffer keeps the last max bytes written to it.
type tailBuffer struct {
	mu  sync.Mutex
	max int
	buf bytes.Buffer
}

func (t *tailBuffer) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.buf.Write(p)
	if extra := t.buf.Len() - t.max; extra > 0 {
		t.buf.Next(extra)
	}
	return len(p), nil
}

func (t *tailBuffer) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.buf.String()
}
