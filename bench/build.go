package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// Build flags of the shipped binary (see build.sh).
const (
	shippedTags    = "nethttpomithttp2"
	shippedLdflags = "-s -w -buildid="
)

// binaries are the executables the benchmark runs, and the sizes of the
// build variants it compares.
type binaries struct {
	extension string // as shipped, named loki-extension
	baseline  string // bench/baseline, also named loki-extension
	sizes     []binarySize
}

// binarySize is the size of one build variant.
type binarySize struct {
	label string
	bytes int64
}

// buildVariant is one go build invocation.
type buildVariant struct {
	label string
	pkg   string
	out   string
	env   []string
	args  []string
}

// buildAll builds the shipped extension, the variants that show what each
// build choice saves, and the baseline, all under tmp.
func buildAll(ctx context.Context, root, tmp string) (*binaries, error) {
	shipped := []string{"-tags", shippedTags, "-trimpath", "-ldflags", shippedLdflags}
	noCgo := []string{"CGO_ENABLED=0"}
	bins := &binaries{
		extension: filepath.Join(tmp, "extension", extensionName),
		baseline:  filepath.Join(tmp, "baseline", extensionName),
	}
	variants := []buildVariant{
		{"shipped: `CGO_ENABLED=0 go build -tags nethttpomithttp2 -trimpath -ldflags '-s -w -buildid='`", ".", bins.extension, noCgo, shipped},
		{"same for GOARCH=arm64", ".", filepath.Join(tmp, "arm64"), []string{"CGO_ENABLED=0", "GOOS=linux", "GOARCH=arm64"}, shipped},
		{"without `-tags nethttpomithttp2` (HTTP/2 linked in)", ".", filepath.Join(tmp, "with-http2"), noCgo, shipped[2:]},
		{"plain `go build` (symbols, DWARF, HTTP/2)", ".", filepath.Join(tmp, "plain"), nil, nil},
		{"AWS-sample-style baseline (reimplemented here), shipped flags", "./bench/baseline", bins.baseline, noCgo, shipped},
	}
	for _, v := range variants {
		size, err := build(ctx, root, v)
		if err != nil {
			return nil, err
		}
		bins.sizes = append(bins.sizes, binarySize{v.label, size})
	}
	return bins, nil
}

// build runs one go build and returns the size of the binary.
func build(ctx context.Context, root string, v buildVariant) (int64, error) {
	if err := os.MkdirAll(filepath.Dir(v.out), 0o755); err != nil {
		return 0, err
	}
	args := append([]string{"build"}, v.args...)
	args = append(args, "-o", v.out, v.pkg)
	cmd := exec.CommandContext(ctx, "go", args...)
	cmd.Dir = root
	cmd.Env = append(os.Environ(), v.env...)
	if out, err := cmd.CombinedOutput(); err != nil {
		return 0, fmt.Errorf("go %s: %w\n%s", strings.Join(args, " "), err, out)
	}
	fi, err := os.Stat(v.out)
	if err != nil {
		return 0, err
	}
	return fi.Size(), nil
}

// moduleRoot returns the directory of the main module's go.mod.
func moduleRoot(ctx context.Context) (string, error) {
	out, err := exec.CommandContext(ctx, "go", "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("go env GOMOD: %w", err)
	}
	gomod := strings.TrimSpace(string(out))
	if gomod == "" || gomod == os.DevNull {
		return "", fmt.Errorf("not inside the loki-extension module: run from the repository root")
	}
	return filepath.Dir(gomod), nil
}
