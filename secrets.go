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
	"net/url"
	"slices"
	"strings"
	"sync"
	"time"
)

const (
	// refreshEvery a fetched secret is fetched again, for rotations that
	// Loki has not refused yet; rotationPause is the least time between a
	// fetch and one asked for by a refusal (doubling while refusals go on).

	refreshEvery, rotationPause, awsTimeout = time.Hour, 10 * time.Second, 10 * time.Second
	// retryBaseFetch and retryMaxFetch shape the backoff of failed fetches.
	retryBaseFetch, retryMaxFetch = time.Second, 5 * time.Minute
)

// secretRef is a credential kept in AWS: a Secrets Manager secret (a key of
// it, if it is JSON) or an SSM parameter, named by ARN in variable.
type secretRef struct {
	variable, arn    string
	service, region  string // secretsmanager or ssm
	id               string // SecretId or parameter Name
	key, stage, vers string // of a secret: JSON key, version stage and id
}

// parseSecretARN reads an ARN that variable holds:
// arn:aws:secretsmanager:<region>:<account>:secret:<name>[:<json-key>:<version-stage>:<version-id>]
// or arn:aws:ssm:<region>:<account>:parameter/<name>.
func parseSecretARN(variable, arn string) (secretRef, error) {
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
	if r.service == "" || p[0] != "arn" || !strings.HasPrefix(p[1], "aws") || r.region == "" || strings.HasSuffix(r.id, ":") || strings.HasSuffix(r.id, "/") {
		return r, fmt.Errorf("%s: a value that starts with arn: must be the ARN of a secret (arn:aws:secretsmanager:<region>:<account>:secret:<name>, "+
			"with :<json-key>:<version-stage>:<version-id> to pick a key of a JSON secret) or of an SSM parameter "+
			"(arn:aws:ssm:<region>:<account>:parameter/<name>); it is not shown, in case it is a secret", variable)
	}
	return r, nil
}

// secrets keeps Loki's credentials when some of them are kept in Secrets
// Manager or SSM Parameter Store. One goroutine, run, fetches them: once
// at the start, again when Loki refuses them, and every refreshEvery.
type secrets struct {
	values  [3]string     // user, password, bearer token; "" or a value for no ref
	refs    [3]*secretRef // the values to fetch
	getenv  func(string) string
	client  *http.Client
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
			c.log.once(err.Error(), "%v; lines stay buffered, retrying", err)
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

// fetch reads every credential kept in AWS and returns the header.
func (c *secrets) fetch(ctx context.Context) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, awsTimeout)
	defer cancel()
	creds, err := c.credentials(ctx)
	v := c.values
	for i, r := range c.refs {
		if r != nil && err == nil {
			if v[i], err = c.value(ctx, r, creds); err != nil {
				return "", fmt.Errorf("%s: read %s: %w", r.variable, r.arn, err)
			}
			v[i] = strings.TrimSpace(v[i])
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
// endpoint, asked afresh for each fetch so that they never expire.
func (c *secrets) credentials(ctx context.Context) (awsCredentials, error) {
	if id := c.getenv("AWS_ACCESS_KEY_ID"); id != "" {
		return awsCredentials{id, c.getenv("AWS_SECRET_ACCESS_KEY"), c.getenv("AWS_SESSION_TOKEN")}, nil
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.getenv("AWS_CONTAINER_CREDENTIALS_FULL_URI"), nil)
	if err != nil || req.URL.Host == "" {
		return awsCredentials{}, errors.New("no AWS credentials: neither AWS_ACCESS_KEY_ID nor AWS_CONTAINER_CREDENTIALS_FULL_URI is set")
	}
	req.Header.Set("Authorization", c.getenv("AWS_CONTAINER_AUTHORIZATION_TOKEN"))
	answer, err := c.do(req)
	if err != nil {
		return awsCredentials{}, fmt.Errorf("AWS credentials from AWS_CONTAINER_CREDENTIALS_FULL_URI: %w", err)
	}
	return awsCredentials{jsonField(answer, "AccessKeyId"), jsonField(answer, "SecretAccessKey"), jsonField(answer, "Token")}, nil
}

// value reads the credential r: GetSecretValue or GetParameter, in the
// JSON 1.1 protocol, at the service's endpoint in the ARN's region.
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
	domain := map[bool]string{false: "amazonaws.com", true: "amazonaws.com.cn"}[strings.HasPrefix(r.arn, "arn:aws-cn:")]
	endpoint := cmp.Or(c.getenv(env), c.getenv("AWS_ENDPOINT_URL"), "https://"+r.service+"."+r.region+"."+domain)
	body = append(body, '}')
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, endpoint, bytes.NewReader(body))
	if err != nil {
		return "", err
	}
	req.Header.Set("Content-Type", "application/x-amz-json-1.1")
	req.Header.Set("X-Amz-Target", target)
	signV4(req, body, creds, r.region, r.service, time.Now())
	answer, err := c.do(req)
	if err != nil {
		return "", err
	}
	v := jsonField(answer, "SecretString")
	if r.service == "ssm" {
		v = jsonField(answer, "Parameter", "Value")
	} else if r.key != "" {
		v = jsonField([]byte(v), r.key)
	}
	if strings.TrimSpace(v) == "" {
		return "", errors.New("no text there: it is empty or binary, or its JSON has no string at the key")
	}
	return v, nil
}

// do makes an AWS request and returns the answer to a 2xx status; else an
// error with the AWS error code, never the answer's text.
func (c *secrets) do(req *http.Request) ([]byte, error) {
	resp, err := c.client.Do(req)
	if err != nil {
		if ue, ok := errors.AsType[*url.Error](err); ok {
			err = ue.Err // without the URL
		}
		return nil, err
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
// {"Parameter":{"Value":"…"}} at Parameter, Value; "" if there is none.
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
	if tok, err := d.ReadToken(); err == nil && tok.Kind() == '"' {
		return tok.String()
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
