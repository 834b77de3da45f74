#!/usr/bin/env bash
# End-to-end tier: the built loki-extension inside AWS's Lambda Runtime
# Interface Emulator (RIE), pushing to a real Loki-protocol store
# (VictoriaLogs), both pinned in e2e/go.mod. See e2e/README.md.
#
# Usage: e2e/run.sh [MODE...]     (default: lmi big classic auth secrets)
#   lmi      LMI emulator (real telemetry), 20 invocations x 50 lines, text and JSON
#            lines alternating; checked before SHUTDOWN (periodic flush) and after it
#   big      LMI emulator, 4 concurrent invocations with interleaved lines,
#            200 invocations x 20 lines, tenant 42
#   classic  classic emulator: INVOKE/SHUTDOWN lifecycle, subscribe answered 202
#   auth     store with basic auth: right credentials deliver, wrong ones are reported
#   secrets  store with basic auth, credentials read by ARN from a fake Secrets Manager and
#            SSM (fakeaws) that checks every signature with the AWS SDK's signer
#   demo     one small LMI run, then prints stored lines and the Grafana query
#            (E2E_DEMO_KEEP=1 leaves VictoriaLogs running afterwards)
# Needs root (unshare -m, bind mounts over /opt, /var, /etc/hosts), Go, curl.
# Ports (127.0.0.1 only): 9428 store (E2E_VL_PORT), 9427 fakeaws, 9000/9001 emulator,
# 4243 extension.
set -euo pipefail

E2E_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(dirname "$E2E_DIR")
VL_PORT=${E2E_VL_PORT:-9428}
VL_URL=http://127.0.0.1:$VL_PORT
RIE_PORT=9000 # invocations
API_PORT=9001 # Runtime/Extensions/Telemetry APIs
EXT_PORT=4243 # the extension's telemetry listener (its default)
# The extension needs Go 1.27 (go.mod); fetched where the machine's Go is older.
export GOTOOLCHAIN=go1.27.3
SYS_PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin

log() { printf 'e2e: %s\n' "$*" >&2; }
die() {
	log "ERROR: $*"
	exit 1
}

# stop PID: SIGTERM, then SIGKILL after 10 s. Only ever our own pids.
stop() {
	local pid=$1 i
	[[ -n $pid ]] || return 0
	kill -TERM "$pid" 2>/dev/null || return 0
	for ((i = 0; i < 100; i++)); do
		kill -0 "$pid" 2>/dev/null || break
		sleep 0.1
	done
	kill -KILL "$pid" 2>/dev/null || true
	wait "$pid" 2>/dev/null || true
}

# wait_exit PID SECONDS: wait for a process to exit on its own; 1 if it did not.
wait_exit() {
	local pid=$1 i
	for ((i = 0; i < $2 * 10; i++)); do
		kill -0 "$pid" 2>/dev/null || {
			wait "$pid" 2>/dev/null || true
			return 0
		}
		sleep 0.1
	done
	return 1
}

port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# ---------------------------------------------------------------- one mode --
# Each mode runs in its own bash process (so `set -e` and the EXIT trap work),
# with its own store and emulator; $BIN holds the binaries built by the parent.

VL_PID='' RIE_PID='' AWS_PID=''
mode_cleanup() {
	stop "$RIE_PID" # the emulator's mount namespace, and so its mounts, die with it
	stop "$VL_PID"
	stop "$AWS_PID"
	# The sandbox's processes are in the emulator's process groups and get
	# SIGKILLed by it at shutdown; the extension's listener port tells if one
	# outlived it.
	port_free "$EXT_PORT" || log "WARNING: port $EXT_PORT is still in use: did a loki-extension outlive the emulator?"
}

# start_store [extra flags]: a fresh VictoriaLogs with an empty data dir.
start_store() {
	port_free "$VL_PORT" || die "port $VL_PORT is in use (set E2E_VL_PORT)"
	rm -rf "$MDIR/vl-data"
	"$BIN/victoria-logs" -storageDataPath="$MDIR/vl-data" -httpListenAddr="127.0.0.1:$VL_PORT" \
		-loki.disableMessageParsing -retentionPeriod=7d "$@" >"$MDIR/victoria-logs.log" 2>&1 &
	VL_PID=$!
	local i
	for ((i = 0; i < 100; i++)); do
		curl -fsS --max-time 2 "$VL_URL/health" >/dev/null 2>&1 && return 0
		kill -0 "$VL_PID" 2>/dev/null || break
		sleep 0.2
	done
	tail -n 20 "$MDIR/victoria-logs.log" >&2
	die "VictoriaLogs did not become healthy"
}

# sandbox DIR: the file system the emulator sees as /opt, /var and /etc/hosts.
sandbox() {
	local d=$1
	rm -rf "$d"
	mkdir -p "$d/opt/extensions" "$d/var/runtime" "$d/var/task"
	cp "$BIN/loki-extension" "$d/opt/extensions/loki-extension"
	cp "$BIN/runtime" "$d/var/runtime/bootstrap"
	printf '127.0.0.1 localhost\n127.0.0.1 sandbox.localdomain sandbox\n' >"$d/hosts"
	chmod -R a+rX "$d" # in LMI mode the runtime and extensions run as uid 993
	chmod a+x "$d" "$d/opt/extensions/loki-extension" "$d/var/runtime/bootstrap"
}

# invoke_emulator NAME N M FORMAT CONCURRENCY|classic DELAY_MS [VAR=value...]
# Starts the emulator with the extension (VARs added to its environment) and
# makes N invocations of M lines (DELAY_MS between lines), from CONCURRENCY
# parallel clients. Sets RUN (the run id, unique in the store), FN (function
# name = service_name), OUT (run dir with emulator.log and responses.jsonl).
invoke_emulator() {
	local name=$1 n=$2 m=$3 format=$4 conc=$5 delay=$6
	shift 6
	RUN=${name//-/}$RANDOM$RANDOM # no "-": ids are <run>-<inv>-<n>
	FN=e2e-$RUN
	OUT=$MDIR/$name
	SANDBOX=$OUT/sandbox
	mkdir -p "$OUT"
	sandbox "$SANDBOX"
	local p
	for p in "$RIE_PORT" "$API_PORT" "$EXT_PORT"; do
		port_free "$p" || die "port $p is in use"
	done
	local envs=(PATH="$SYS_PATH" HOME=/tmp AWS_LAMBDA_FUNCTION_NAME="$FN"
		AWS_LAMBDA_FUNCTION_TIMEOUT=10 LOKI_URL="$VL_URL/insert" "$@")
	[[ $conc == classic ]] || envs+=(AWS_LAMBDA_MAX_CONCURRENCY="$conc")
	log "$name: emulator (concurrency $conc), $n invocations x $m lines ($format, ${delay}ms apart), function $FN"
	# A private mount namespace gives the emulator its fixed paths without
	# touching the host; the mounts vanish when the process exits. unshare and
	# sh exec into the emulator, so $! is the emulator's pid.
	# shellcheck disable=SC2016 # $0 and $1 are expanded by that sh
	env -i "${envs[@]}" unshare -m --propagation private sh -c '
		mount --bind "$0/opt" /opt && mount --bind "$0/var" /var &&
		mount --bind "$0/hosts" /etc/hosts && cd /var/task &&
		exec "$1" --runtime-interface-emulator-address 127.0.0.1:'"$RIE_PORT"' \
			--runtime-api-address 127.0.0.1:'"$API_PORT" \
		"$SANDBOX" "$BIN/aws-lambda-rie" >"$OUT/emulator.log" 2>&1 &
	RIE_PID=$!
	local i
	for ((i = 0; i < 100; i++)); do
		port_free "$RIE_PORT" || break
		kill -0 "$RIE_PID" 2>/dev/null || {
			cat "$OUT/emulator.log" >&2
			die "the emulator exited at start"
		}
		sleep 0.1
	done

	# Invocations: in `conc` parallel clients (1 for classic), each writing the
	# function's responses to its own file.
	local clients=1 c pids=()
	[[ $conc == classic ]] || clients=$conc
	for ((c = 0; c < clients; c++)); do
		(
			fails=0 body=$OUT/body.$c
			for ((i = c; i < n; i += clients)); do
				rm -f "$body"
				code=$(curl -sS --max-time 15 -o "$body" -w '%{http_code}' \
					-X POST "http://127.0.0.1:$RIE_PORT/2015-03-31/functions/function/invocations" \
					-d "{\"run\":\"$RUN\",\"inv\":$i,\"lines\":$m,\"format\":\"$format\",\"delayMs\":$delay}") || true
				if [[ $code == 200 ]]; then
					cat "$body" >>"$OUT/responses.$c"
					echo >>"$OUT/responses.$c"
					fails=0
				else
					echo "invocation $i failed: HTTP $code $(head -c 200 "$body" 2>/dev/null)" >>"$OUT/responses.$c"
					((++fails < 3)) || break # the emulator is stuck or gone: stop early
				fi
			done
		) &
		pids+=($!)
	done
	for p in "${pids[@]}"; do
		wait "$p" || true
	done
	cat "$OUT"/responses.* >"$OUT/responses.jsonl"
}

force_flush() {
	curl -fsS --max-time 10 "${AUTH_CURL[@]}" "$VL_URL/internal/force_flush" >/dev/null ||
		log "force_flush failed"
}

# shutdown_emulator: SIGTERM the emulator (SHUTDOWN) and wait for it to exit.
shutdown_emulator() {
	local name=${OUT##*/}
	# The emulator flushes telemetry, sends SHUTDOWN (2 s deadline),
	# SIGKILLs what is left and exits.
	kill -TERM "$RIE_PID"
	wait_exit "$RIE_PID" 20 || log "$name: the emulator did not exit within 20 s"
	stop "$RIE_PID"
	RIE_PID=
	force_flush
	grep '^loki-extension: ' "$OUT/emulator.log" | sed "s/^/  [$name] /" >&2 || true
}

# emulator_ok NAME: the extension was not SIGKILLed (it exited on SHUTDOWN) and
# nothing in the sandbox crashed.
emulator_ok() {
	local bad
	if bad=$(grep -iE 'SIGKILL.*(loki-extension|extension)|Extension\.Crash|panic:|goroutine [0-9]+ \[' "$OUT/emulator.log"); then
		log "$1: the extension did not exit cleanly:"
		printf '%s\n' "$bad" | head -n 20 >&2
		return 1
	fi
}

# run_emulator: invoke_emulator, then shutdown_emulator.
run_emulator() {
	invoke_emulator "$@"
	shutdown_emulator
}

# telemetry_ok NAME: the emulator dropped no telemetry batch. It drops a batch
# when the extension has not yet answered the previous POST (one in flight per
# subscriber, as Lambda does); its LMI relay then also deadlocks (it sends
# platform.logsDropped to its own event channel), so that later invocations
# hang and fail with Runtime.Unavailable.
telemetry_ok() {
	local n
	n=$(grep -c 'could not send batch to telemetry Subscriber' "$OUT/emulator.log") || true
	if [[ $n != 0 ]]; then
		log "$1: the emulator dropped $n telemetry batch(es): the extension's listener had not answered" \
			"the previous POST when the next batch was due (see the emulator log; the emulator's relay" \
			"deadlocks after a drop, so later invocations fail with Runtime.Unavailable)"
		return 1
	fi
}

check() { "$BIN/check" -url "$VL_URL" "${AUTH_CHECK[@]}" -service "$FN" -responses "$OUT/responses.jsonl" "$@" | tee -a "$SUMMARY"; }

AUTH_CURL=() AUTH_CHECK=()
run_mode() {
	MODE=$1
	MDIR=$WORK/$MODE
	mkdir -p "$MDIR"
	trap mode_cleanup EXIT
	trap 'exit 143' TERM INT
	local rc=0 i
	case $MODE in
	lmi)
		start_store
		invoke_emulator lmi 20 50 mixed 1 0 LOKI_LABELS=env=e2e,tier=lmi
		# No INVOKE event comes in LMI mode: the extension must push on its own
		# (LOKI_FLUSH_INTERVAL, 1 s) while the environment lives on.
		for ((i = 0; i < 10; i++)); do
			sleep 1
			force_flush
			"$BIN/check" -url "$VL_URL" -service "$FN" -responses "$OUT/responses.jsonl" \
				-invocations 20 >/dev/null 2>&1 && break
		done
		log "lmi: waited $((i + 1)) s for the lines before SHUTDOWN"
		check -mode lmi-before-shutdown -invocations 20 -labels env=e2e,tier=lmi || rc=1
		shutdown_emulator
		check -mode lmi -invocations 20 -labels env=e2e,tier=lmi -want-stats -want-reports || rc=1
		emulator_ok lmi || rc=1
		telemetry_ok lmi || rc=1
		;;
	big)
		start_store
		run_emulator big 200 20 mixed "${E2E_BIG_CONCURRENCY:-4}" 2 LOKI_TENANT_ID=42
		check -mode big -tenant 42 -invocations 200 -want-stats -want-reports || rc=1
		emulator_ok big || rc=1
		telemetry_ok big || rc=1
		;;
	classic)
		start_store
		run_emulator classic 5 10 mixed classic 0
		check -mode classic -invocations 5 -want-none -want-stats || rc=1
		emulator_ok classic || rc=1
		# All invocations succeeded, so the extension answered each INVOKE with /next.
		grep -q 'External agent loki-extension .* registered, subscribed to \[INVOKE SHUTDOWN\]' "$OUT/emulator.log" || {
			log "classic: the extension did not register for INVOKE and SHUTDOWN"
			rc=1
		}
		grep -q '^loki-extension: .*not supported' "$OUT/emulator.log" || {
			log "classic: no 'telemetry not supported' line from the extension"
			rc=1
		}
		;;
	secrets)
		start_store -httpAuth.username=e2euser -httpAuth.password=e2e-secret
		AUTH_CURL=(-u e2euser:e2e-secret) AUTH_CHECK=(-user e2euser -password e2e-secret)
		local sm=arn:aws:secretsmanager:eu-central-1:111122223333:secret:loki-AbCdEf
		local ssm=arn:aws:ssm:us-west-2:111122223333:parameter/loki/password
		local key=AKIAE2EEXAMPLE secret=e2e/aws+secret token=e2e-session-token
		port_free 9427 || die "port 9427 is in use"
		"$BIN/fakeaws" -addr 127.0.0.1:9427 -key-id "$key" -secret-key "$secret" -token "$token" \
			-value "$sm={\"username\":\"e2euser\",\"other\":\"x\"}" -value "$ssm=e2e-secret" >"$MDIR/fakeaws.log" 2>&1 &
		AWS_PID=$!
		for ((i = 0; i < 50; i++)); do
			port_free 9427 || break
			sleep 0.1
		done
		run_emulator secrets 10 20 mixed 1 0 LOKI_USERNAME="$sm:username::" LOKI_PASSWORD="$ssm" \
			AWS_ACCESS_KEY_ID="$key" AWS_SECRET_ACCESS_KEY="$secret" AWS_SESSION_TOKEN="$token" \
			AWS_ENDPOINT_URL=http://127.0.0.1:9427
		check -mode secrets -invocations 10 -want-stats -want-reports || rc=1
		emulator_ok secrets || rc=1
		telemetry_ok secrets || rc=1
		# One fetch of each for the environment, each signed as the SDK signs.
		local ok bad
		ok=$(grep -c '^fakeaws: ok ' "$MDIR/fakeaws.log") || true
		bad=$(grep -c '^fakeaws: BAD' "$MDIR/fakeaws.log") || true
		log "secrets: fakeaws answered $ok good calls, $bad bad ones"
		if [[ $ok != 2 || $bad != 0 ]]; then
			cat "$MDIR/fakeaws.log" >&2
			rc=1
		fi
		if grep '^loki-extension: ' "$OUT/emulator.log" | grep -qE "e2e-secret|$secret|$token"; then
			log "secrets: the extension printed a secret"
			rc=1
		fi
		;;
	auth)
		start_store -httpAuth.username=e2euser -httpAuth.password=e2e-secret
		AUTH_CURL=(-u e2euser:e2e-secret) AUTH_CHECK=(-user e2euser -password e2e-secret)
		run_emulator auth-ok 10 20 json 1 0 LOKI_USERNAME=e2euser LOKI_PASSWORD=e2e-secret
		check -mode auth-ok -invocations 10 -want-stats -want-reports || rc=1
		emulator_ok auth-ok || rc=1
		telemetry_ok auth-ok || rc=1
		run_emulator auth-wrong 5 10 mixed 1 0 LOKI_USERNAME=e2euser LOKI_PASSWORD=wrong
		check -mode auth-wrong -invocations 5 -want-none || rc=1
		emulator_ok auth-wrong || rc=1
		grep -qE '^loki-extension: .*(LOKI_USERNAME|LOKI_PASSWORD|401)' "$OUT/emulator.log" || {
			log "auth-wrong: the extension did not report the rejected credentials (LOKI_USERNAME/LOKI_PASSWORD or 401)"
			rc=1
		}
		;;
	demo)
		start_store
		run_emulator demo 3 4 mixed 1 0
		check -mode demo -invocations 3 >/dev/null || rc=1
		local rid
		rid=$(grep -o '"requestId":"[^"]*"' "$OUT/responses.jsonl" | head -n 1 | cut -d'"' -f4)
		cat <<-EOF

			The function printed 12 lines in 3 invocations; the extension pushed them to
			VictoriaLogs through its Loki push API. A few of the stored lines:

		EOF
		"$BIN/check" -url "$VL_URL" -service "$FN" -print 6
		cat <<-EOF

			In Grafana (Loki data source), the lines of one invocation are found with:
			  {service_name="$FN", source="function"} | request_id="$rid"
			VictoriaLogs' own query (LogsQL) for the same lines:
			  curl -s '$VL_URL/select/logsql/query' --data-urlencode 'query={service_name="$FN",source="function"} request_id:="$rid"'
		EOF
		if [[ ${E2E_DEMO_KEEP:-} == 1 ]]; then
			trap - EXIT
			cat <<-EOF
				VictoriaLogs keeps running (pid $VL_PID, data in $MDIR/vl-data); browse the lines at
				  $VL_URL/select/vmui/
				Stop it with: kill $VL_PID && rm -rf $WORK
			EOF
		else
			echo "(E2E_DEMO_KEEP=1 keeps VictoriaLogs running afterwards, with its web UI at $VL_URL/select/vmui/)"
		fi
		;;
	*) die "unknown mode $MODE" ;;
	esac
	return $rc
}

if [[ ${1:-} == __mode ]]; then
	# Child: one mode (see below). BIN, WORK and SUMMARY come from the parent.
	run_mode "$2"
	exit
fi

# -------------------------------------------------------------------- main --
[[ $(id -u) == 0 ]] || die "must run as root (unshare -m and bind mounts; LMI runs the sandbox as uid 993)"
for t in go curl unshare mount timeout; do
	command -v "$t" >/dev/null || die "$t is required"
done
MODES=("$@")
[[ ${#MODES[@]} -gt 0 ]] || MODES=(lmi big classic auth secrets)

start=$SECONDS
WORK=$(mktemp -d /tmp/loki-e2e.XXXXXX)
chmod 755 "$WORK"
SUMMARY=$WORK/summary.txt
BIN=$WORK/bin
touch "$SUMMARY"
main_cleanup() {
	[[ ${E2E_KEEP:-} == 1 ]] && return
	[[ ${E2E_DEMO_KEEP:-} == 1 && " ${MODES[*]} " == *" demo "* ]] && return # the store still runs
	rm -rf "$WORK"
}
CHILD=
stop_child() {
	[[ -n $CHILD ]] || return 0
	kill -TERM "$CHILD" 2>/dev/null || true
	wait_exit "$CHILD" 40 || kill -KILL "$CHILD" 2>/dev/null || true
}
trap main_cleanup EXIT
trap 'log "interrupted"; stop_child; exit 143' TERM INT

log "building the emulator, VictoriaLogs, the test runtime, checker and fakeaws (e2e/go.mod)"
(cd "$E2E_DIR" && CGO_ENABLED=0 go build -mod=readonly -o "$BIN/" tool ./runtime ./check ./fakeaws)

if [[ -n ${E2E_EXTENSION:-} ]]; then
	cp "$E2E_EXTENSION" "$BIN/loki-extension"
else
	log "building loki-extension"
	(cd "$ROOT" && CGO_ENABLED=0 go build -trimpath -ldflags '-s -w -buildid=' -o "$BIN/loki-extension" .)
fi
log "built in $((SECONDS - start)) s"

export BIN WORK SUMMARY
failed=()
for mode in "${MODES[@]}"; do
	t0=$SECONDS
	rc=0
	# In the background, so that a signal to this script is handled at once
	# (the trap below passes it on); the child cleans up on its own EXIT trap.
	timeout -k 30 900 bash "${BASH_SOURCE[0]}" __mode "$mode" &
	CHILD=$!
	wait "$CHILD" || rc=$?
	CHILD=
	log "mode $mode: $([[ $rc == 0 ]] && echo ok || echo "FAILED (rc=$rc)") in $((SECONDS - t0)) s"
	if [[ $rc != 0 ]]; then
		failed+=("$mode")
		for f in "$WORK/$mode"/*/emulator.log; do
			[[ -f $f ]] || continue
			log "last lines of $f:"
			grep -vE $'\tINFO\tline |"message":"line ' "$f" | tail -n 40 >&2
		done
		f=$WORK/$mode/victoria-logs.log
		if [[ -f $f ]]; then
			log "warnings and errors in $f:"
			grep -E '\s(warn|error|fatal|panic)\s' "$f" | tail -n 10 >&2 || true
		fi
	fi
done

echo "=== e2e summary ($((SECONDS - start)) s) ==="
grep '^mode=' "$SUMMARY" || true
if [[ ${#failed[@]} -gt 0 ]]; then
	echo "e2e FAILED: ${failed[*]}"
	exit 1
fi
echo "e2e passed: ${MODES[*]}"
