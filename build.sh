#!/usr/bin/env bash
# Builds the extension for linux/amd64 and linux/arm64 and packs each into a
# Lambda layer zip: dist/loki-extension-<arch>.zip holding extensions/loki-extension.
# Builds are reproducible: two runs give byte-identical zips.
# "./build.sh demo" then runs the local end-to-end demo (e2e/run.sh demo).
set -euo pipefail
cd "$(dirname "$0")"
# go.mod asks for Go 1.27; this fetches it where the machine's Go is older.
export GOTOOLCHAIN=go1.27.3

name=loki-extension
# HTTP/2 is not needed to talk to Loki; leaving it out saves about 0.55 MB.
tags=nethttpomithttp2
# The version the extension tells Loki (User-Agent) and its logs: the commit,
# or a tag on it. The same commit builds the same bytes.
version=$(git describe --tags --always --dirty 2>/dev/null || echo devel)
rm -rf dist
mkdir -p dist
for arch in amd64 arm64; do
  stage=$(mktemp -d)
  mkdir -p "$stage/extensions"
  CGO_ENABLED=0 GOOS=linux GOARCH=$arch go build -tags "$tags" -trimpath \
    -ldflags "-s -w -buildid= -X main.version=$version" -o "$stage/extensions/$name" .

  chmod 0755 "$stage/extensions" "$stage/extensions/$name"
  # Fixed times and no extra attributes make the zip byte-identical each time.
  touch -h -d '2020-01-01T00:00:00Z' "$stage/extensions" "$stage/extensions/$name"
  (cd "$stage" && TZ=UTC zip -X -q -D "$OLDPWD/dist/$name-$arch.zip" "extensions/$name")
  if go version -m "$stage/extensions/$name" | grep -q $'^\tdep\t'; then
    echo "build.sh: the binary links a module dependency; it must use the standard library only" >&2
    exit 1
  fi
  printf '%s linux/%s: %d bytes (zip %d bytes)\n' "$name" "$arch" \
    "$(stat -c %s "$stage/extensions/$name")" "$(stat -c %s "dist/$name-$arch.zip")"
  rm -rf "$stage"
done

if [ "${1:-}" = demo ]; then
  exec e2e/run.sh demo
fi
