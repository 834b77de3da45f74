// Command check compares what the test function printed with what the log
// store (VictoriaLogs, queried with its LogsQL API) holds for one run.
//
// It reads the function's invocation responses (one JSON object a line, as
// written by e2e/runtime: the request id and the exact lines printed), queries
// every row stored for the run's service_name, and checks that each printed
// line is stored exactly once, under the labels service_name=<fn>,
// source=function (plus the expected static labels), with request_id and
// level=info as structured metadata. It prints one summary line
//
//	mode=<mode> generated=X stored=Y duplicated=Z missing=W
//
// and exits 1 unless stored==generated and nothing is duplicated, missing,
// altered or mislabelled. With -want-none it instead checks that no function
// line at all was stored (classic emulator: no telemetry).
package main

import (
	"bufio"
	"encoding/json"
	"flag"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"regexp"
	"sort"
	"strings"
	"time"
)

// response is one invocation response of e2e/runtime.
type response struct {
	RequestID string   `json:"requestId"`
	Lines     []string `json:"lines"`
}

// expected describes one printed line.
type expected struct {
	id        string // "<run>-<inv>-<n>"
	requestID string
	printed   time.Time // timestamp printed in the line
}

var idRe = regexp.MustCompile(`line ([A-Za-z0-9_.]+-\d+-\d+)`)

func main() {
	var (
		base        = flag.String("url", "http://127.0.0.1:9428", "VictoriaLogs base URL")
		user        = flag.String("user", "", "basic auth user for queries")
		pass        = flag.String("password", "", "basic auth password for queries")
		tenant      = flag.String("tenant", "", "tenant (accountID[:projectID]) to query")
		service     = flag.String("service", "", "expected service_name label (the function name)")
		labels      = flag.String("labels", "", "expected static labels, k=v,k2=v2")
		respFile    = flag.String("responses", "", "file with the invocation responses, one JSON a line")
		invocations = flag.Int("invocations", 0, "number of invocations that must have succeeded")
		mode        = flag.String("mode", "", "mode name for the summary line")
		wantNone    = flag.Bool("want-none", false, "expect no function line in the store")
		wantStats   = flag.Bool("want-stats", false, "expect exactly one stats line with source=extension")
		wantReports = flag.Bool("want-reports", false, "expect one platform.report line per invocation")
		print       = flag.Int("print", 0, "only print up to this many stored function lines (demo)")
	)
	flag.Parse()
	failures := 0
	fail := func(format string, a ...any) {
		failures++
		if failures <= 20 {
			fmt.Fprintf(os.Stderr, "check: "+format+"\n", a...)
		}
	}

	if *print > 0 {
		rows, err := query(*base, *user, *pass, *tenant, fmt.Sprintf("{service_name=%q}", *service))
		if err != nil {
			fatal(err)
		}
		printRows(rows, *print)
		return
	}

	// What the function printed.
	want := map[string]expected{} // exact line -> expectation
	ids := map[string]int{}       // id -> times stored
	reports := map[string]int{}   // request id -> platform.report lines stored
	nresp := 0
	f, err := os.Open(*respFile)
	if err != nil {
		fatal(err)
	}
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, 64<<20)
	for sc.Scan() {
		if strings.TrimSpace(sc.Text()) == "" {
			continue
		}
		var r response
		if err := json.Unmarshal(sc.Bytes(), &r); err != nil || r.RequestID == "" {
			fail("invocation response is not a function result: %.200q", sc.Text())
			continue
		}
		nresp++
		reports[r.RequestID] = 0
		for _, l := range r.Lines {
			m := idRe.FindStringSubmatch(l)
			if m == nil {
				fatal(fmt.Errorf("printed line without id: %q", l))
			}
			want[l] = expected{id: m[1], requestID: r.RequestID, printed: printedTime(l)}
			ids[m[1]] = 0
		}
	}
	f.Close()
	if nresp != *invocations {
		fail("%d successful invocations, want %d", nresp, *invocations)
	}

	// What the store holds for this function (all sources).
	rows, err := query(*base, *user, *pass, *tenant, fmt.Sprintf("{service_name=%q}", *service))
	if err != nil {
		fatal(err)
	}
	wantLabels := map[string]string{"service_name": *service, "source": "function"}
	for _, kv := range strings.Split(*labels, ",") {
		if k, v, ok := strings.Cut(kv, "="); ok {
			wantLabels[k] = v
		}
	}
	sources := map[string]int{}
	eventTypes := map[string]int{}
	stored, altered, unexpected, stats := 0, 0, 0, 0
	statsLine := ""
	for _, row := range rows {
		sources[row["source"]]++
		switch row["source"] {
		case "extension":
			if strings.HasPrefix(row["_msg"], "loki-extension stats") {
				stats++
				statsLine = row["_msg"]
			}
			continue
		case "platform":
			if row["event_type"] == "platform.report" {
				if _, ok := reports[row["request_id"]]; ok {
					reports[row["request_id"]]++
				}
			}
			continue
		case "function":
		default:
			fail("row with unexpected source %q: %.200q", row["source"], row["_msg"])
			continue
		}
		eventTypes[row["event_type"]]++
		msg := row["_msg"]
		exp, ok := want[msg]
		if !ok {
			if m := idRe.FindStringSubmatch(msg); m != nil {
				if _, known := ids[m[1]]; known {
					altered++
					fail("line %s stored altered: %q", m[1], msg)
					continue
				}
			}
			unexpected++
			fail("unexpected function line: %q", msg)
			continue
		}
		stored++
		ids[exp.id]++
		for k, v := range wantLabels {
			if row[k] != v {
				fail("line %s: label %s=%q, want %q", exp.id, k, row[k], v)
			}
		}
		if !strings.Contains(row["_stream"], `source="function"`) {
			fail("line %s: source is not a stream label: _stream=%s", exp.id, row["_stream"])
		}
		if row["request_id"] != exp.requestID {
			fail("line %s: request_id=%q, want %q", exp.id, row["request_id"], exp.requestID)
		}
		if row["level"] != "info" {
			fail("line %s: level=%q, want \"info\"", exp.id, row["level"])
		}
		if t, err := time.Parse(time.RFC3339Nano, row["_time"]); err != nil || absDur(t.Sub(exp.printed)) > time.Minute {
			fail("line %s: _time=%s, printed at %s", exp.id, row["_time"], exp.printed.Format(time.RFC3339Nano))
		}
	}
	dup, missing := 0, 0
	var missingIDs []string
	for id, n := range ids {
		switch {
		case n == 0:
			missing++
			missingIDs = append(missingIDs, id)
		case n > 1:
			dup += n - 1
			fail("line %s stored %d times", id, n)
		}
	}
	if *wantStats && stats != 1 {
		fail("%d stats lines (source=extension, \"loki-extension stats ...\") stored, want 1", stats)
	}

	if *wantNone {
		// Without telemetry no function line may reach the store.
		fmt.Printf("mode=%s invocations=%d generated=%d stored=%d (none expected)\n", *mode, nresp, len(ids), sources["function"])
		if sources["function"] != 0 {
			fail("%d function lines stored, want none", sources["function"])
		}
	} else {
		sort.Strings(missingIDs)
		if missing > 0 {
			fail("%d lines missing, e.g. %s", missing, strings.Join(missingIDs[:min(10, missing)], " "))
		}
		if *wantReports {
			for rid, n := range reports {
				if n != 1 {
					fail("request %s: %d platform.report lines stored, want 1", rid, n)
				}
			}
		}
		if len(ids) == 0 {
			fail("no line generated")
		}
		fmt.Printf("mode=%s invocations=%d generated=%d stored=%d duplicated=%d missing=%d altered=%d unexpected=%d\n",
			*mode, nresp, len(ids), stored, dup, missing, altered, unexpected)
	}
	fmt.Printf("  rows by source: %s; function event_type: %s\n", summary(sources), summary(eventTypes))
	if statsLine != "" {
		fmt.Printf("  stats: %s\n", statsLine)
	}
	if failures > 0 {
		fmt.Fprintf(os.Stderr, "check: mode=%s FAILED (%d problems)\n", *mode, failures)
		os.Exit(1)
	}
}

// query runs a LogsQL query and returns the rows (string fields only).
func query(base, user, pass, tenant, q string) ([]map[string]string, error) {
	req, err := http.NewRequest("GET", base+"/select/logsql/query?query="+url.QueryEscape(q), nil)
	if err != nil {
		return nil, err
	}
	if user != "" {
		req.SetBasicAuth(user, pass)
	}
	if tenant != "" {
		acc, proj, _ := strings.Cut(tenant, ":")
		req.Header.Set("AccountID", acc)
		if proj != "" {
			req.Header.Set("ProjectID", proj)
		}
	}
	resp, err := (&http.Client{Timeout: 60 * time.Second}).Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("query %s: HTTP %s", q, resp.Status)
	}
	var rows []map[string]string
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(nil, 64<<20)
	for sc.Scan() {
		if len(sc.Bytes()) == 0 {
			continue
		}
		row := map[string]string{}
		if err := json.Unmarshal(sc.Bytes(), &row); err != nil {
			return nil, fmt.Errorf("query result %.200q: %v", sc.Text(), err)
		}
		rows = append(rows, row)
	}
	return rows, sc.Err()
}

// printRows prints up to n stored function lines, for the demo.
func printRows(rows []map[string]string, n int) {
	sort.SliceStable(rows, func(i, j int) bool {
		ti, _ := time.Parse(time.RFC3339Nano, rows[i]["_time"])
		tj, _ := time.Parse(time.RFC3339Nano, rows[j]["_time"])
		return ti.Before(tj)
	})
	for _, row := range rows {
		if row["source"] != "function" {
			continue
		}
		if n--; n < 0 {
			break
		}
		fmt.Printf("  %s  %s  request_id=%s level=%s\n      %s\n",
			row["_time"], row["_stream"], row["request_id"], row["level"], row["_msg"])
	}
}

// printedTime extracts the timestamp the runtime printed in a line.
func printedTime(line string) time.Time {
	var j struct{ Timestamp string }
	ts, _, _ := strings.Cut(line, "\t")
	if json.Unmarshal([]byte(line), &j) == nil {
		ts = j.Timestamp
	}
	t, _ := time.Parse(time.RFC3339Nano, ts)
	return t
}

func absDur(d time.Duration) time.Duration {
	if d < 0 {
		return -d
	}
	return d
}

func summary(m map[string]int) string {
	var parts []string
	for k, v := range m {
		if k == "" {
			k = "(none)"
		}
		parts = append(parts, fmt.Sprintf("%s=%d", k, v))
	}
	sort.Strings(parts)
	if len(parts) == 0 {
		return "(none)"
	}
	return strings.Join(parts, " ")
}

func fatal(err error) {
	fmt.Fprintln(os.Stderr, "check:", err)
	os.Exit(2)
}
