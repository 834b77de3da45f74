// Command bench measures what loki-extension costs a Lambda function: binary
// size, start-up time, time added to each invocation, CPU, memory, bytes on
// the wire and lost lines. It builds the extension as shipped, runs it as a
// child process against an in-process fake Lambda runtime (Extensions and
// Telemetry APIs) and a fake Loki, all on 127.0.0.1, and prints a markdown
// report. For reference it runs an AWS-sample-style baseline extension
// (bench/baseline) through the same 100k-line burst.
//
// Run it from the repository root:
//
//	go run ./bench            # full run, under a minute on 2 cores
//	go run ./bench -quick     # about 20 s
//	go run ./bench -compare   # flush modes invocation and adaptive side by side
//	go run ./bench -faults    # a far, throttled or failing Loki (about 2 min)
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"
)

// The burst that CPU and memory are compared on: 100 invocations of 1000
// lines.
const (
	burstInvocations = 100
	burstLines       = 1000
)

// options are the command-line flags.
type options struct {
	lines     []int
	n         int // invocations per run; 0: 100, or 20 above 1000 lines
	burstReps int
	modes     []string // flush modes to run; "invocation" leaves LOKI_FLUSH_MODE unset
	gap       time.Duration
	timeout   time.Duration
	verbose   bool
	faults    bool
	match     string
}

func main() {
	opts, err := parseFlags(os.Args[1:])
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(2)
	}
	ctx, cancel := context.WithTimeout(context.Background(), opts.timeout)
	defer cancel()
	if err := benchmark(ctx, opts); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

// parseFlags reads the flags; -quick sets smaller defaults that explicit
// flags override.
func parseFlags(args []string) (options, error) {
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	lines := fs.String("lines", "10,100,1000,10000", "comma-separated lines per invocation")
	n := fs.Int("n", 0, "invocations per run (0: 100, or 20 above 1000 lines)")
	reps := fs.Int("burst-reps", 5, "repetitions of the 100k-line burst per extension (the median is reported)")
	mode := fs.String("mode", "invocation", "flush mode: invocation (LOKI_FLUSH_MODE unset) or adaptive")
	compare := fs.Bool("compare", false, "run flush modes invocation and adaptive side by side")
	quick := fs.Bool("quick", false, "quick run: -lines 10,100,1000 -n 20 -burst-reps 1")
	faults := fs.Bool("faults", false, "run the extension against a far, throttled or failing Loki instead")
	match := fs.String("match", "", "with -faults: only the faults whose name contains this")
	gap := fs.Duration("gap", 0, "pause between an invocation's /next and the next INVOKE")
	timeout := fs.Duration("timeout", 10*time.Minute, "limit of the whole benchmark")
	verbose := fs.Bool("v", false, "print each run's extension output")
	if err := fs.Parse(args); err != nil {
		return options{}, err
	}
	if *quick {
		set := map[string]bool{}
		fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
		if !set["lines"] {
			*lines = "10,100,1000"
		}
		if !set["n"] {
			*n = 20
		}
		if !set["burst-reps"] {
			*reps = 1
		}
	}
	opts := options{n: *n, burstReps: max(1, *reps), gap: *gap, timeout: *timeout, verbose: *verbose, faults: *faults, match: *match}
	for s := range strings.SplitSeq(*lines, ",") {
		v, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil || v < 0 || v > 100000 {
			return opts, fmt.Errorf("-lines: %q is not a number from 0 to 100000", s)
		}
		opts.lines = append(opts.lines, v)
	}
	switch {
	case *compare:
		opts.modes = []string{"invocation", "adaptive"}
	case *mode == "invocation" || *mode == "adaptive":
		opts.modes = []string{*mode}
	default:
		return opts, fmt.Errorf("-mode: %q is not invocation or adaptive", *mode)
	}
	if opts.n < 0 || opts.n > 10000 {
		return opts, fmt.Errorf("-n: %d is not from 0 to 10000", opts.n)
	}
	return opts, nil
}

// invocations is the number of invocations of a run with lines per
// invocation.
func (o options) invocations(lines int) int {
	switch {
	case o.n > 0:
		return o.n
	case lines > 1000:
		return 20
	default:
		return 100
	}
}

// benchmark builds, runs every measurement and prints the report.
func benchmark(ctx context.Context, opts options) error {
	began := time.Now()
	root, err := moduleRoot(ctx)
	if err != nil {
		return err
	}
	tmp, err := os.MkdirTemp("", "loki-bench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)

	progress("building in %s", tmp)
	bins, err := buildAll(ctx, root, tmp)
	if err != nil {
		return err
	}
	rep := &report{opts: opts, sizes: bins.sizes, command: commandLine()}
	if opts.faults {
		results := runFaults(ctx, opts, bins.extension)
		fmt.Printf("Machine: %s. Command: `%s` (wall time %.0f s).\n\n", machine(), rep.command, time.Since(began).Seconds())
		printFaults(os.Stdout, results)
		return ctx.Err()
	}
	subjects := subjectsOf(opts, bins)

	rep.idle = make([][]*runResult, len(subjects))
	rep.bursts = make([][]*runResult, len(subjects))
	for i, s := range subjects {
		rep.idle[i] = append(rep.idle[i], measure(ctx, opts, s.spec(0, 0)))
	}
	for _, lines := range opts.lines {
		for _, s := range subjects[:len(subjects)-1] { // the baseline only runs the burst
			rep.perLines = append(rep.perLines, measure(ctx, opts, s.spec(lines, opts.invocations(lines))))
		}
	}
	// Alternate the subjects so that noise from other load hits each alike.
	for r := range opts.burstReps {
		for i, s := range subjects {
			if r > 0 {
				rep.idle[i] = append(rep.idle[i], measure(ctx, opts, s.spec(0, 0)))
			}
			rep.bursts[i] = append(rep.bursts[i], measure(ctx, opts, s.spec(burstLines, burstInvocations)))
		}
	}
	rep.wall = time.Since(began)
	rep.print(os.Stdout)
	return ctx.Err()
}

// subject is an extension binary in a configuration.
type subject struct {
	label     string
	binary    string
	flushMode string
	gap       time.Duration
}

// subjectsOf lists the extension in each flush mode, then the baseline.
func subjectsOf(opts options, bins *binaries) []subject {
	var ss []subject
	for _, m := range opts.modes {
		s := subject{label: "loki-extension, flush mode " + m, binary: bins.extension, gap: opts.gap}
		if m != "invocation" {
			s.flushMode = m
		}
		ss = append(ss, s)
	}
	return append(ss, subject{label: baselineLabel, binary: bins.baseline, gap: opts.gap})
}

const baselineLabel = "AWS-sample-style baseline (reimplemented here)"

// spec is a run of s with lines per invocation.
func (s subject) spec(lines, invocations int) runSpec {
	return runSpec{label: s.label, binary: s.binary, flushMode: s.flushMode, lines: lines, invocations: invocations, gap: s.gap}
}

// measure does one run and logs a one-line summary to stderr.
func measure(ctx context.Context, opts options, spec runSpec) *runResult {
	r := run(ctx, spec)
	progress("%s", r.summary())
	for _, p := range r.problems {
		progress("  problem: %s", p)
	}
	if r.err != nil || opts.verbose {
		progress("  extension output:\n%s", indent(r.stderr))
	}
	return r
}

// progress logs to stderr, so that stdout is only the report.
func progress(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "bench: "+format+"\n", args...)
}

// commandLine is how this benchmark was started.
func commandLine() string {
	cmd := "go run ./bench"
	for _, a := range os.Args[1:] {
		cmd += " " + a
	}
	return cmd
}

func indent(s string) string {
	return "    " + strings.ReplaceAll(strings.TrimRight(s, "\n"), "\n", "\n    ")
}
