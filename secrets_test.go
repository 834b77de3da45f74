package main

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func TestParseSecretARN(t *testing.T) {
	const sm, smHost = "arn:aws:secretsmanager:eu-west-1:111122223333:secret:", "https://secretsmanager.eu-west-1.amazonaws.com"
	good := []struct {
		arn  string
		want secretRef
	}{
		{sm + "loki-AbCdEf", secretRef{service: "secretsmanager", region: "eu-west-1", endpoint: smHost, id: sm + "loki-AbCdEf"}},
		{sm + "loki", secretRef{service: "secretsmanager", region: "eu-west-1", endpoint: smHost, id: sm + "loki"}}, // a short ARN
		{sm + "loki-AbCdEf:password::", secretRef{service: "secretsmanager", region: "eu-west-1", endpoint: smHost, id: sm + "loki-AbCdEf", key: "password"}},
		{sm + "loki:token:AWSPREVIOUS:", secretRef{service: "secretsmanager", region: "eu-west-1", endpoint: smHost, id: sm + "loki", key: "token", stage: "AWSPREVIOUS"}},
		{sm + "loki:::0b4d-11", secretRef{service: "secretsmanager", region: "eu-west-1", endpoint: smHost, id: sm + "loki", vers: "0b4d-11"}},
		{"arn:aws-cn:secretsmanager:cn-north-1:111122223333:secret:loki", secretRef{service: "secretsmanager", region: "cn-north-1",
			endpoint: "https://secretsmanager.cn-north-1.amazonaws.com.cn", id: "arn:aws-cn:secretsmanager:cn-north-1:111122223333:secret:loki"}},
		{"arn:aws:ssm:us-east-1:111122223333:parameter/loki/token", secretRef{service: "ssm", region: "us-east-1",
			endpoint: "https://ssm.us-east-1.amazonaws.com", id: "arn:aws:ssm:us-east-1:111122223333:parameter/loki/token"}},
		{"arn:aws-us-gov:ssm:us-gov-west-1:111122223333:parameter/loki", secretRef{service: "ssm", region: "us-gov-west-1",
			endpoint: "https://ssm.us-gov-west-1.amazonaws.com", id: "arn:aws-us-gov:ssm:us-gov-west-1:111122223333:parameter/loki"}},
		{"arn:aws-iso-b:ssm:us-isob-east-1:111122223333:parameter/loki", secretRef{service: "ssm", region: "us-isob-east-1",
			endpoint: "https://ssm.us-isob-east-1.sc2s.sgov.gov", id: "arn:aws-iso-b:ssm:us-isob-east-1:111122223333:parameter/loki"}},
		{"arn:aws-eusc:secretsmanager:eusc-de-east-1:111122223333:secret:loki", secretRef{service: "secretsmanager", region: "eusc-de-east-1",
			endpoint: "https://secretsmanager.eusc-de-east-1.amazonaws.eu", id: "arn:aws-eusc:secretsmanager:eusc-de-east-1:111122223333:secret:loki"}},
	}
	for _, tc := range good {
		got, err := parseSecretARN("LOKI_PASSWORD", tc.arn)
		tc.want.variable, tc.want.arn = "LOKI_PASSWORD", tc.arn
		if err != nil || *got != tc.want {
			t.Errorf("parseSecretARN(%q) = %+v, %v; want %+v", tc.arn, got, err, tc.want)
		}
	}
	for _, arn := range []string{
		"arn:aws:s3:::loki-bucket",
		"arn:aws:secretsmanager::111122223333:secret:loki", // no region
		sm,                   // no name
		sm + "loki:password", // a key without stage and version fields
		sm + "loki:a:b:c:d",
		"arn:aws:secretsmanager:eu-west-1:111122223333:loki",
		"arn:aws:ssm:us-east-1:111122223333:parameter/",
		"arn:aws:ssm:us-east-1:111122223333:document/loki",
		"arn:gcp:ssm:us-east-1:111122223333:parameter/loki",
		// Checked before the region and partition become a host name.
		"arn:aws:secretsmanager:evil.example/x?:111122223333:secret:loki",
		"arn:aws:secretsmanager:EU-WEST-1:111122223333:secret:loki",
		"arn:aws:ssm:eu-west-1.evil.example:111122223333:parameter/loki",
		"arn:aws-evil:ssm:us-east-1:111122223333:parameter/loki",
		"arn:awsome:ssm:us-east-1:111122223333:parameter/loki",
		"arn:aws:ssm:us-east-1:11112222333:parameter/loki",
		"arn:aws:ssm:us-east-1:11112222333x:parameter/loki",
		"arn:aws:secretsmanager:us-east-1::secret:loki",
	} {
		_, err := parseSecretARN("LOKI_BEARER_TOKEN", arn)
		if err == nil || !strings.HasPrefix(err.Error(), "LOKI_BEARER_TOKEN: ") || !strings.Contains(err.Error(), "arn:aws:secretsmanager:<region>") {
			t.Errorf("parseSecretARN(%q): got %v, want an error naming LOKI_BEARER_TOKEN and the forms", arn, err)
		}
		if err != nil && strings.Contains(err.Error(), arn) { // it may be a password that starts with arn:
			t.Errorf("parseSecretARN(%q): the error shows the value: %v", arn, err)
		}
	}
	// Through the configuration: a bad ARN fails Init with its variable.
	_, err := loadConfig(mapEnv(map[string]string{"LOKI_URL": "https://l", "LOKI_USERNAME": "1", "LOKI_PASSWORD": "arn:aws:ssm:x"}))
	if err == nil || !strings.HasPrefix(err.Error(), "LOKI_PASSWORD: ") {
		t.Errorf("loadConfig with a bad ARN: %v", err)
	}
	cfg, err := loadConfig(mapEnv(map[string]string{"LOKI_URL": "https://l", "LOKI_USERNAME": "1", "LOKI_PASSWORD": sm + "loki", "AWS_ACCESS_KEY_ID": "AKIA1"}))
	if err != nil || cfg.target.secrets == nil || cfg.target.secrets.refs[1] == nil || cfg.target.secrets.values != [3]string{"1", "", ""} {
		t.Errorf("loadConfig with an ARN: %v, %+v", err, cfg.target.secrets)
	}
}

// TestSignV4Vectors checks the signer against AWS's published SigV4 test
// suite (aws-sig-v4-test-suite): same credentials, time, region and
// service for every case.
func TestSignV4Vectors(t *testing.T) {
	creds := awsCredentials{keyID: "AKIDEXAMPLE", secret: "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"}
	at := time.Date(2015, 8, 30, 12, 36, 0, 0, time.UTC)
	const token = "AQoDYXdzEPT//////////wEXAMPLEtc764bNrC9SAPBSM22wDOk4x4HIZ8j4FZTwdQWLWsKWHGBuFqwAeMicRXmxfpSPfIeoIYRqTflfKD8YUuwthAx7mSEI/qkPpKPi/kMcGdQrmGdeehM4IC1NtBmUpp2wUE8phUZampKsburEDy0KPkyQDYwT7WZ0wq5VSXDvp75YU9HFvlRd8Tx6q6fE8YQcHNVXAkiY9q6d+xo0rKwT38xVqr7ZD0u0iPPkUL64lIZbqBAz+scqKmlzm8FDrypNC9Yjc8fPOLn9FX9KSYvKTr4rvx3iSIlTJabIQwj2ICCR/oLxBA=="
	for _, tc := range []struct {
		name, method, path, body, token string
		headers                         [][2]string
		signed, signature               string
	}{
		{name: "get-vanilla", method: "GET", path: "/", signed: "host;x-amz-date",
			signature: "5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31"},
		{name: "post-vanilla", method: "POST", path: "/", signed: "host;x-amz-date",
			signature: "5da7c1a2acd57cee7505fc6676e4e544621c30862966e37dddb68e92efbe5d6b"},
		{name: "post-vanilla-query", method: "POST", path: "/?Param1=value1", signed: "host;x-amz-date",
			signature: "28038455d6de14eafc1f9222cf5aa6f1a96197d7deb8263271d420d138af7f11"},
		{name: "get-unreserved", method: "GET", path: "/-._~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz", signed: "host;x-amz-date",
			signature: "07ef7494c76fa4850883e2b006601f940f8a34d404d0cfa977f52a65bbf5f24f"},
		{name: "get-utf8", method: "GET", path: "/ሴ", signed: "host;x-amz-date",
			signature: "8318018e0b0f223aa2bbf98705b62bb787dc9c0e678f255a891fd03141be5d85"},
		{name: "get-header-value-trim", method: "GET", path: "/", headers: [][2]string{{"My-Header1", " value1"}, {"My-Header2", ` "a   b   c"`}},
			signed: "host;my-header1;my-header2;x-amz-date", signature: "acc3ed3afb60bb290fc8d2dd0098b9911fcaa05412b367055dee359757a9c736"},
		{name: "get-header-value-order", method: "GET", path: "/", headers: [][2]string{{"My-Header1", "value4"}, {"My-Header1", "value1"}, {"My-Header1", "value3"}, {"My-Header1", "value2"}},
			signed: "host;my-header1;x-amz-date", signature: "08c7e5a9acfcfeb3ab6b2185e75ce8b1deb5e634ec47601a50643f830c755c01"},
		{name: "get-header-key-duplicate", method: "GET", path: "/", headers: [][2]string{{"My-Header1", "value2"}, {"My-Header1", "value2"}, {"My-Header1", "value1"}},
			signed: "host;my-header1;x-amz-date", signature: "c9d5ea9f3f72853aea855b47ea873832890dbdd183b4468f858259531a5138ea"},
		{name: "post-header-key-sort", method: "POST", path: "/", headers: [][2]string{{"My-Header1", "value1"}},
			signed: "host;my-header1;x-amz-date", signature: "c5410059b04c1ee005303aed430f6e6645f61f4dc9e1461ec8f8916fdf18852c"},
		{name: "post-header-value-case", method: "POST", path: "/", headers: [][2]string{{"My-Header1", "VALUE1"}},
			signed: "host;my-header1;x-amz-date", signature: "cdbc9802e29d2942e5e10b5bccfdd67c5f22c7c4e8ae67b53629efa58b974b7d"},
		{name: "post-x-www-form-urlencoded", method: "POST", path: "/", body: "Param1=value1", headers: [][2]string{{"Content-Type", "application/x-www-form-urlencoded"}},
			signed: "content-type;host;x-amz-date", signature: "ff11897932ad3f4e8b18135d722051e5ac45fc38421b1da7b9d196a0fe09473a"},
		{name: "post-sts-header-before", method: "POST", path: "/", token: token, signed: "host;x-amz-date;x-amz-security-token",
			signature: "85d96828115b5dc0cfc3bd16ad9e210dd772bbebba041836c64533a82be05ead"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req, err := http.NewRequest(tc.method, "https://example.amazonaws.com"+tc.path, strings.NewReader(tc.body))
			if err != nil {
				t.Fatal(err)
			}
			for _, h := range tc.headers {
				req.Header.Add(h[0], h[1])
			}
			c := creds
			c.token = tc.token
			signV4(req, []byte(tc.body), c, "us-east-1", "service", at)
			want := "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, SignedHeaders=" + tc.signed + ", Signature=" + tc.signature
			if got := req.Header.Get("Authorization"); got != want {
				t.Errorf("Authorization:\n got %s\nwant %s", got, want)
			}
			if got := req.Header.Get("X-Amz-Date"); got != "20150830T123600Z" {
				t.Errorf("X-Amz-Date %q", got)
			}
		})
	}
}

// checkSigV4 verifies r's AWS signature, written apart from signV4 and
// the other way round: it rebuilds the canonical request from what the
// Authorization header says was signed, as a server does.
func checkSigV4(r *http.Request, body []byte, keyID, secret, token string) (region, service string, err error) {
	params := map[string]string{}
	rest, ok := strings.CutPrefix(r.Header.Get("Authorization"), "AWS4-HMAC-SHA256 ")
	for _, p := range strings.Split(rest, ", ") {
		k, v, _ := strings.Cut(p, "=")
		params[k] = v
	}
	scope := strings.Split(params["Credential"], "/")
	date := r.Header.Get("X-Amz-Date")
	when, derr := time.Parse("20060102T150405Z", date)
	switch {
	case !ok || len(scope) != 5 || scope[4] != "aws4_request":
		return "", "", fmt.Errorf("authorization %q", r.Header.Get("Authorization"))
	case scope[0] != keyID:
		return "", "", fmt.Errorf("key id %q", scope[0])
	case derr != nil || scope[1] != date[:8] || time.Since(when).Abs() > 5*time.Minute:
		return "", "", fmt.Errorf("date %q, scope %q", date, scope[1])
	case r.Header.Get("X-Amz-Security-Token") != token:
		return "", "", fmt.Errorf("security token %q", r.Header.Get("X-Amz-Security-Token"))
	}
	signed := strings.Split(params["SignedHeaders"], ";")
	for _, must := range []string{"host", "x-amz-date", "x-amz-security-token", "x-amz-target", "content-type"} {
		if !slices.Contains(signed, must) && (must != "x-amz-security-token" || token != "") {
			return "", "", fmt.Errorf("%s is not signed: %v", must, signed)
		}
	}
	var canon bytes.Buffer
	fmt.Fprintf(&canon, "%s\n", r.Method)
	for i := 0; i < len(r.URL.Path); i++ {
		c := r.URL.Path[i]
		if c == '/' || c == '-' || c == '_' || c == '.' || c == '~' || 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' {
			canon.WriteByte(c)
		} else {
			fmt.Fprintf(&canon, "%%%02X", c)
		}
	}
	canon.WriteString("\n" + strings.ReplaceAll(r.URL.Query().Encode(), "+", "%20") + "\n")
	for _, name := range signed {
		values := r.Header.Values(name)
		if name == "host" {
			values = []string{r.Host}
		}
		for i, v := range values {
			values[i] = strings.Join(strings.Fields(v), " ")
		}
		fmt.Fprintf(&canon, "%s:%s\n", name, strings.Join(values, ","))
	}
	bodySum := sha256.Sum256(body)
	fmt.Fprintf(&canon, "\n%s\n%s", params["SignedHeaders"], hex.EncodeToString(bodySum[:]))
	canonSum := sha256.Sum256(canon.Bytes())
	toSign := "AWS4-HMAC-SHA256\n" + date + "\n" + strings.Join(scope[1:], "/") + "\n" + hex.EncodeToString(canonSum[:])
	mac := func(key []byte, data string) []byte {
		h := hmac.New(sha256.New, key)
		io.WriteString(h, data)
		return h.Sum(nil)
	}
	key := mac(mac(mac(mac([]byte("AWS4"+secret), scope[1]), scope[2]), scope[3]), "aws4_request")
	if want := hex.EncodeToString(mac(key, toSign)); !hmac.Equal([]byte(want), []byte(params["Signature"])) {
		return "", "", fmt.Errorf("signature %s, want %s for:\n%s", params["Signature"], want, canon.String())
	}
	return scope[2], scope[3], nil
}

// fakeAWS is Secrets Manager and SSM Parameter Store on one endpoint. It
// checks every request's signature with checkSigV4, and answers from
// values: by SecretId (SecretString) or parameter Name (Value).
type fakeAWS struct {
	t                    *testing.T
	srv                  *httptest.Server
	keyID, secret, token string
	hold                 chan struct{} // if set, answers wait for it to close

	mu       sync.Mutex // guards the fields below
	values   map[string]string
	failWith string // the __type of the next failNext answers (400)
	failNext int
	calls    []string // target and id of each call
}

func newFakeAWS(t *testing.T, values map[string]string) *fakeAWS {
	a := &fakeAWS{t: t, values: values, keyID: "AKIAFAKE", secret: "fake/aws/secret+key", token: "fake-session-token"}
	a.srv = httptest.NewServer(http.HandlerFunc(a.serve))
	t.Cleanup(a.srv.Close)
	return a
}

// env is the environment that points the extension at a.
func (a *fakeAWS) env(more map[string]string) map[string]string {
	env := map[string]string{"AWS_ACCESS_KEY_ID": a.keyID, "AWS_SECRET_ACCESS_KEY": a.secret, "AWS_SESSION_TOKEN": a.token,
		"AWS_ENDPOINT_URL_SECRETS_MANAGER": a.srv.URL, "AWS_ENDPOINT_URL_SSM": a.srv.URL}
	for k, v := range more {
		env[k] = v
	}
	return env
}

func (a *fakeAWS) set(id, value string) {
	a.mu.Lock()
	a.values[id] = value
	a.mu.Unlock()
}

func (a *fakeAWS) callCount() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return len(a.calls)
}

func (a *fakeAWS) serve(w http.ResponseWriter, r *http.Request) {
	if a.hold != nil {
		select {
		case <-a.hold:
		case <-r.Context().Done():
			return
		}
	}
	body, _ := io.ReadAll(r.Body)
	answer := func(status int, v any) {
		w.Header().Set("Content-Type", "application/x-amz-json-1.1")
		w.WriteHeader(status)
		json.NewEncoder(w).Encode(v)
	}
	region, service, err := checkSigV4(r, body, a.keyID, a.secret, a.token)
	target := r.Header.Get("X-Amz-Target")
	if err != nil || r.Method != http.MethodPost || r.URL.Path != "/" || r.Header.Get("Content-Type") != "application/x-amz-json-1.1" {
		a.t.Errorf("fake AWS: %s %s %s: %v", r.Method, r.URL.Path, target, err)
		answer(http.StatusForbidden, map[string]string{"__type": "InvalidSignatureException"})
		return
	}
	var in struct {
		SecretID                string `json:"SecretId"`
		Name                    string
		VersionStage, VersionID string
		WithDecryption          bool
	}
	if err := json.Unmarshal(body, &in); err != nil {
		a.t.Errorf("fake AWS: body %s: %v", body, err)
	}
	id := in.SecretID + in.Name
	a.mu.Lock()
	a.calls = append(a.calls, target+" "+id)
	value, found := a.values[id]
	fail := a.failNext > 0
	if fail {
		a.failNext--
	}
	a.mu.Unlock()
	wantService := map[string]string{"secretsmanager.GetSecretValue": "secretsmanager", "AmazonSSM.GetParameter": "ssm"}[target]
	switch {
	case service != wantService || region != strings.Split(id, ":")[3]:
		a.t.Errorf("fake AWS: %s signed for %s in %s", target, service, region)
	case target == "AmazonSSM.GetParameter" && !in.WithDecryption:
		a.t.Errorf("fake AWS: GetParameter without WithDecryption")
	}
	switch {
	case fail:
		answer(http.StatusBadRequest, map[string]string{"__type": a.failWith, "message": "no: " + a.secret})
	case !found:
		answer(http.StatusBadRequest, map[string]string{"__type": "ResourceNotFoundException", "message": "Secrets Manager can't find the specified secret."})
	case service == "ssm":
		answer(http.StatusOK, map[string]any{"Parameter": map[string]any{"Name": id, "Type": "SecureString", "Value": value, "Version": 1}})
	default:
		answer(http.StatusOK, map[string]any{"ARN": id, "Name": "loki", "SecretString": value, "VersionId": "v1", "VersionStages": []string{"AWSCURRENT"}})
	}
}

// noSecretsIn fails the test if out holds any of the secrets.
func noSecretsIn(t *testing.T, out string, secrets ...string) {
	t.Helper()
	for _, s := range secrets {
		if strings.Contains(out, s) {
			t.Errorf("the output shows the secret %q:\n%s", s, out)
		}
	}
}

const (
	smARN  = "arn:aws:secretsmanager:eu-central-1:111122223333:secret:loki-AbCdEf"
	ssmARN = "arn:aws:ssm:us-west-2:111122223333:parameter/loki/token"
)

// TestCredentialsFromAWS: each form of ARN gives the credentials Loki
// wants, fetched once per environment, before the first push.
func TestCredentialsFromAWS(t *testing.T) {
	for _, tc := range []struct {
		name   string
		env    map[string]string
		values map[string]string
		auth   string
	}{
		{"a key of a JSON secret", map[string]string{"LOKI_USERNAME": "123456", "LOKI_PASSWORD": smARN + ":password::"},
			map[string]string{smARN: `{"user":"x","password":"glc_fromSecretsManager"}`}, "Basic MTIzNDU2OmdsY19mcm9tU2VjcmV0c01hbmFnZXI="},
		{"a whole secret", map[string]string{"LOKI_BEARER_TOKEN": smARN}, map[string]string{smARN: "glc_plainSecret\n"}, "Bearer glc_plainSecret"},
		{"an SSM parameter", map[string]string{"LOKI_BEARER_TOKEN": ssmARN}, map[string]string{ssmARN: "glc_fromSSM"}, "Bearer glc_fromSSM"},
		{"both from AWS", map[string]string{"LOKI_USERNAME": smARN + ":user::", "LOKI_PASSWORD": ssmARN},
			map[string]string{smARN: `{"user":"123456"}`, ssmARN: "glc_fromSSM"}, "Basic MTIzNDU2OmdsY19mcm9tU1NN"},
		{"a number at the key", map[string]string{"LOKI_USERNAME": smARN + ":user::", "LOKI_PASSWORD": ssmARN},
			map[string]string{smARN: `{"user":123456,"token":"glc_x"}`, ssmARN: "glc_fromSSM"}, "Basic MTIzNDU2OmdsY19mcm9tU1NN"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			f, aws, loki := newFakeLambda(t), newFakeAWS(t, tc.values), newFakeLoki(t)
			loki.auth = tc.auth
			aws.hold = make(chan struct{})
			x := startExtension(t, f, aws.env(mergeEnv(tc.env, map[string]string{"LOKI_URL": loki.srv.URL})))
			f.awaitNext() // Init ends while the fetch still waits for AWS
			close(aws.hold)
			want := threeInvocations(t, f, x)
			if diff := cmp.Diff(want, loki.lines("function"), anyOrder); diff != "" {
				t.Errorf("lines in Loki (-want +got):\n%s", diff)
			}
			wantCalls := len(tc.values)
			if aws.callCount() != wantCalls || loki.refused != 0 || len(f.errorTypes) != 0 {
				t.Errorf("AWS calls %v (want %d), pushes refused %d, errors %v", aws.calls, wantCalls, loki.refused, f.errorTypes)
			}
			noSecretsIn(t, x.out.String(), "glc_", aws.secret, aws.token, strings.TrimPrefix(tc.auth, "Basic "))
		})
	}
}

// threeInvocations runs three invocations of five lines through f, then
// SHUTDOWN, and returns their lines once x has exited.
func threeInvocations(t *testing.T, f *fakeLambda, x *running) []string {
	t.Helper()
	var want []string
	for i := range 3 {
		want = append(want, invocation(f, requestID(i), 5)...)
	}
	f.shutdown()
	if err := x.wait(t); err != nil {
		t.Fatal(err)
	}
	return want
}

func mergeEnv(a, b map[string]string) map[string]string {
	m := map[string]string{}
	for _, e := range []map[string]string{a, b} {
		for k, v := range e {
			m[k] = v
		}
	}
	return m
}

// eventually waits, at most limit, until cond holds.
func eventually(t *testing.T, limit time.Duration, what string, cond func() bool) {
	t.Helper()
	for end := time.Now().Add(limit); !cond(); time.Sleep(20 * time.Millisecond) {
		if time.Now().After(end) {
			t.Fatalf("after %v: %s", limit, what)
		}
	}
}

// rotated starts the extension with its token kept in AWS, ships one
// invocation with it, then rotates it in AWS and in Loki; it returns the
// lines shipped.
func rotated(t *testing.T) (*fakeLambda, *fakeAWS, *fakeLoki, *running, []string) {
	f, aws, loki := newFakeLambda(t), newFakeAWS(t, map[string]string{smARN: "glc_v1"}), newFakeLoki(t)
	loki.auth = "Bearer glc_v1"
	x := startExtension(t, f, aws.env(map[string]string{"LOKI_URL": loki.srv.URL, "LOKI_BEARER_TOKEN": smARN}))
	f.awaitNext()
	want := invocation(f, requestID(1), 5)
	eventually(t, waitLimit, "the first invocation's lines", func() bool { return len(loki.lines("function")) == len(want) })
	aws.set(smARN, "glc_v2")
	loki.mu.Lock()
	loki.auth = "Bearer glc_v2"
	loki.mu.Unlock()
	return f, aws, loki, x, want
}

// TestRotatedSecret: when Loki refuses the token it had accepted, the
// extension fetches it again (rotationPause after the last fetch) and
// sends the refused lines with the new one; none is lost.
func TestRotatedSecret(t *testing.T) {
	t.Parallel()
	f, aws, loki, x, want := rotated(t)
	want = append(want, invocation(f, requestID(2), 5)...)
	want = append(want, invocation(f, requestID(3), 5)...)
	eventually(t, 2*rotationPause, "the lines refused before the new token", func() bool { return len(loki.lines("function")) == len(want) })
	f.shutdown()
	if err := x.wait(t); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(want, loki.lines("function"), anyOrder); diff != "" {
		t.Errorf("lines in Loki (-want +got):\n%s", diff)
	}
	if c := summary(t, x.out.String()); c.droppedLoki+c.droppedAtExit != 0 || aws.callCount() != 2 || loki.refused == 0 {
		t.Errorf("counters %+v, AWS calls %v, refused pushes %d", c, aws.calls, loki.refused)
	}
	// Pushes wait for the new token: only those in flight were refused.
	if loki.refused > maxInFlight {
		t.Errorf("%d pushes refused", loki.refused)
	}
	noSecretsIn(t, x.out.String(), "glc_", aws.secret)
}

// TestRotationAtShutdown: when Loki refuses a rotated token and SHUTDOWN
// comes before the pause after the last fetch is over, one fetch goes at
// once, and the refused lines reach Loki with the new token.
func TestRotationAtShutdown(t *testing.T) {
	t.Parallel()
	f, aws, loki, x, want := rotated(t)
	want = append(want, invocation(f, requestID(2), 5)...)
	eventually(t, waitLimit, "a refused push", func() bool { loki.mu.Lock(); defer loki.mu.Unlock(); return loki.refused > 0 })
	f.shutdown() // well within rotationPause of the first fetch
	if err := x.wait(t); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(want, loki.lines("function"), anyOrder); diff != "" {
		t.Errorf("lines in Loki (-want +got):\n%s", diff)
	}
	if c := summary(t, x.out.String()); c.droppedLoki+c.droppedAtExit != 0 || aws.callCount() != 2 {
		t.Errorf("counters %+v, AWS calls %v", c, aws.calls)
	}
}

// TestSecretUnavailable: a secret the extension cannot read costs no Init
// error and no crash: one message names the variable and AWS's error
// code, the fetch is retried, and the lines stay buffered; read at last,
// they all reach Loki, or, if never, they are counted as dropped.
func TestSecretUnavailable(t *testing.T) {
	for _, tc := range []struct {
		name, failWith, message string
		failures                int
		unreachable             bool
	}{
		{"access denied", "AccessDeniedException", "LOKI_BEARER_TOKEN: read " + smARN + ": AccessDeniedException (HTTP 400)", 100, false},
		{"access denied, with a namespace", "com.amazonaws.secretsmanager#AccessDeniedException", "LOKI_BEARER_TOKEN: read " + smARN + ": AccessDeniedException (HTTP 400)", 100, false},
		{"not found", "", "LOKI_BEARER_TOKEN: read " + smARN + ": ResourceNotFoundException (HTTP 400)", 0, false},
		{"unreachable", "", "LOKI_BEARER_TOKEN: read " + smARN + ": unreachable (dial tcp", 0, true},
		{"throttled, then read", "ThrottlingException", "LOKI_BEARER_TOKEN: read " + smARN + ": ThrottlingException (HTTP 400)", 2, false},
		{"empty", "", "LOKI_BEARER_TOKEN: read " + smARN + ": no text there", 0, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			values := map[string]string{smARN: "glc_token"}
			switch tc.name {
			case "not found":
				values = map[string]string{}
			case "empty":
				values = map[string]string{smARN: " \n"}
			}
			f, aws, loki := newFakeLambda(t), newFakeAWS(t, values), newFakeLoki(t)
			aws.failWith, aws.failNext = tc.failWith, tc.failures
			loki.auth = "Bearer glc_token"
			env := aws.env(map[string]string{"LOKI_URL": loki.srv.URL, "LOKI_BEARER_TOKEN": smARN})
			if tc.unreachable {
				env["AWS_ENDPOINT_URL_SECRETS_MANAGER"] = "http://" + freePort(t)
			}
			x := startExtension(t, f, env)
			f.awaitNext()
			var want []string
			for i := range 3 {
				want = append(want, invocation(f, requestID(i), 5)...)
			}
			recovers := tc.failures == 2
			if !tc.unreachable { // retried: the backoff starts at a second
				eventually(t, waitLimit, "a second fetch", func() bool { return aws.callCount() >= 2 })
			}
			if recovers {
				eventually(t, waitLimit, "the lines, once the token is read", func() bool { return len(loki.lines("function")) == len(want) })
			}
			f.shutdown()
			if err := x.wait(t); err != nil {
				t.Fatalf("run: %v", err)
			}
			out := x.out.String()
			if n := strings.Count(out, tc.message); n != 1 {
				t.Errorf("%d messages %q in:\n%s", n, tc.message, out)
			}
			c := summary(t, out)
			switch {
			case len(f.errorTypes) != 0:
				t.Errorf("reported %v", f.errorTypes)
			case recovers && (c.sent != int64(len(want)) || c.droppedAtExit != 0):
				t.Errorf("counters %+v, want all %d lines sent", c, len(want))
			case !recovers && (c.sent != 0 || c.droppedAtExit != int64(len(want)) || loki.requests != 0):
				t.Errorf("counters %+v, pushes %d; want %d lines dropped at shutdown, none sent", c, loki.requests, len(want))
			}
			noSecretsIn(t, out, "glc_", aws.secret, aws.token)
		})
	}
}

// TestFailedRefreshKeepsWaiting: while a refresh of the credentials fails,
// the header fetched before still works, so the end of an invocation
// still waits for Loki's answer.
func TestFailedRefreshKeepsWaiting(t *testing.T) {
	loki := newFakeLoki(t)
	loki.auth = "Bearer glc_old"
	s, _ := testShipper(t, lokiTarget{pushURL: loki.srv.URL + pushPath, secrets: &secrets{header: "Bearer glc_old", failing: true}})
	runShipper(t, s)
	s.batch.add([]entry{{ts: time.Now().UnixNano(), line: "a line", src: sourceFunction}})
	flushFor(t, s, 5*time.Second)
	if diff := cmp.Diff([]string{"a line"}, loki.lines("function")); diff != "" {
		t.Errorf("lines in Loki when the flush returned (-want +got):\n%s", diff)
	}
}

// TestRefusalOfAnOldHeader: a 401 to a push sent with the header before
// the last fetch does not send the new one back to AWS; a 401 to the
// current header does.
func TestRefusalOfAnOldHeader(t *testing.T) {
	for _, sentWith := range []string{"Bearer glc_old", "Bearer glc_new"} {
		sec := &secrets{header: "Bearer glc_new", again: make(chan struct{}, 1)}
		s, _ := testShipper(t, lokiTarget{pushURL: "http://127.0.0.1:1" + pushPath, secrets: sec})
		r := &request{header: sentWith, started: time.Now(), cancel: func() {}}
		s.queue, s.inFlight = []*request{r}, 1
		s.settle(result{r: r, status: http.StatusUnauthorized, body: "invalid credentials"})
		if want := sentWith == sec.header; sec.stale != want || (len(sec.again) == 1) != want {
			t.Errorf("401 to %q: stale %t, fetch asked %t; want %t", sentWith, sec.stale, len(sec.again) == 1, want)
		}
		if len(s.queue) != 1 || s.inFlight != 0 {
			t.Errorf("401 to %q: %d requests queued, %d in flight; want it kept for another attempt", sentWith, len(s.queue), s.inFlight)
		}
	}
}

// TestSnapStartFetchesAfterRestore: on SnapStart the fetch waits for the
// first INVOKE (a restored snapshot), and takes its credentials from the
// container credentials endpoint.
func TestSnapStartFetchesAfterRestore(t *testing.T) {
	f, aws, loki := newFakeLambda(t), newFakeAWS(t, map[string]string{ssmARN: "glc_token"}), newFakeLoki(t)
	loki.auth = "Bearer glc_token"
	var asked atomic.Int32
	creds := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "container-token" {
			http.Error(w, `{"code":"AccessDenied"}`, http.StatusForbidden)
			return
		}
		asked.Add(1)
		fmt.Fprintf(w, `{"AccessKeyId":%q,"SecretAccessKey":%q,"Token":%q,"Expiration":%q}`,
			aws.keyID, aws.secret, aws.token, time.Now().Add(time.Hour).Format(time.RFC3339))
	}))
	defer creds.Close()
	x := startExtension(t, f, map[string]string{"LOKI_URL": loki.srv.URL, "LOKI_BEARER_TOKEN": ssmARN,
		"AWS_LAMBDA_INITIALIZATION_TYPE": "snap-start", "AWS_ENDPOINT_URL": aws.srv.URL,
		"AWS_CONTAINER_CREDENTIALS_FULL_URI": creds.URL, "AWS_CONTAINER_AUTHORIZATION_TOKEN": "container-token"})
	f.awaitNext()
	time.Sleep(100 * time.Millisecond) // a fetch at Init would have started by now
	if n := aws.callCount(); n != 0 {
		t.Fatalf("%d fetches before the snapshot", n)
	}
	want := invocation(f, requestID(1), 5)
	want = append(want, invocation(f, requestID(2), 5)...)
	f.shutdown()
	if err := x.wait(t); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(want, loki.lines("function"), anyOrder); diff != "" {
		t.Errorf("lines in Loki (-want +got):\n%s", diff)
	}
	if aws.callCount() != 1 || asked.Load() != 1 {
		t.Errorf("AWS calls %v, credential requests %d; want one each", aws.calls, asked.Load())
	}
}

func TestAWSCredentialSources(t *testing.T) {
	endpoint := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "tok" {
			w.WriteHeader(http.StatusForbidden)
			return
		}
		fmt.Fprint(w, `{"AccessKeyId":"ASIA1","SecretAccessKey":"s3cret","Token":"t0ken","Expiration":"2026-12-02T05:00:00Z"}`)
	}))
	defer endpoint.Close()
	for _, tc := range []struct {
		name string
		env  map[string]string
		want awsCredentials
		err  string
	}{
		{"environment", map[string]string{"AWS_ACCESS_KEY_ID": "AKIA1", "AWS_SECRET_ACCESS_KEY": "s3cret", "AWS_SESSION_TOKEN": "t0ken"}, awsCredentials{"AKIA1", "s3cret", "t0ken"}, ""},
		{"environment over the endpoint", map[string]string{"AWS_ACCESS_KEY_ID": "AKIA1", "AWS_SECRET_ACCESS_KEY": "s3cret", "AWS_CONTAINER_CREDENTIALS_FULL_URI": endpoint.URL}, awsCredentials{"AKIA1", "s3cret", ""}, ""},
		{"container endpoint", map[string]string{"AWS_CONTAINER_CREDENTIALS_FULL_URI": endpoint.URL, "AWS_CONTAINER_AUTHORIZATION_TOKEN": "tok"}, awsCredentials{"ASIA1", "s3cret", "t0ken"}, ""},
		{"container endpoint refuses", map[string]string{"AWS_CONTAINER_CREDENTIALS_FULL_URI": endpoint.URL, "AWS_CONTAINER_AUTHORIZATION_TOKEN": "bad"}, awsCredentials{},
			"AWS credentials from AWS_CONTAINER_CREDENTIALS_FULL_URI: no error code (HTTP 403)"},
		{"none", map[string]string{}, awsCredentials{}, "no AWS credentials: neither AWS_ACCESS_KEY_ID nor AWS_CONTAINER_CREDENTIALS_RELATIVE_URI or _FULL_URI is set"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := &secrets{getenv: mapEnv(tc.env), client: &http.Client{}}
			got, err := c.credentials(t.Context())
			if got != tc.want || (err == nil) != (tc.err == "") || err != nil && err.Error() != tc.err {
				t.Errorf("got %+v, %v; want %+v, %s", got, err, tc.want, tc.err)
			}
		})
	}
}

// TestContainerCredentials: the container credentials endpoint is asked
// only where AWS serves credentials (any host over https; over http,
// loopback and the ECS and EKS addresses), at AWS_CONTAINER_CREDENTIALS_RELATIVE_URI
// first, with the token of AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE first;
// elsewhere the token is never sent. Every request reaches one fake,
// whatever its host, so that a request that should not be sent is seen.
func TestContainerCredentials(t *testing.T) {
	const envToken, fileToken, answer = "container-token-env", "container-token-file", `{"AccessKeyId":"ASIA1","SecretAccessKey":"s3cret","Token":"t0ken"}`
	var mu sync.Mutex
	var got []string // host, path and token of each request
	body := answer
	handler := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		got = append(got, r.Host+r.URL.Path+" "+r.Header.Get("Authorization"))
		b := body
		mu.Unlock()
		fmt.Fprint(w, b)
	})
	plain, tls := httptest.NewServer(handler), httptest.NewTLSServer(handler) // the TLS one's certificate is for example.com
	t.Cleanup(plain.Close)
	t.Cleanup(tls.Close)
	tr := tls.Client().Transport.(*http.Transport).Clone()
	tr.DialContext = func(ctx context.Context, network, addr string) (net.Conn, error) {
		to := plain.Listener.Addr().String()
		if strings.HasSuffix(addr, ":443") {
			to = tls.Listener.Addr().String()
		}
		return (&net.Dialer{}).DialContext(ctx, network, to)
	}
	tokenFile := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(tokenFile, []byte(fileToken+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	const full, relative = "AWS_CONTAINER_CREDENTIALS_FULL_URI", "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI"
	refused := func(variable string) string {
		return variable + ": not an https:// URL, nor an http:// one to where AWS serves credentials (loopback, 169.254.170.2, 169.254.170.23, fd00:ec2::23)"
	}
	for _, tc := range []struct {
		env       map[string]string
		sent, err string // the request's host, path and token; the error
	}{
		{map[string]string{full: "http://169.254.170.2/v2/credentials/x"}, "169.254.170.2/v2/credentials/x " + envToken, ""},
		{map[string]string{full: "http://169.254.170.23/v1/credentials"}, "169.254.170.23/v1/credentials " + envToken, ""},
		{map[string]string{full: "http://[fd00:ec2::23]/v1/credentials"}, "[fd00:ec2::23]/v1/credentials " + envToken, ""},
		{map[string]string{full: "http://localhost:8080/creds"}, "localhost:8080/creds " + envToken, ""},
		{map[string]string{full: "http://127.0.0.2/creds"}, "127.0.0.2/creds " + envToken, ""},
		{map[string]string{full: "http://[::1]/creds"}, "[::1]/creds " + envToken, ""},
		{map[string]string{full: "https://example.com/creds"}, "example.com/creds " + envToken, ""},
		{map[string]string{relative: "/v2/credentials/y"}, "169.254.170.2/v2/credentials/y " + envToken, ""},
		{map[string]string{relative: "/v2/credentials/y", full: "http://127.0.0.1/creds"}, "169.254.170.2/v2/credentials/y " + envToken, ""},
		{map[string]string{full: "http://127.0.0.1/creds", "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE": tokenFile}, "127.0.0.1/creds " + fileToken, ""},
		{map[string]string{full: "http://example.com/creds"}, "", refused(full)},
		{map[string]string{full: "http://169.254.169.254/latest/meta-data"}, "", refused(full)},
		{map[string]string{full: "http://169.254.170.2.example.com/creds"}, "", refused(full)},
		{map[string]string{full: "ftp://127.0.0.1/creds"}, "", refused(full)},
		{map[string]string{full: "http://127.0.0.1:bad/creds"}, "", refused(full)},
		{map[string]string{relative: "@example.com/creds"}, "", refused(relative)},
		{map[string]string{relative: ".example.com/creds"}, "", refused(relative)},
		{map[string]string{full: "http://127.0.0.1/creds", "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE": tokenFile + ".missing"}, "",
			"AWS credentials from AWS_CONTAINER_CREDENTIALS_FULL_URI: open " + tokenFile + ".missing: no such file or directory"},
		{map[string]string{}, "", "no AWS credentials: neither AWS_ACCESS_KEY_ID nor AWS_CONTAINER_CREDENTIALS_RELATIVE_URI or _FULL_URI is set"},
	} {
		mu.Lock()
		got = nil
		mu.Unlock()
		tc.env["AWS_CONTAINER_AUTHORIZATION_TOKEN"] = envToken
		c := &secrets{getenv: mapEnv(tc.env), client: &http.Client{Transport: tr}}
		creds, err := c.credentials(t.Context())
		mu.Lock()
		sent := strings.Join(got, "; ")
		mu.Unlock()
		if want := (awsCredentials{"ASIA1", "s3cret", "t0ken"}); tc.err == "" && (creds != want || err != nil) || sent != tc.sent {
			t.Errorf("%v: got %+v, %v; sent %q, want %q", tc.env, creds, err, sent, tc.sent)
		}
		if (err == nil) != (tc.err == "") || err != nil && err.Error() != tc.err {
			t.Errorf("%v: error %v\nwant %s", tc.env, err, tc.err)
		}
		// A URI refused, or none, fails Init, if it is used: only for a value
		// kept in AWS, without AWS_ACCESS_KEY_ID. The token file is read at
		// each fetch.
		tc.env["LOKI_URL"], tc.env["LOKI_BEARER_TOKEN"] = "https://l", ssmARN
		_, err = loadConfig(mapEnv(tc.env))
		if wantInit := tc.err != "" && !strings.HasPrefix(tc.err, "AWS credentials from"); (err != nil) != wantInit || wantInit && err.Error() != tc.err {
			t.Errorf("%v: loadConfig: %v", tc.env, err)
		}
		tc.env["AWS_ACCESS_KEY_ID"] = "AKIA1"
		if _, err := loadConfig(mapEnv(tc.env)); err != nil {
			t.Errorf("%v: loadConfig with AWS_ACCESS_KEY_ID: %v", tc.env, err)
		}
		tc.env["LOKI_BEARER_TOKEN"] = "glc_x"
		delete(tc.env, "AWS_ACCESS_KEY_ID")
		if _, err := loadConfig(mapEnv(tc.env)); err != nil {
			t.Errorf("%v: loadConfig without a value kept in AWS: %v", tc.env, err)
		}
	}

	// The token file is read for each request (it may rotate), and an
	// answer without keys is an error, not empty credentials.
	env := map[string]string{full: "http://127.0.0.1/creds", "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE": tokenFile}
	c := &secrets{getenv: mapEnv(env), client: &http.Client{Transport: tr}}
	os.WriteFile(tokenFile, []byte("rotated-token"), 0o600)
	mu.Lock()
	got, body = nil, `{"Code":"Success","Token":"t0ken"}`
	mu.Unlock()
	creds, err := c.credentials(t.Context())
	if want := "AWS credentials from AWS_CONTAINER_CREDENTIALS_FULL_URI: the answer has no AccessKeyId/SecretAccessKey"; err == nil || err.Error() != want || creds != (awsCredentials{}) {
		t.Errorf("an answer without keys: %+v, %v; want the error %s", creds, err, want)
	}
	mu.Lock()
	defer mu.Unlock()
	if want := []string{"127.0.0.1/creds rotated-token"}; !slices.Equal(got, want) {
		t.Errorf("requests %q, want %q", got, want)
	}
}

// TestFetchTimeoutCountsAwakeTime: a fetch gives up after awsTimeout of
// time the environment ran, counted in ticks of a second (sent here), not
// by the wall clock: a time.Ticker gives a frozen process one tick at the
// thaw, however long the freeze. AWS's answer after 9 ticks is taken; with
// none, the fetch ends at the 10th.
func TestFetchTimeoutCountsAwakeTime(t *testing.T) {
	t.Parallel()
	ticks := make(chan time.Time)
	// fetch starts a fetch from a fake AWS that answers once release is
	// called, and sends it n ticks; false if it ended before it took them.
	fetch := func(n int) (done chan error, release func(), tookAll bool) {
		aws := newFakeAWS(t, map[string]string{ssmARN: "glc_token"})
		aws.hold = make(chan struct{})
		release = sync.OnceFunc(func() { close(aws.hold) })
		t.Cleanup(release) // before the fake's Close, which waits for its answers
		r, err := parseSecretARN("LOKI_BEARER_TOKEN", ssmARN)
		if err != nil {
			t.Fatal(err)
		}
		c := &secrets{refs: [3]*secretRef{2: r}, getenv: mapEnv(aws.env(nil)), client: &http.Client{}, ticks: ticks}
		done = make(chan error, 1)
		go func() {
			_, err := c.fetch(t.Context())
			done <- err
		}()
		for range n {
			select {
			case ticks <- time.Now():
			case err := <-done:
				done <- err
				return done, release, false
			}
		}
		return done, release, true
	}

	done, release, tookAll := fetch(9)
	if !tookAll {
		t.Fatalf("the fetch ended before 10 ticks: %v", <-done)
	}
	release()
	if err := <-done; err != nil {
		t.Fatalf("the fetch answered after 9 ticks failed: %v", err)
	}

	done, _, tookAll = fetch(10) // AWS never answers
	if !tookAll {
		t.Fatalf("the fetch ended before 10 ticks: %v", <-done)
	}
	select {
	case err := <-done:
		if want := "LOKI_BEARER_TOKEN: read " + ssmARN + ": unreachable (no answer in 10s)"; err == nil || err.Error() != want {
			t.Errorf("the fetch that AWS does not answer: %v, want %s", err, want)
		}
	case <-time.After(waitLimit):
		t.Fatal("the fetch went on after 10 ticks")
	}
}

// TestMalformedEndpointNotShown: an AWS_ENDPOINT_URL* that is not a URL
// is named, never shown: it may hold credentials.
func TestMalformedEndpointNotShown(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ env map[string]string }{
		{map[string]string{"AWS_ENDPOINT_URL_SSM": "http://u:glc_s3cret@[::1"}},
		{map[string]string{"AWS_ENDPOINT_URL": "http://u:glc_s3cret@[::1"}},
		{map[string]string{"AWS_ENDPOINT_URL": "%glc_s3cret"}},
	} {
		r, err := parseSecretARN("LOKI_PASSWORD", ssmARN)
		if err != nil {
			t.Fatal(err)
		}
		tc.env["AWS_ACCESS_KEY_ID"], tc.env["AWS_SECRET_ACCESS_KEY"] = "AKIA1", "s3cret"
		c := &secrets{refs: [3]*secretRef{1: r}, getenv: mapEnv(tc.env), client: &http.Client{}}
		_, err = c.fetch(t.Context())
		if want := "LOKI_PASSWORD: read " + ssmARN + ": AWS_ENDPOINT_URL_SSM or AWS_ENDPOINT_URL is not a URL"; err == nil || err.Error() != want {
			t.Errorf("%v: %v, want %s", tc.env, err, want)
		}
	}
}

// TestFetchFailureToldOnce: a failure whose text changes from one fetch
// to the next (here the local port of a reset connection) is told once.
func TestFetchFailureToldOnce(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	var accepted atomic.Int32
	go func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			accepted.Add(1)
			conn.Read(make([]byte, 4096))
			conn.(*net.TCPConn).SetLinger(0) // a reset
			conn.Close()
		}
	}()
	var out syncBuffer
	env := map[string]string{"AWS_ACCESS_KEY_ID": "AKIA1", "AWS_SECRET_ACCESS_KEY": "s3cret", "AWS_ENDPOINT_URL": "http://" + ln.Addr().String()}
	r, err := parseSecretARN("LOKI_BEARER_TOKEN", smARN)
	if err != nil {
		t.Fatal(err)
	}
	c := &secrets{refs: [3]*secretRef{2: r}, getenv: mapEnv(env), client: &http.Client{}, log: &onceLogger{log: log.New(&out, "", 0)},
		changed: func() {}, again: make(chan struct{}, 1)}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan struct{})
	go func() {
		c.run(ctx)
		close(done)
	}()
	// The third fetch starts once the second one's failure was told.
	eventually(t, waitLimit, "three fetches", func() bool { return accepted.Load() >= 3 })
	cancel()
	<-done
	if n := strings.Count(out.String(), "LOKI_BEARER_TOKEN: read "+smARN+": "); n != 1 {
		t.Errorf("%d messages, want 1:\n%s", n, out.String())
	}
}

// tlsLoki is a fake Loki behind TLS with a certificate of its own, and
// the PEM file that trusts it.
func tlsLoki(t *testing.T) (*fakeLoki, string, *atomic.Int32) {
	l := &fakeLoki{t: t, stored: map[string]bool{}}
	var conns atomic.Int32
	l.srv = httptest.NewUnstartedServer(http.HandlerFunc(l.push))
	l.srv.Config.ErrorLog = log.New(io.Discard, "", 0) // the handshakes that fail
	l.srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			conns.Add(1)
		}
	}
	l.srv.StartTLS()
	t.Cleanup(l.srv.Close)
	file := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(file, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: l.srv.Certificate().Raw}), 0o600); err != nil {
		t.Fatal(err)
	}
	return l, file, &conns
}

// TestLokiCAFile: LOKI_CA_FILE makes a private CA's Loki trusted; without
// it, the failed verification is one message naming both variables, and
// the lines are dropped and counted, each request tried once.
func TestLokiCAFile(t *testing.T) {
	for _, withCA := range []bool{true, false} {
		t.Run(fmt.Sprint("LOKI_CA_FILE set: ", withCA), func(t *testing.T) {
			t.Parallel()
			loki, file, conns := tlsLoki(t)
			env := map[string]string{"LOKI_URL": loki.srv.URL}
			if withCA {
				env["LOKI_CA_FILE"] = file
			}
			f := newFakeLambda(t)
			x := startExtension(t, f, env)
			f.awaitNext()
			want := threeInvocations(t, f, x)
			out, c := x.out.String(), summary(t, x.out.String())
			message := "(check LOKI_URL and LOKI_CA_FILE)"
			if withCA {
				if diff := cmp.Diff(want, loki.lines("function"), anyOrder); diff != "" || strings.Contains(out, message) {
					t.Errorf("lines in Loki (-want +got):\n%s\n%s", diff, out)
				}
				return
			}
			// A request per invocation at most, and the stats line's two tries.
			if strings.Count(out, message) != 1 || c.droppedLoki != int64(len(want)) || c.retries != 0 || conns.Load() > 8 {
				t.Errorf("counters %+v, %d connections; output:\n%s", c, conns.Load(), out)
			}
		})
	}
}

func TestCAFileErrors(t *testing.T) {
	notPEM := filepath.Join(t.TempDir(), "ca.pem")
	os.WriteFile(notPEM, []byte("not a certificate"), 0o600)
	for _, file := range []string{notPEM, filepath.Join(t.TempDir(), "missing.pem")} {
		_, err := loadConfig(mapEnv(map[string]string{"LOKI_URL": "https://l", "LOKI_CA_FILE": file}))
		if err == nil || !strings.HasPrefix(err.Error(), "LOKI_CA_FILE: "+file+" holds no PEM certificate") {
			t.Errorf("LOKI_CA_FILE=%s: %v", file, err)
		}
	}
}
