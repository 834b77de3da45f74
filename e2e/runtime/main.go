// Command runtime is the test function of the end-to-end bed: a minimal
// custom runtime speaking the Lambda Runtime API (stdlib only).
//
// For each invocation it prints M uniquely tagged log lines to stdout and then
// answers with the exact lines it printed, so that the caller knows what the
// log store must contain. The invocation payload is a JSON object:
//
//	{"run":"<run id>","inv":<invocation number>,"lines":<M>,"format":"text|json|mixed","delayMs":<D>}
//
// With delayMs > 0 each line is written on its own with a pause of D ms
// between lines, so that the lines of concurrent invocations interleave;
// otherwise all lines of an invocation are written at once.
// Missing fields fall back to the env vars E2E_LINES (default 10) and
// E2E_FORMAT (default mixed). Line n of invocation i of run r carries the id
// "r-i-n" in its message "line r-i-n". Formats:
//
//	text:  <RFC3339 timestamp>\t<request id>\tINFO\tline <id>   (managed runtimes' prefix)
//	json:  {"timestamp":"...","level":"INFO","requestId":"...","message":"line <id>"}
//	mixed: alternates text (even n) and json (odd n)
package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"log"
	"net/http"
	"os"
	"strconv"
	"strings"
	"time"
)

// payload is the invocation event sent by run.sh.
type payload struct {
	Run     string `json:"run"`
	Inv     int    `json:"inv"`
	Lines   int    `json:"lines"`
	Format  string `json:"format"`
	DelayMs int    `json:"delayMs"`
}

// response is what the function returns: the request id and the printed lines.
type response struct {
	RequestID string   `json:"requestId"`
	Lines     []string `json:"lines"`
}

// jsonLine is the shape of a JSON log line (as Lambda's JSON log format).
type jsonLine struct {
	Timestamp string `json:"timestamp"`
	Level     string `json:"level"`
	RequestID string `json:"requestId"`
	Message   string `json:"message"`
}

func main() {
	log.SetFlags(0)
	log.SetPrefix("e2e-runtime: ")
	api := os.Getenv("AWS_LAMBDA_RUNTIME_API")
	if api == "" {
		log.Fatal("AWS_LAMBDA_RUNTIME_API is not set")
	}
	// On Lambda Managed Instances one runtime process serves up to
	// AWS_LAMBDA_MAX_CONCURRENCY invocations at once: run that many workers.
	workers := max(envInt("AWS_LAMBDA_MAX_CONCURRENCY", 1), 1)
	for w := 1; w < workers; w++ {
		go loop(api)
	}
	loop(api)
}

// loop serves invocations one after the other until the process is stopped.
func loop(api string) {
	base := "http://" + api + "/2018-06-01/runtime/invocation/"
	client := &http.Client{} // no timeout: /next blocks until an invocation arrives
	for {
		resp, err := client.Get(base + "next")
		if err != nil {
			log.Fatalf("next: %v", err)
		}
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil || resp.StatusCode != http.StatusOK {
			log.Fatalf("next: status %d, err %v", resp.StatusCode, err)
		}
		id := resp.Header.Get("Lambda-Runtime-Aws-Request-Id")
		out, err := json.Marshal(handle(id, body))
		if err != nil {
			log.Fatal(err)
		}
		r, err := client.Post(base+id+"/response", "application/json", bytes.NewReader(out))
		if err != nil {
			log.Fatalf("response: %v", err)
		}
		io.Copy(io.Discard, r.Body)
		r.Body.Close()
		if r.StatusCode != http.StatusAccepted {
			log.Fatalf("response: status %d", r.StatusCode)
		}
	}
}

// handle prints the lines of one invocation and returns them.
func handle(requestID string, event []byte) response {
	p := payload{Lines: envInt("E2E_LINES", 10), Format: os.Getenv("E2E_FORMAT")}
	if len(bytes.TrimSpace(event)) > 0 {
		if err := json.Unmarshal(event, &p); err != nil {
			log.Printf("bad payload %q: %v", event, err)
		}
	}
	if p.Format == "" {
		p.Format = "mixed"
	}
	res := response{RequestID: requestID, Lines: make([]string, 0, p.Lines)}
	var buf strings.Builder
	for n := 0; n < p.Lines; n++ {
		msg := fmt.Sprintf("line %s-%d-%d", p.Run, p.Inv, n)
		ts := time.Now().UTC().Format("2006-01-02T15:04:05.000Z")
		var line string
		if p.Format == "text" || (p.Format == "mixed" && n%2 == 0) {
			line = ts + "\t" + requestID + "\tINFO\t" + msg
		} else {
			b, _ := json.Marshal(jsonLine{Timestamp: ts, Level: "INFO", RequestID: requestID, Message: msg})
			line = string(b)
		}
		res.Lines = append(res.Lines, line)
		if p.DelayMs > 0 {
			os.Stdout.WriteString(line + "\n")
			time.Sleep(time.Duration(p.DelayMs) * time.Millisecond)
			continue
		}
		buf.WriteString(line + "\n")
	}
	// One write per invocation: the emulator splits it per line, and os.File
	// serializes concurrent writes, so workers never interleave mid-line.
	os.Stdout.WriteString(buf.String())
	return res
}

func envInt(name string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(name)); err == nil {
		return v
	}
	return def
}
