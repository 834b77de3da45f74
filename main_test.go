package main

import (
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func mapEnv(m map[string]string) func(string) string {
	return func(k string) string { return m[k] }
}

func TestLoadConfigDefaults(t *testing.T) {
	t.Parallel()
	cfg, err := loadConfig(mapEnv(map[string]string{"LOKI_URL": "https://logs-prod-012.grafana.net"}))
	if err != nil {
		t.Fatal(err)
	}
	types, _ := parseTypes(defaultTypes)
	want := config{
		target:        lokiTarget{pushURL: "https://logs-prod-012.grafana.net/loki/api/v1/push", labels: map[string]string{}},
		types:         types,
		port:          4243,
		buffering:     buffering{MaxItems: 1000, MaxBytes: 262144, TimeoutMs: 25},
		bufferBytes:   4 << 20, // 128 MB of function memory
		maxLineBytes:  256 << 10,
		flushInterval: time.Second,
		flushTimeout:  300 * time.Millisecond,
	}
	if diff := cmp.Diff(want, cfg, cmp.AllowUnexported(config{}, lokiTarget{})); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
}

func TestLoadConfigSettings(t *testing.T) {
	t.Parallel()
	cfg, err := loadConfig(mapEnv(map[string]string{
		"LOKI_URL":                       "https://123456:glc_token@logs.example.net/",
		"LOKI_TENANT_ID":                 "team-a",
		"LOKI_LABELS":                    "env=prod",
		"LOKI_TYPES":                     "function,extension",
		"LOKI_LISTENER_PORT":             "5000",
		"LOKI_TELEMETRY_MAX_ITEMS":       "10000",
		"LOKI_TELEMETRY_MAX_BYTES":       "1048576",
		"LOKI_TELEMETRY_TIMEOUT_MS":      "100",
		"LOKI_BUFFER_BYTES":              "2097152",
		"LOKI_MAX_LINE_BYTES":            "4096",
		"LOKI_FLUSH_INTERVAL":            "5s",
		"LOKI_FLUSH_TIMEOUT":             "1s",
		"LOKI_RUNTIME_DONE_WAIT":         "2s",
		"AWS_LAMBDA_INITIALIZATION_TYPE": "lambda-managed-instances",
		"LOKI_FLUSH_MODE":                "adaptive",
		"LOKI_MIN_LEVEL":                 " Warn ",
		"LOKI_MAX_BYTES_PER_SECOND":      "1048576",
	}))
	if err != nil {
		t.Fatal(err)
	}
	want := config{
		target: lokiTarget{pushURL: "https://logs.example.net/loki/api/v1/push", authorization: "Basic MTIzNDU2OmdsY190b2tlbg==",
			tenant: "team-a", labels: map[string]string{"env": "prod"}},
		types:             typeFilter{"function": true, "extension": true},
		port:              5000,
		buffering:         buffering{MaxItems: 10000, MaxBytes: 1048576, TimeoutMs: 100},
		bufferBytes:       2 << 20,
		maxLineBytes:      4096,
		flushInterval:     5 * time.Second,
		flushTimeout:      time.Second,
		runtimeDoneWait:   2 * time.Second,
		managedInstances:  true,
		adaptive:          true,
		minLevel:          levelOf("warn"),
		maxBytesPerSecond: 1 << 20,
	}
	if diff := cmp.Diff(want, cfg, cmp.AllowUnexported(config{}, lokiTarget{})); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
	cfg, err = loadConfig(mapEnv(map[string]string{"LOKI_URL": "http://loki:3100", "LOKI_BEARER_TOKEN": "tok\n"}))
	if err != nil || cfg.target.authorization != "Bearer tok" {
		t.Errorf("bearer: %q, %v", cfg.target.authorization, err)
	}
}

func TestLoadConfigErrors(t *testing.T) {
	t.Parallel()
	const secret = "glc_s3cret"
	for _, tc := range []struct {
		env  map[string]string
		want string
	}{
		{map[string]string{}, "LOKI_URL is not set: set it to your Loki URL"},
		{map[string]string{"LOKI_URL": "logs.example.net"}, "LOKI_URL is not an http:// or https:// URL"},
		{map[string]string{"LOKI_URL": "ftp://u:" + secret + "@logs.example.net"}, "LOKI_URL is not an http:// or https:// URL"},
		{map[string]string{"LOKI_URL": "https://u:" + secret + "@[::1"}, "LOKI_URL is not an http:// or https:// URL"},
		{map[string]string{"LOKI_URL": "http://l", "LOKI_USERNAME": "123"}, "LOKI_USERNAME and LOKI_PASSWORD go together"},
		{map[string]string{"LOKI_URL": "http://l", "LOKI_PASSWORD": secret}, "LOKI_USERNAME and LOKI_PASSWORD go together"},
		{map[string]string{"LOKI_URL": "http://l", "LOKI_USERNAME": "1", "LOKI_PASSWORD": secret, "LOKI_BEARER_TOKEN": secret}, "keep one of them"},
		{map[string]string{"LOKI_URL": "http://l", "LOKI_TENANT_ID": "a|b"}, "LOKI_TENANT_ID: a tenant is"},
		{map[string]string{"LOKI_URL": "http://l", "LOKI_BEARER_TOKEN": "glc_s3cret\x00x"}, "LOKI_BEARER_TOKEN holds a control character"},
		{map[string]string{"LOKI_URL": "http://l", "LOKI_USERNAME": "12\x1b3", "LOKI_PASSWORD": secret}, "LOKI_USERNAME or LOKI_PASSWORD holds a control character"},
		{map[string]string{"LOKI_URL": "http://l", "LOKI_USERNAME": "a:b", "LOKI_PASSWORD": secret}, "or the user a colon"},
		{map[string]string{"LOKI_URL": "http://l", "LOKI_MAX_LINE_BYTES": "1000000", "LOKI_BUFFER_BYTES": "2000000"}, "LOKI_MAX_LINE_BYTES: 1000000 is over a quarter of LOKI_BUFFER_BYTES"},
		{map[string]string{"LOKI_URL": "http://l", "LOKI_TENANT_ID": ".."}, "LOKI_TENANT_ID"},
		{map[string]string{"LOKI_URL": "http://l", "LOKI_LABELS": "a-b=c"}, `LOKI_LABELS: label name "a-b" must match`},
		{map[string]string{"LOKI_URL": "http://l", "LOKI_TYPES": "function,logs"}, `LOKI_TYPES: unknown type "logs"`},
		{map[string]string{"LOKI_URL": "http://l", "LOKI_LISTENER_PORT": "http"}, `LOKI_LISTENER_PORT: "http" is not a whole number from 0 to 65535`},
		{map[string]string{"LOKI_URL": "http://l", "LOKI_LISTENER_PORT": "9001"}, "9001 is reserved"},
		{map[string]string{"LOKI_URL": "http://l", "LOKI_MIN_LEVEL": "warning"}, `LOKI_MIN_LEVEL: "warning" is not a level; use trace, debug, info, warn, error or fatal`},
		{map[string]string{"LOKI_URL": "http://l", "LOKI_MIN_LEVEL": "critical"}, "LOKI_MIN_LEVEL"},
		{map[string]string{"LOKI_URL": "http://l", "LOKI_MAX_BYTES_PER_SECOND": "10MB"}, `LOKI_MAX_BYTES_PER_SECOND: "10MB" is not a whole number from 0 to`},
		{map[string]string{"LOKI_URL": "http://l", "LOKI_MAX_BYTES_PER_SECOND": "-1"}, "LOKI_MAX_BYTES_PER_SECOND"},
		{map[string]string{"LOKI_URL": "http://l", "LOKI_TELEMETRY_MAX_ITEMS": "10"}, "LOKI_TELEMETRY_MAX_ITEMS"},
		{map[string]string{"LOKI_URL": "http://l", "LOKI_TELEMETRY_MAX_BYTES": "1"}, "LOKI_TELEMETRY_MAX_BYTES"},
		{map[string]string{"LOKI_URL": "http://l", "LOKI_TELEMETRY_TIMEOUT_MS": "1"}, "LOKI_TELEMETRY_TIMEOUT_MS"},
		{map[string]string{"LOKI_URL": "http://l", "LOKI_BUFFER_BYTES": "-5"}, "LOKI_BUFFER_BYTES"},
		{map[string]string{"LOKI_URL": "http://l", "LOKI_MAX_LINE_BYTES": "99999999999999999999"}, "LOKI_MAX_LINE_BYTES"},
		{map[string]string{"LOKI_URL": "http://l", "LOKI_FLUSH_INTERVAL": "1"}, `LOKI_FLUSH_INTERVAL: "1" is not a duration`},
		{map[string]string{"LOKI_URL": "http://l", "LOKI_FLUSH_TIMEOUT": "0s"}, "LOKI_FLUSH_TIMEOUT"},
		{map[string]string{"LOKI_URL": "http://l", "LOKI_RUNTIME_DONE_WAIT": "-1s"}, "LOKI_RUNTIME_DONE_WAIT"},
		{map[string]string{"LOKI_URL": "http://l", "LOKI_FLUSH_MODE": "lazy"}, `LOKI_FLUSH_MODE: "lazy" is not a flush mode; use invocation (the default) or adaptive`},
		// Kept in AWS: an ARN is checked before it names a host, and (without
		// AWS_ACCESS_KEY_ID) the container credentials' URI.
		{map[string]string{"LOKI_URL": "http://l", "LOKI_BEARER_TOKEN": "arn:aws:secretsmanager:evil.example/x?:111122223333:secret:" + secret}, "LOKI_BEARER_TOKEN: a value that starts with arn:"},
		{map[string]string{"LOKI_URL": "http://l", "LOKI_BEARER_TOKEN": ssmARN, "AWS_CONTAINER_CREDENTIALS_FULL_URI": "http://example.com/" + secret}, "AWS_CONTAINER_CREDENTIALS_FULL_URI: "},
		{map[string]string{"LOKI_URL": "http://l", "LOKI_BEARER_TOKEN": ssmARN, "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI": "@example.com/" + secret}, "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI: "},
	} {
		_, err := loadConfig(mapEnv(tc.env))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v: error %v, want one containing %q", tc.env, err, tc.want)
		}
		if err != nil && strings.Contains(err.Error(), secret) {
			t.Errorf("%v: the error shows a secret: %v", tc.env, err)
		}
	}
}

func TestBufferScalesWithMemory(t *testing.T) {
	t.Parallel()
	for memory, want := range map[string]int{"": 4 << 20, "128": 4 << 20, "1024": 32 << 20, "10240": 64 << 20, "64": 2 << 20, "16": 1 << 20, "lots": 4 << 20} {
		cfg, err := loadConfig(mapEnv(map[string]string{"LOKI_URL": "http://l", "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": memory}))
		if err != nil || cfg.bufferBytes != want {
			t.Errorf("memory %q MB: buffer %d, %v; want %d", memory, cfg.bufferBytes, err, want)
		}
	}
}
