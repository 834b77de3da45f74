package main

import (
	"fmt"
	"io"
	"os"
	"runtime"
	"slices"
	"strings"
	"time"
)

// report collects the results and prints them as markdown.
type report struct {
	opts     options
	command  string
	sizes    []binarySize
	idle     [][]*runResult // per subject: idle runs, one per burst repetition
	perLines []*runResult   // per extension subject and lines value
	bursts   [][]*runResult // per subject: the repetitions of the burst
	wall     time.Duration
}

// aggregate pools the measurements of one or more runs of a subject.
type aggregate struct {
	failures              []string
	startup, added, stale []time.Duration
	cpu                   []time.Duration
	rssKB, rusageKB       []int64
	anonKB                []int64
	raw, wire             int64
	lines, lost, dups     int
	altered, unknown      int
	rejected, pushes      int
	bySource              map[string]int
}

func aggregateOf(runs ...*runResult) aggregate {
	a := aggregate{bySource: map[string]int{}}
	for _, r := range runs {
		if r.err != nil {
			a.failures = append(a.failures, r.err.Error())
			continue
		}
		a.startup = append(a.startup, r.startup)
		a.added = append(a.added, r.added...)
		a.cpu = append(a.cpu, r.cpu)
		a.rssKB = append(a.rssKB, r.rssKB)
		a.rusageKB = append(a.rusageKB, r.rusageKB)
		a.anonKB = append(a.anonKB, r.anonKB)
		a.raw += r.rawBytes
		a.lines += r.lines
		a.rejected += r.rejected
		t := r.tally
		a.stale = append(a.stale, t.stale...)
		a.wire += t.wireBytes
		a.pushes += t.pushes
		a.altered += t.altered
		a.unknown += t.unknown
		lost, dups := t.lostAndDuplicated()
		a.lost += lost
		a.dups += dups
		for k, v := range t.bySource {
			a.bySource[k] += v
		}
	}
	return a
}

// summary is the one-line progress report of a run.
func (r *runResult) summary() string {
	head := fmt.Sprintf("%s, %d × %d lines:", r.spec.label, r.spec.invocations, r.spec.lines)
	if r.err != nil {
		return head + " FAILED: " + r.err.Error()
	}
	a := aggregateOf(r)
	return fmt.Sprintf("%s start-up %s ms, added p50/p99 %s ms, staleness p50/p99 %s ms, CPU %s ms, RSS %s MB (anonymous %s MB; ru_maxrss %s MB), wire/raw %s, lost %d, dup %d, pushes %d, streams %v; last output: %q",
		head, msOf(a.startup, 0.5), pair(a.added), pair(a.stale), msOf(a.cpu, 0.5), mb(a.rssKB), mb(a.anonKB), mb(a.rusageKB),
		ratio(a.wire, a.raw), a.lost, a.dups, a.pushes, a.bySource, lastLine(r.stderr))
}

// print writes the report.
func (rep *report) print(w io.Writer) {
	fmt.Fprintf(w, "### Overhead benchmark\n\n")
	fmt.Fprintf(w, "Machine: %s. Command: `%s` (wall time %.0f s).\n\n", machine(), rep.command, rep.wall.Seconds())
	rep.printSizes(w)
	rep.printPerLines(w)
	rep.printBurst(w)
	rep.printIdle(w)
	rep.printTargets(w)
	rep.printNotes(w)
}

func (rep *report) printSizes(w io.Writer) {
	fmt.Fprintf(w, "**Binary size** (linux/%s unless noted)\n\n| build | bytes | MB |\n|---|---:|---:|\n", runtime.GOARCH)
	for _, s := range rep.sizes {
		fmt.Fprintf(w, "| %s | %d | %.2f |\n", s.label, s.bytes, float64(s.bytes)/1e6)
	}
	fmt.Fprintln(w)
}

func (rep *report) printPerLines(w io.Writer) {
	fmt.Fprintf(w, "**Per invocation** (back-to-back invocations; added = runtimeDone delivered → `/next`; staleness = line delivered → received by Loki)\n\n")
	fmt.Fprintf(w, "| extension | lines/inv | inv | start-up ms | added ms p50 / p99 | staleness ms p50 / p99 | CPU ms | CPU µs/line above idle | max RSS MB | wire / raw | lost / dup |\n")
	fmt.Fprintf(w, "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n")
	for _, r := range rep.perLines {
		a := aggregateOf(r)
		if len(a.failures) > 0 {
			fmt.Fprintf(w, "| %s | %d | %d | failed: %s |||||||||\n", r.spec.label, r.spec.lines, r.spec.invocations, oneLine(a.failures[0]))
			continue
		}
		fmt.Fprintf(w, "| %s | %d | %d | %s | %s | %s | %s | %s | %s | %s | %d / %d |\n",
			r.spec.label, r.spec.lines, r.spec.invocations, msOf(a.startup, 0.5), pair(a.added), pair(a.stale),
			msOf(a.cpu, 0.5), perLine(a.cpu[0]-rep.idleCPU(r.spec.label), a.lines), mb(a.rssKB), ratio(a.wire, a.raw), a.lost, a.dups)
	}
	fmt.Fprintln(w)
}

func (rep *report) printBurst(w io.Writer) {
	fmt.Fprintf(w, "**100k-line burst** (%d invocations × %d lines, back to back; %d repetition(s) per extension, alternating; CPU and RSS are medians, percentiles pool all repetitions)\n\n",
		burstInvocations, burstLines, rep.opts.burstReps)
	fmt.Fprintf(w, "| extension | CPU ms | max RSS MB | added ms p50 / p99 | staleness ms p50 / p99 | wire / raw | lost / dup |\n|---|---:|---:|---:|---:|---:|---:|\n")
	for _, runs := range rep.bursts {
		a := aggregateOf(runs...)
		if len(a.failures) > 0 {
			fmt.Fprintf(w, "| %s | failed: %s ||||||\n", runs[0].spec.label, oneLine(a.failures[0]))
			continue
		}
		fmt.Fprintf(w, "| %s | %s | %s | %s | %s | %s | %d / %d |\n", runs[0].spec.label, msOf(a.cpu, 0.5), mb(a.rssKB),
			pair(a.added), pair(a.stale), ratio(a.wire, a.raw), a.lost, a.dups)
	}
	base := aggregateOf(rep.bursts[len(rep.bursts)-1]...)
	for _, runs := range rep.bursts[:len(rep.bursts)-1] {
		a := aggregateOf(runs...)
		if len(a.cpu) > 0 && len(base.cpu) > 0 {
			fmt.Fprintf(w, "| ratio %s / baseline | %.2f× | %.2f× | | | | |\n", runs[0].spec.label,
				float64(median(a.cpu))/float64(median(base.cpu)), float64(median(a.rssKB))/float64(median(base.rssKB)))
		}
	}
	fmt.Fprintln(w)
}

func (rep *report) printIdle(w io.Writer) {
	fmt.Fprintf(w, "**Idle** (spawn → first `/next` → SHUTDOWN → exit, no invocation; medians of %d run(s); start-up also over every run of the extension)\n\n", rep.opts.burstReps)
	fmt.Fprintf(w, "| extension | start-up ms | start-up ms, all runs | CPU ms | max RSS MB |\n|---|---:|---:|---:|---:|\n")
	for i, runs := range rep.idle {
		a := aggregateOf(runs...)
		if len(a.failures) > 0 {
			fmt.Fprintf(w, "| %s | failed: %s ||||\n", runs[0].spec.label, oneLine(a.failures[0]))
			continue
		}
		all := aggregateOf(rep.runsOf(i)...)
		fmt.Fprintf(w, "| %s | %s | %s | %s | %s |\n", runs[0].spec.label, msOf(a.startup, 0.5), msOf(all.startup, 0.5), msOf(a.cpu, 0.5), mb(a.rssKB))
	}
	fmt.Fprintln(w)
}

// idleCPU is the median CPU time of the idle runs of the subject with label.
func (rep *report) idleCPU(label string) time.Duration {
	for _, runs := range rep.idle {
		if runs[0].spec.label == label {
			return median(aggregateOf(runs...).cpu)
		}
	}
	return 0
}

// runsOf returns every run of subject i.
func (rep *report) runsOf(i int) []*runResult {
	runs := slices.Clone(rep.idle[i])
	for _, r := range rep.perLines {
		if r.spec.label == runs[0].spec.label {
			runs = append(runs, r)
		}
	}
	return append(runs, rep.bursts[i]...)
}

// printTargets checks the targets of issue 5.
func (rep *report) printTargets(w io.Writer) {
	fmt.Fprintf(w, "**Targets**\n\n| target | measured | verdict |\n|---|---|---|\n")
	row := func(target, measured, verdict string) {
		fmt.Fprintf(w, "| %s | %s | %s |\n", target, measured, verdict)
	}
	amd, arm := rep.sizes[0].bytes, rep.sizes[1].bytes
	row("stripped binary ≤ 6.2 MB", fmt.Sprintf("%.2f MB (%s)", float64(amd)/1e6, runtime.GOARCH), atMost(float64(amd)/1e6, 6.2, "MB"))
	row("arm64 smaller", fmt.Sprintf("%.2f MB", float64(arm)/1e6), atMost(float64(arm)/1e6, float64(amd)/1e6-0.000001, "MB"))

	nb := len(rep.bursts) - 1
	base := aggregateOf(rep.bursts[nb]...)
	baseAll := aggregateOf(rep.runsOf(nb)...)
	for i := range nb {
		label := rep.bursts[i][0].spec.label
		a := aggregateOf(rep.bursts[i]...)
		all := aggregateOf(rep.runsOf(i)...)
		if len(a.cpu) == 0 || len(base.cpu) == 0 || len(all.startup) == 0 || len(baseAll.startup) == 0 {
			row(label, "runs failed", "unknown")
			continue
		}
		cpuRatio := float64(median(a.cpu)) / float64(median(base.cpu))
		row(label+": CPU per 100k lines ≤ ½ of the baseline's", fmt.Sprintf("%.0f ms vs %.0f ms = %.2f×", ms(median(a.cpu)), ms(median(base.cpu)), cpuRatio), atMost(cpuRatio, 0.5, "×"))
		rss := float64(median(a.rssKB)) * 1024 / 1e6
		row(label+": max RSS in the burst ≤ 10 MB", fmt.Sprintf("%.2f MB", rss), atMost(rss, 10, "MB"))
		su, bsu := ms(median(all.startup)), ms(median(baseAll.startup))
		row(label+": start-up ≤ the baseline's", fmt.Sprintf("%.1f ms vs %.1f ms (medians of %d and %d runs)", su, bsu, len(all.startup), len(baseAll.startup)), atMost(su, bsu, "ms"))
		for _, r := range rep.perLines {
			if r.spec.label == label && r.spec.lines == 100 && r.err == nil {
				p50, p99 := ms(percentile(r.added, 0.5)), ms(percentile(r.added, 0.99))
				row(label+": added at 100 lines p50 ≤ 2 ms", fmt.Sprintf("%.2f ms", p50), atMost(p50, 2, "ms"))
				row(label+": added at 100 lines p99 ≤ 10 ms", fmt.Sprintf("%.2f ms", p99), atMost(p99, 10, "ms"))
			}
		}
		wr := float64(a.wire) / float64(a.raw)
		row(label+": bytes on the wire ≤ ⅕ of raw", fmt.Sprintf("%.3f", wr), atMost(wr, 0.2, ""))
		row(label+": no line lost or duplicated (all runs)", fmt.Sprintf("%d lost, %d duplicated, %d altered of %d", all.lost, all.dups, all.altered, all.lines), atMost(float64(all.lost+all.dups+all.altered), 0, " lines"))
	}
	fmt.Fprintln(w)
}

// printNotes lists problems and how to read the numbers.
func (rep *report) printNotes(w io.Writer) {
	var problems []string
	var maxRSS, maxRusage []int64
	for i := range rep.idle {
		for _, r := range rep.runsOf(i) {
			for _, p := range r.problems {
				problems = append(problems, fmt.Sprintf("%s, %d × %d lines: %s", r.spec.label, r.spec.invocations, r.spec.lines, p))
			}
			if r.err != nil {
				problems = append(problems, fmt.Sprintf("%s, %d × %d lines: run failed: %s", r.spec.label, r.spec.invocations, r.spec.lines, oneLine(r.err.Error())))
			}
			maxRSS, maxRusage = append(maxRSS, r.rssKB), append(maxRusage, r.rusageKB)
		}
	}
	fmt.Fprintf(w, "Notes: CPU is user+system time of the extension process from its rusage, start-up and shutdown included. ")
	fmt.Fprintf(w, "Max RSS is the process's VmHWM from /proc (largest %s MB); ru_maxrss is not used because a child started with vfork inherits the parent's peak in it (largest here %s MB). ",
		mbOf(slices.Max(maxRSS)), mbOf(slices.Max(maxRusage)))
	fmt.Fprintf(w, "Wire bytes are request bodies received by the fake Loki (REPORT and stats lines included); raw bytes are the function's lines as written. ")
	fmt.Fprintf(w, "p99 of fewer than 100 samples is close to the maximum. The 2-core machine is shared: compare ratios within one run.\n")
	if len(problems) > 0 {
		fmt.Fprintf(w, "\nProblems seen:\n\n")
		for _, p := range problems {
			fmt.Fprintf(w, "- %s\n", oneLine(p))
		}
	}
}

// atMost is the verdict for a measured value against a limit.
func atMost(v, limit float64, unit string) string {
	if v <= limit {
		return "met"
	}
	return fmt.Sprintf("missed by %.3g%s", v-limit, unit)
}

// machine describes the host.
func machine() string {
	model := "unknown CPU"
	if info, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for line := range strings.Lines(string(info)) {
			if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
				model = strings.TrimSpace(v)
				break
			}
		}
	}
	kernel, _ := os.ReadFile("/proc/sys/kernel/osrelease")
	return fmt.Sprintf("%s/%s, %d CPUs (%s), Linux %s, %s", runtime.GOOS, runtime.GOARCH, runtime.NumCPU(), model,
		strings.TrimSpace(string(kernel)), runtime.Version())
}

// percentile is the nearest-rank percentile p (0–1) of ds.
func percentile(ds []time.Duration, p float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Sorted(slices.Values(ds))
	i := int(float64(len(s))*p+0.999999) - 1
	return s[min(max(i, 0), len(s)-1)]
}

func median[T time.Duration | int64](vs []T) T {
	if len(vs) == 0 {
		return 0
	}
	s := slices.Sorted(slices.Values(vs))
	return s[(len(s)-1)/2]
}

// Formatting helpers; "–" stands for no data.

func msOf(ds []time.Duration, p float64) string {
	if len(ds) == 0 {
		return "–"
	}
	return fmt.Sprintf("%.1f", ms(percentile(ds, p)))
}

func pair(ds []time.Duration) string {
	if len(ds) == 0 {
		return "–"
	}
	return fmt.Sprintf("%.2f / %.2f", ms(percentile(ds, 0.5)), ms(percentile(ds, 0.99)))
}

func mb(kbs []int64) string {
	if len(kbs) == 0 {
		return "–"
	}
	return mbOf(median(kbs))
}

// mbOf prints two decimals: medians of repeated runs move by tens of kB.
func mbOf(kb int64) string { return fmt.Sprintf("%.2f", float64(kb)*1024/1e6) }

func ratio(a, b int64) string {
	if b == 0 {
		return "–"
	}
	return fmt.Sprintf("%.3f", float64(a)/float64(b))
}

func perLine(cpu time.Duration, lines int) string {
	if lines == 0 {
		return "–"
	}
	return fmt.Sprintf("%.1f", float64(cpu)/float64(time.Microsecond)/float64(lines))
}

func lastLine(s string) string {
	s = strings.TrimRight(s, "\n")
	return s[strings.LastIndexByte(s, '\n')+1:]
}

func oneLine(s string) string {
	return strings.Join(strings.Fields(s), " ")
}
