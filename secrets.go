package main

import (
	"bytes"
	"cmp"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json/jsontext"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/http"
	"net/netip"
	"net/url"
	"os"
	"slices"
	"strings"
	"sync"
	"time"
)

const (
	// refreshEvery a fetched secret is fetched again, for rotations that
	// Loki has not refused yet; rotationPause is the least time between a
	// fetch and one asked for by a refusal (doubling while refusals go on);
	// a fetch gives up after awsTimeout of time the environment ran.

	refreshEvery, rotationPause, awsTimeout = time.Hour, 10 * time.Second, 10 * time.Second
	// retryBaseFetch and retryMaxFetch shape the backoff of failed fetches.
	retryBaseFetch, retryMaxFetch = time.Second, 5 * time.Minute
)

// secretRef is a credential kept in AWS: a Secrets Manager secret (a key of
// it, if it is JSON) or an SSM parameter, named by ARN in variable.
type secretRef struct {
	variable, arn    string
	service, region  string // secretsmanager or ssm
	endpoint         string // the service's URL in the region
	id               string // SecretId or parameter Name
	key, stage, vers string // of a secret: JSON key, version stage and id
}

// parseSecretARN reads an ARN that variable holds (it starts with arn:):
// arn:<partition>:secretsmanager:<region>:<account>:secret:<name>[:<json-key>:<version-stage>:<version-id>]
// or arn:<partition>:ssm:<region>:<account>:parameter/<name>. The
// partition, region and account are checked before they make a host name.
func parseSecretARN(variable, arn string) (*secretRef, error) {
	p := strings.SplitN(arn, ":", 7)
	r := secretRef{variable: variable, arn: arn}
	switch {
	case len(p) == 7 && p[2] == "secretsmanager" && p[5] == "secret":
		f := strings.Split(p[6], ":")
		if len(f) == 4 || len(f) == 1 {
			f = append(f, "", "", "")
			r.service, r.region, r.id = p[2], p[3], strings.Join(p[:6], ":")+":"+f[0]
			r.key, r.stage, r.vers = f[1], f[2], f[3]
		}
	case len(p) == 6 && p[2] == "ssm" && strings.HasPrefix(p[5], "parameter/"):
		r.service, r.region, r.id = p[2], p[3], arn
	}
	// Each partition's DNS suffix; the region is digits, lowercase letters
	// and dashes, the account 12 digits.
	_, suffix, _ := strings.Cut(" aws:amazonaws.com aws-us-gov:amazonaws.com aws-cn:amazonaws.com.cn aws-eusc:amazonaws.eu aws-iso:c2s.ic.gov "+
		"aws-iso-b:sc2s.sgov.gov aws-iso-e:cloud.adc-e.uk aws-iso-f:csp.hci.ic.gov ", " "+p[1]+":")
	suffix, _, _ = strings.Cut(suffix, " ")
	if r.service == "" || suffix == "" || r.region == "" || strings.Trim(r.region, "-0123456789abcdefghijklmnopqrstuvwxyz") != "" ||
		len(p[4]) != 12 || strings.Trim(p[4], "0123456789") != "" || strings.HasSuffix(r.id, ":") || strings.HasSuffix(r.id, "/") {
		return nil, fmt.Errorf("%s: a value that starts with arn: must be the ARN of a secret (arn:aws:secretsmanager:<region>:<account>:secret:<name>, "+
			"with :<json-key>:<version-stage>:<version-id> to pick a key of a JSON secret) or of an SSM parameter "+
			"(arn:aws:ssm:<region>:<account>:parameter/<name>); it is not shown, in case it is a secret", variable)
	}
	r.endpoint = "https://" + r.service + "." + r.region + "." + suffix
	return &r, nil
}

// secrets keeps Loki's credentials when some of them are kept in Secrets
// Manager or SSM Parameter Store. One goroutine, run, fetches them: once
// at the start, again when Loki refuses them, and every refreshEvery.
type secrets struct {
	values  [3]string     // user, password, bearer token; "" or a value for no ref
	refs    [3]*secretRef // the values to fetch
	getenv  func(string) string
	client  *http.Client
	ticks   <-chan time.Time // if set, stands in for fetch's ticker (tests)
	log     *onceLogger
	changed func()        // called after a fetch: the header changed, or it failed
	again   chan struct{} // capacity 1: fetch now
	hurry   chan struct{} // capacity 1: SHUTDOWN came; the next fetch asked for goes at once
	start   sync.Once

	mu             sync.Mutex // guards the fields below
	header         string     // the Authorization header, once fetched
	stale, failing bool       // Loki refused header; the last fetch failed
}

// awsCredentials sign AWS requests.
type awsCredentials struct{ keyID, secret, token string }

// authorization returns the header, "" until it was fetched (again, once
// Loki refused it), and whether the last fetch failed.
func (c *secrets) authorization() (string, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.stale {
		return "", c.failing
	}
	return c.header, c.failing
}

// refresh asks for the credentials again, after Loki refused them.
func (c *secrets) refresh() {
	c.mu.Lock()
	c.stale = true
	c.mu.Unlock()
	notify(c.again)
}

// run fetches the credentials until ctx ends: the first time at once,
// then every refreshEvery, and when Loki refused them, at least pause
// after the last fetch (but once at SHUTDOWN, at once). pause starts at
// rotationPause and doubles while fetches bring the same credentials that
// Loki refuses. A failure is told once per kind and retried with a
// backoff.
func (c *secrets) run(ctx context.Context) {
	for delay, pause := retryBaseFetch, rotationPause; ; {
		fetched := time.Now()
		header, err := c.fetch(ctx)
		wait := refreshEvery
		if err != nil {
			kind, _, _ := strings.Cut(err.Error(), " (") // what follows varies: see do
			c.log.once(kind, "%v; lines stay buffered, retrying", err)
			wait, delay = delay, min(2*delay, retryMaxFetch)
		} else {
			delay = retryBaseFetch
		}
		c.mu.Lock()
		if c.failing = err != nil; !c.failing {
			if header != c.header {
				pause = rotationPause // rotated
			}
			c.header, c.stale = header, false
		}
		c.mu.Unlock()
		c.changed()
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
			pause = rotationPause
		case <-c.again:
			select {
			case <-time.After(time.Until(fetched.Add(pause))):
			case <-c.hurry: // the refused lines have only until the deadline
			}
			pause = min(2*pause, retryMaxFetch)
		}
	}
}

// fetch reads every credential kept in AWS and returns the header. It
// gives up after awsTimeout of time the environment ran, in ticks of a
// second: a time.Ticker gives a process that was frozen one tick at the
// thaw, however long the freeze (pushes count time so too).
func (c *secrets) fetch(ctx context.Context) (string, error) {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	go func() {
		ticks := cmp.Or(c.ticks, time.Tick(time.Second)) // collected once unreferenced
		for range awsTimeout / time.Second {
			select {
			case <-ctx.Done():
				return
			case <-ticks:
			}
		}
		cancel(errors.New("no answer in 10s")) // awsTimeout
	}()
	creds, err := c.credentials(ctx)
	v := c.values
	for i, r := range c.refs {
		if r != nil && err == nil {
			if v[i], err = c.value(ctx, r, creds); err != nil {
				return "", fmt.Errorf("%s: read %s: %w", r.variable, r.arn, err)
			}
		}
	}
	if err != nil {
		return "", err
	}
	header, err := authorization(v[0], v[1], v[2])
	if err != nil {
		return "", fmt.Errorf("the credentials kept in AWS: %w", err)
	}
	return header, nil
}

// credentials returns the function's AWS credentials: those Lambda puts in
// the environment, else (SnapStart) those of the container credentials
// endpoint, asked afresh for each fetch so that they never expire, with the
// token of AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE, read each time (it may
// rotate), else of AWS_CONTAINER_AUTHORIZATION_TOKEN, as in the AWS SDKs.
func (c *secrets) credentials(ctx context.Context) (awsCredentials, error) {
	if id := c.getenv("AWS_ACCESS_KEY_ID"); id != "" {
		return awsCredentials{id, c.getenv("AWS_SECRET_ACCESS_KEY"), c.getenv("AWS_SESSION_TOKEN")}, nil
	}
	req, variable, err := containerRequest(ctx, c.getenv)
	if err != nil {
		return awsCredentials{}, err
	}
	token, answer := []byte(c.getenv("AWS_CONTAINER_AUTHORIZATION_TOKEN")), []byte(nil)
	if file := c.getenv("AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE"); file != "" {
		token, err = os.ReadFile(file)
	}
	if err == nil {
		req.Header.Set("Authorization", strings.TrimSpace(string(token)))
		answer, err = c.do(req)
	}
	switch creds := (awsCredentials{jsonField(answer, "AccessKeyId"), jsonField(answer, "SecretAccessKey"), jsonField(answer, "Token")}); {
	case err == nil && creds.keyID != "" && creds.secret != "":
		return creds, nil
	case err == nil:
		err = errors.New("the answer has no AccessKeyId/SecretAccessKey")
	}
	return awsCredentials{}, fmt.Errorf("AWS credentials from %s: %w", variable, err)
}

// containerRequest returns the request for the container credentials
// endpoint, without its token, and the variable that names it; an error if
// none is set. As in the AWS SDKs, AWS_CONTAINER_CREDENTIALS_RELATIVE_URI,
// a path at 169.254.170.2 (ECS), wins over AWS_CONTAINER_CREDENTIALS_FULL_URI,
// which may be any https URL but an http one only where AWS serves
// credentials (credentialsHost): elsewhere the token would go in the clear.
func containerRequest(ctx context.Context, getenv func(string) string) (*http.Request, string, error) {
	variable, uri := "AWS_CONTAINER_CREDENTIALS_FULL_URI", getenv("AWS_CONTAINER_CREDENTIALS_FULL_URI")
	if rel := getenv("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI"); rel != "" {
		variable, uri = "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI", "http://169.254.170.2"+rel
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, uri, nil)
	if uri == "" {
		return nil, "", errors.New("no AWS credentials: neither AWS_ACCESS_KEY_ID nor AWS_CONTAINER_CREDENTIALS_RELATIVE_URI or _FULL_URI is set")
	} else if err != nil || req.URL.Host == "" || req.URL.Scheme != "https" && (req.URL.Scheme != "http" || !credentialsHost(req.URL.Hostname())) {
		return nil, variable, errors.New(variable + ": not an https:// URL, nor an http:// one to where AWS serves credentials (loopback, 169.254.170.2, 169.254.170.23, fd00:ec2::23)")
	}
	return req, variable, nil
}

// credentialsHost reports whether AWS serves container credentials over
// http at host: a loopback address, ECS's 169.254.170.2, EKS Pod
// Identity's 169.254.170.23 and fd00:ec2::23 (written as AWS writes them).
// Where the SDKs resolve a host name to see if it is loopback, only
// localhost is taken here, without DNS.
func credentialsHost(host string) bool {
	ip, _ := netip.ParseAddr(host)
	return ip.IsLoopback() || slices.Contains([]string{"localhost", "169.254.170.2", "169.254.170.23", "fd00:ec2::23"}, host)
}

// value reads the credential r: GetSecretValue or GetParameter, in the
// JSON 1.1 protocol, at the service's endpoint in the ARN's region, unless
// AWS_ENDPOINT_URL_SECRETS_MANAGER or _SSM, or AWS_ENDPOINT_URL, names one.
func (c *secrets) value(ctx context.Context, r *secretRef, creds awsCredentials) (string, error) {
	target, body, env := "secretsmanager.GetSecretValue", []byte(`{"SecretId":`), "AWS_ENDPOINT_URL_SECRETS_MANAGER"
	if r.service == "ssm" {
		target, body, env = "AmazonSSM.GetParameter", []byte(`{"WithDecryption":true,"Name":`), "AWS_ENDPOINT_URL_SSM"
	}
	body, _ = jsontext.AppendQuote(body, r.id)
	for _, f := range [][2]string{{"VersionStage", r.stage}, {"VersionId", r.vers}} {
		if f[1] != "" {
			body, _ = jsontext.AppendQuote(append(body, `,"`+f[0]+`":`...), f[1])
		}
	}
	body = append(body, '}')
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, cmp.Or(c.getenv(env), c.getenv("AWS_ENDPOINT_URL"), r.endpoint), bytes.NewReader(body))
	if err != nil { // not err: it shows the URL, credentials and all
		return "", errors.New(env + " or AWS_ENDPOINT_URL is not a URL")
	}
	req.Header.Set("Content-Type", "application/x-amz-json-1.1")
	req.Header.Set("X-Amz-Target", target)
	signV4(req, body, creds, r.region, r.service, time.Now())
	answer, err := c.do(req)
	v := jsonField(answer, "SecretString")
	if r.service == "ssm" {
		v = jsonField(answer, "Parameter", "Value")
	} else if r.key != "" {
		v = jsonField([]byte(v), r.key)
	}
	if v = strings.TrimSpace(v); v == "" && err == nil {
		err = errors.New("no text there: it is empty or binary, or its JSON has no string or number at the key")
	}
	return v, err
}

// do makes an AWS request and returns the answer to a 2xx status; else an
// error with the AWS error code, never the answer's text, or "unreachable"
// and why. Details that vary (addresses, ports) go in parentheses: run
// tells a failure once per kind, its text before the first " (".
func (c *secrets) do(req *http.Request) ([]byte, error) {
	resp, err := c.client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("unreachable (%w)", errors.Unwrap(err)) // a *url.Error's cause: no URL
	}
	defer resp.Body.Close()
	answer, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if resp.StatusCode/100 != 2 {
		code := jsonField(answer, "__type")
		return nil, fmt.Errorf("%s (HTTP %d)", cmp.Or(code[strings.LastIndex(code, "#")+1:], "no error code"), resp.StatusCode)
	}
	return answer, err
}

// jsonField returns the string at path in the JSON object b, as
// {"Parameter":{"Value":"…"}} at Parameter, Value, or the text of a number
// there as written; "" if there is neither.
func jsonField(b []byte, path ...string) string {
	d := jsontext.NewDecoder(bytes.NewReader(b), jsontext.AllowDuplicateNames(true))
	for _, key := range path {
		if tok, err := d.ReadToken(); err != nil || tok.Kind() != '{' {
			return ""
		}
		for name, err := d.ReadToken(); name.Kind() != '"' || name.String() != key; name, err = d.ReadToken() {
			if err != nil || name.Kind() != '"' || d.SkipValue() != nil {
				return "" // the object ends without key, or is not JSON
			}
		}
	}
	switch tok, _ := d.ReadToken(); tok.Kind() {
	case '"', '0':
		return tok.String() // a number's raw text
	}
	return ""
}

// signV4 signs req, whose body is body, with AWS Signature Version 4 for
// service in region at t: it sets X-Amz-Date, X-Amz-Security-Token if
// there is a session token, and Authorization, signing every header.
func signV4(req *http.Request, body []byte, creds awsCredentials, region, service string, t time.Time) {
	date := t.UTC().Format("20060102T150405Z")
	req.Header.Set("X-Amz-Date", date)
	if creds.token != "" {
		req.Header.Set("X-Amz-Security-Token", creds.token)
	}
	headers := map[string]string{"host": cmp.Or(req.Host, req.URL.Host)}
	for name, values := range req.Header {
		var trimmed []string // each value with its spaces trimmed and runs of them made one
		for _, v := range values {
			trimmed = append(trimmed, strings.Join(strings.Fields(v), " "))
		}
		headers[strings.ToLower(name)] = strings.Join(trimmed, ",")
	}

	var path, canonical strings.Builder
	for _, segment := range strings.Split(cmp.Or(req.URL.Path, "/"), "/")[1:] {
		path.WriteString("/" + awsEscape(segment))
	}
	names := slices.Sorted(maps.Keys(headers))
	for _, name := range names {
		canonical.WriteString(name + ":" + headers[name] + "\n")
	}
	signed := strings.Join(names, ";")
	scope := date[:8] + "/" + region + "/" + service + "/aws4_request"
	request := strings.Join([]string{req.Method, path.String(), req.URL.RawQuery, canonical.String(), signed, hexSHA256(body)}, "\n")
	toSign := "AWS4-HMAC-SHA256\n" + date + "\n" + scope + "\n" + hexSHA256([]byte(request))
	key := []byte("AWS4" + creds.secret)
	for _, part := range []string{date[:8], region, service, "aws4_request", toSign} {
		mac := hmac.New(sha256.New, key)
		mac.Write([]byte(part))
		key = mac.Sum(nil)
	}
	req.Header.Set("Authorization", "AWS4-HMAC-SHA256 Credential="+creds.keyID+"/"+scope+", SignedHeaders="+signed+", Signature="+hex.EncodeToString(key))
}

// awsEscape URI-encodes s as SigV4 does: all but A-Z a-z 0-9 - _ . ~.
func awsEscape(s string) string { return strings.ReplaceAll(url.QueryEscape(s), "+", "%20") }

func hexSHA256(b []byte) string {
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}
