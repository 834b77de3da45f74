// Package signer checks the extension's SigV4 signer against the AWS SDK
// for Go v2's signer: the same requests must get the same Authorization
// header. The SDK lives in this module only, never in the extension's.
package signer

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"go/ast"
	"go/parser"
	"go/printer"
	"go/token"
	"math/rand/v2"
	"net/http"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"
)

// signCase is one request to sign, with its credentials, scope and time.
type signCase struct {
	Method, URL, Body    string
	Headers              [][2]string
	KeyID, Secret, Token string
	Region, Service      string
	Time                 time.Time
}

// signerDecls are the extension's declarations that sign a request.
var signerDecls = []string{"signV4", "awsEscape", "hexSHA256", "awsCredentials"}

// copySigner writes a program into dir that signs the cases it reads on
// stdin with the extension's own signer (copied from ../../secrets.go
// as it is) and prints each Authorization header.
func copySigner(t *testing.T, dir string) {
	t.Helper()
	fset := token.NewFileSet()
	f, err := parser.ParseFile(fset, "../../secrets.go", nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	var decls bytes.Buffer
	used, found := map[string]bool{}, map[string]bool{}
	for _, d := range f.Decls {
		name := ""
		switch d := d.(type) {
		case *ast.FuncDecl:
			name = d.Name.Name
		case *ast.GenDecl:
			if ts, ok := d.Specs[0].(*ast.TypeSpec); ok && d.Tok == token.TYPE && len(d.Specs) == 1 {
				name = ts.Name.Name
			}
		}
		if !slices.Contains(signerDecls, name) {
			continue
		}
		found[name] = true
		ast.Inspect(d, func(n ast.Node) bool {
			if sel, ok := n.(*ast.SelectorExpr); ok {
				if id, ok := sel.X.(*ast.Ident); ok {
					used[id.Name] = true
				}
			}
			return true
		})
		printer.Fprint(&decls, fset, d)
		decls.WriteString("\n\n")
	}
	if len(found) != len(signerDecls) {
		t.Fatalf("found %v of %v in secrets.go", found, signerDecls)
	}
	var src bytes.Buffer
	src.WriteString("package main\n\nimport (\n")
	for _, imp := range f.Imports {
		p, _ := strconv.Unquote(imp.Path.Value)
		if used[path.Base(p)] {
			fmt.Fprintf(&src, "\t%q\n", p)
		}
	}
	src.WriteString(")\n\n")
	src.Write(decls.Bytes())
	driver := `package main

import (
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"time"
)

func main() {
	var cases []struct {
		Method, URL, Body, KeyID, Secret, Token, Region, Service string
		Headers                                                  [][2]string
		Time                                                     time.Time
	}
	if err := json.NewDecoder(os.Stdin).Decode(&cases); err != nil {
		panic(err)
	}
	for _, c := range cases {
		req, err := http.NewRequest(c.Method, c.URL, nil)
		if err != nil {
			panic(err)
		}
		for _, h := range c.Headers {
			req.Header.Add(h[0], h[1])
		}
		signV4(req, []byte(c.Body), awsCredentials{c.KeyID, c.Secret, c.Token}, c.Region, c.Service, c.Time)
		fmt.Println(req.Header.Get("Authorization"))
	}
}
`
	for name, content := range map[string]string{"signer.go": src.String(), "main.go": driver, "go.mod": "module signercopy\n\ngo 1.27\n"} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// unreserved are the characters SigV4 never escapes. Paths and query
// values are made of them: the SDK escapes paths twice, as AWS services
// other than S3 want, the test suite and the extension once; the two agree
// on these characters, and the extension's only path is "/".
const unreserved = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~"

func randomCases(n int) []signCase {
	r := rand.New(rand.NewPCG(1, 2))
	pick := func(s ...string) string { return s[r.IntN(len(s))] }
	word := func(alphabet string, max int) string {
		b := make([]byte, 1+r.IntN(max))
		for i := range b {
			b[i] = alphabet[r.IntN(len(alphabet))]
		}
		return string(b)
	}
	printable := func() string { // header values: printable ASCII and spaces
		var b strings.Builder
		for range r.IntN(24) {
			if r.IntN(5) == 0 {
				b.WriteString(strings.Repeat(" ", 1+r.IntN(3)))
			} else {
				b.WriteByte(byte(0x21 + r.IntN(0x7e-0x21+1)))
			}
		}
		return b.String()
	}
	var cases []signCase
	for range n {
		c := signCase{
			Method:  pick("GET", "POST", "PUT"),
			KeyID:   "AKIA" + word("ABCDEFGHIJKLMNOPQRSTUVWXYZ234567", 16),
			Secret:  word(unreserved+"/+", 40),
			Region:  pick("us-east-1", "eu-west-1", "ap-southeast-2", "cn-north-1"),
			Service: pick("secretsmanager", "ssm"),
			Time:    time.Unix(1.4e9+r.Int64N(6e8), 0).UTC(),
			Body:    pick("", `{"SecretId":"arn:aws:secretsmanager:eu-west-1:1:secret:x"}`, word(unreserved+` {}":,\`, 200)),
		}
		if r.IntN(2) == 0 {
			c.Token = word(unreserved+"/+=", 300)
		}
		p := "/"
		for range r.IntN(4) {
			p += pick(word(unreserved, 12)+"/", word(unreserved, 12), "/")
		}
		var query []string
		for _, k := range []string{"Action", "Param1", "Version", "list-type"} {
			if r.IntN(3) == 0 {
				query = append(query, k+"="+word(unreserved, 10))
			}
		}
		c.URL = "https://" + pick("secretsmanager."+c.Region+".amazonaws.com", "127.0.0.1:4566", "vpce-0a1b.ssm.eu-west-1.vpce.amazonaws.com") + p
		if len(query) > 0 {
			c.URL += "?" + strings.Join(query, "&") // sorted, as the extension's signer needs
		}
		for range r.IntN(5) {
			c.Headers = append(c.Headers, [2]string{pick("Content-Type", "X-Amz-Target", "My-Header1", "X-Custom-Thing", "Accept"), printable()})
		}
		cases = append(cases, c)
	}
	// The extension's own requests.
	for _, target := range []string{"secretsmanager.GetSecretValue", "AmazonSSM.GetParameter"} {
		cases = append(cases, signCase{Method: "POST", URL: "https://secretsmanager.eu-central-1.amazonaws.com", Body: `{"SecretId":"arn:aws:secretsmanager:eu-central-1:111122223333:secret:loki-AbCdEf"}`,
			Headers: [][2]string{{"Content-Type", "application/x-amz-json-1.1"}, {"X-Amz-Target", target}},
			KeyID:   "ASIAEXAMPLE", Secret: "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", Token: "IQoJb3JpZ2luX2VjEXAMPLE//////////wEaCWV1LXdlc3QtMSJHMEUCIQ==",
			Region: "eu-central-1", Service: "secretsmanager", Time: time.Now().UTC()})
	}
	return cases
}

// sdkSign signs c with the AWS SDK for Go v2.
func sdkSign(t *testing.T, c signCase) string {
	req, err := http.NewRequest(c.Method, c.URL, nil) // no ContentLength: the SDK would sign it, the extension does not
	if err != nil {
		t.Fatal(err)
	}
	for _, h := range c.Headers {
		req.Header.Add(h[0], h[1])
	}
	sum := sha256.Sum256([]byte(c.Body))
	creds := aws.Credentials{AccessKeyID: c.KeyID, SecretAccessKey: c.Secret, SessionToken: c.Token}
	if err := v4.NewSigner().SignHTTP(context.Background(), creds, req, hex.EncodeToString(sum[:]), c.Service, c.Region, c.Time); err != nil {
		t.Fatal(err)
	}
	return req.Header.Get("Authorization")
}

func TestSignerMatchesTheSDK(t *testing.T) {
	dir := t.TempDir()
	copySigner(t, dir)
	cases := randomCases(500)
	in, err := json.Marshal(cases)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("go", "run", ".")
	cmd.Dir, cmd.Stdin, cmd.Stderr = dir, bytes.NewReader(in), os.Stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("the extension's signer: %v", err)
	}
	got := strings.Split(strings.TrimSuffix(string(out), "\n"), "\n")
	if len(got) != len(cases) {
		t.Fatalf("%d signatures for %d cases", len(got), len(cases))
	}
	bad := 0
	for i, c := range cases {
		if want := sdkSign(t, c); got[i] != want {
			if bad++; bad <= 5 {
				t.Errorf("case %d %+v:\n the extension: %s\n the SDK:       %s", i, c, got[i], want)
			}
		}
	}
	t.Logf("%d requests signed alike by both, %d not", len(cases)-bad, bad)
}
