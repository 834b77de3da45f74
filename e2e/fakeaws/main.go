// Command fakeaws is Secrets Manager and SSM Parameter Store for the
// end-to-end tier, on one HTTP endpoint (AWS_ENDPOINT_URL). It checks each
// request's SigV4 signature by signing it again with the AWS SDK for Go v2
// and answers GetSecretValue and GetParameter from -value flags. It logs
// "fakeaws: ok <target> <id>" per good call and "fakeaws: BAD ..." per
// bad one; the values never.
package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"flag"
	"io"
	"log"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"
)

type values map[string]string

func (v values) String() string { return "" }
func (v values) Set(s string) error {
	id, value, _ := strings.Cut(s, "=")
	v[id] = value
	return nil
}

func main() {
	addr := flag.String("addr", "127.0.0.1:9427", "listen address")
	creds := aws.Credentials{}
	flag.StringVar(&creds.AccessKeyID, "key-id", "", "the access key id requests must be signed with")
	flag.StringVar(&creds.SecretAccessKey, "secret-key", "", "its secret key")
	flag.StringVar(&creds.SessionToken, "token", "", "the session token requests must carry")
	vals := values{}
	flag.Var(vals, "value", "id=value: a secret (by ARN, as SecretId) or parameter (by ARN, as Name); repeatable")
	flag.Parse()
	log.SetPrefix("fakeaws: ")
	log.SetFlags(0)
	log.Fatal(http.ListenAndServe(*addr, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		serve(w, r, creds, vals)
	})))
}

func serve(w http.ResponseWriter, r *http.Request, creds aws.Credentials, vals values) {
	body, _ := io.ReadAll(io.LimitReader(r.Body, 1<<20))
	answer := func(status int, v any) {
		w.Header().Set("Content-Type", "application/x-amz-json-1.1")
		w.WriteHeader(status)
		json.NewEncoder(w).Encode(v)
	}
	target := r.Header.Get("X-Amz-Target")
	if err := verify(r, body, creds); err != "" {
		log.Printf("BAD %s: %s", target, err)
		answer(http.StatusForbidden, map[string]string{"__type": "InvalidSignatureException", "message": err})
		return
	}
	var in struct {
		SecretID       string `json:"SecretId"`
		Name           string
		WithDecryption bool
	}
	json.Unmarshal(body, &in)
	value, found := vals[in.SecretID+in.Name]
	switch {
	case target == "AmazonSSM.GetParameter" && !in.WithDecryption:
		log.Printf("BAD %s: no WithDecryption", target)
		answer(http.StatusBadRequest, map[string]string{"__type": "ValidationException"})
	case !found:
		log.Printf("BAD %s: no such id %q", target, in.SecretID+in.Name)
		answer(http.StatusBadRequest, map[string]string{"__type": "ResourceNotFoundException"})
	case target == "AmazonSSM.GetParameter":
		log.Printf("ok %s %s", target, in.Name)
		answer(http.StatusOK, map[string]any{"Parameter": map[string]any{"Name": in.Name, "Type": "SecureString", "Value": value, "Version": 1}})
	case target == "secretsmanager.GetSecretValue":
		log.Printf("ok %s %s", target, in.SecretID)
		answer(http.StatusOK, map[string]any{"ARN": in.SecretID, "SecretString": value, "VersionId": "v1", "VersionStages": []string{"AWSCURRENT"}})
	default:
		log.Printf("BAD unknown target %q", target)
		answer(http.StatusBadRequest, map[string]string{"__type": "UnknownOperationException"})
	}
}

// verify signs a copy of r (the headers it signed, its body's hash, its
// time, region and service) with the SDK, and compares the signatures.
func verify(r *http.Request, body []byte, creds aws.Credentials) string {
	auth := r.Header.Get("Authorization")
	_, scope, _ := strings.Cut(auth, "Credential=")
	scope, _, _ = strings.Cut(scope, ",")
	_, signedList, _ := strings.Cut(auth, "SignedHeaders=")
	signedList, _, _ = strings.Cut(signedList, ",")
	parts := strings.Split(scope, "/")
	at, err := time.Parse("20060102T150405Z", r.Header.Get("X-Amz-Date"))
	switch {
	case len(parts) != 5 || err != nil:
		return "no usable Authorization or X-Amz-Date"
	case time.Since(at).Abs() > 5*time.Minute:
		return "X-Amz-Date is not now"
	case r.Header.Get("X-Amz-Security-Token") != creds.SessionToken:
		return "wrong session token"
	}
	signed := strings.Split(signedList, ";")
	for _, must := range []string{"content-type", "host", "x-amz-date", "x-amz-security-token", "x-amz-target"} {
		if !slices.Contains(signed, must) {
			return must + " is not signed"
		}
	}
	again, _ := http.NewRequest(r.Method, "http://"+r.Host+r.URL.RequestURI(), nil)
	for _, name := range signed {
		if name != "host" {
			again.Header[http.CanonicalHeaderKey(name)] = r.Header.Values(name)
		}
	}
	sum := sha256.Sum256(body)
	if err := v4.NewSigner().SignHTTP(context.Background(), creds, again, hex.EncodeToString(sum[:]), parts[3], parts[2], at); err != nil {
		return err.Error()
	}
	if want := again.Header.Get("Authorization"); want != auth {
		return "signature differs from the SDK's: got " + auth + ", the SDK: " + want
	}
	return ""
}
