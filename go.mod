module loki-extension

go 1.27

toolchain go1.27.3

require github.com/google/go-cmp v0.7.0
