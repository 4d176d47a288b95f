#!/usr/bin/env bash
# Runs the whole verifyq stack locally (behind `make run`):
#
#   Redis     the one at REDIS_URL when it answers, else a redis-server started
#             here on 127.0.0.1 at the URL's port (no persistence)
#   mailpit   bin/mailpit (built from tools/go.mod when missing or stale):
#             SMTP on MAILPIT_SMTP_ADDR, inbox and API on MAILPIT_HTTP_ADDR
#   worker    bin/worker, sending to mailpit
#   enqueuer  bin/enqueuer, the HTTP API
#
# It waits until everything is ready, prints the URLs and stays in the
# foreground; Ctrl-C (or SIGTERM) stops what it started, and only that. Each
# process logs to RUN_DIR/<name>.log; RUN_DIR/ready appears once all is ready.
#
# Environment (defaults in brackets); the binaries' own variables
# (LOG_LEVEL, CODE_TTL, CODE_LENGTH, CODE_KEY_PREFIX, WORKER_CONCURRENCY,
# SHUTDOWN_TIMEOUT, MAIL_FROM, ...; see docs/CONFIGURATION.md) pass through
# unchanged:
#   REDIS_URL            [redis://127.0.0.1:6379/0]
#   HTTP_ADDR            enqueuer API [127.0.0.1:8080]
#   GRPC_ADDR            enqueuer gRPC [127.0.0.1:50051]
#   ENQUEUER_ADMIN_ADDR  enqueuer ADMIN_ADDR [127.0.0.1:8081]
#   WORKER_ADMIN_ADDR    worker ADMIN_ADDR [127.0.0.1:8082]
#                        (ADMIN_ADDR itself is ignored: the two would clash)
#   MAILPIT_SMTP_ADDR    [127.0.0.1:1025]
#   MAILPIT_HTTP_ADDR    [127.0.0.1:8025]
#   SMTP_URL             [smtp://MAILPIT_SMTP_ADDR?tls=none] (mailpit here
#                        offers no TLS)
#   RUN_DIR              logs and data [<repo>/tmp-run]
#   READY_TIMEOUT        seconds to wait for readiness [60]
#   STOP_TIMEOUT         seconds to wait for each process to stop [30]
#   RUN_FOLLOW           1: also print all logs here [1 when stdout is a tty]
# shellcheck disable=SC2317 # cleanup and stop_one run from the EXIT trap
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"

RUN_DIR=${RUN_DIR:-$ROOT/tmp-run}
REDIS_URL=${REDIS_URL:-redis://127.0.0.1:6379/0}
HTTP_ADDR=${HTTP_ADDR:-127.0.0.1:8080}
GRPC_ADDR=${GRPC_ADDR:-127.0.0.1:50051}
ENQUEUER_ADMIN_ADDR=${ENQUEUER_ADMIN_ADDR:-127.0.0.1:8081}
WORKER_ADMIN_ADDR=${WORKER_ADMIN_ADDR:-127.0.0.1:8082}
MAILPIT_SMTP_ADDR=${MAILPIT_SMTP_ADDR:-127.0.0.1:1025}
MAILPIT_HTTP_ADDR=${MAILPIT_HTTP_ADDR:-127.0.0.1:8025}
SMTP_URL=${SMTP_URL:-smtp://$MAILPIT_SMTP_ADDR?tls=none}
READY_TIMEOUT=${READY_TIMEOUT:-60}
STOP_TIMEOUT=${STOP_TIMEOUT:-30}
if [ -t 1 ]; then RUN_FOLLOW=${RUN_FOLLOW:-1}; else RUN_FOLLOW=${RUN_FOLLOW:-0}; fi
export REDIS_URL HTTP_ADDR GRPC_ADDR SMTP_URL
if [ -n "${ADMIN_ADDR:-}" ]; then
	echo "run.sh: ignoring ADMIN_ADDR=$ADMIN_ADDR; use ENQUEUER_ADMIN_ADDR and WORKER_ADMIN_ADDR" >&2
fi
unset ADMIN_ADDR

log() { printf 'run.sh: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

# ---- processes started here, as "name=pid" words, in start order ----------
STARTED=""
TAIL_PID=""
CLEANED=0

stop_one() { # name pid
	local name=$1 pid=$2 waited=0
	kill -0 "$pid" 2>/dev/null || { wait "$pid" 2>/dev/null || true; return 0; }
	log "stopping $name (pid $pid)"
	kill -TERM "$pid" 2>/dev/null || true
	while kill -0 "$pid" 2>/dev/null; do
		if [ "$waited" -ge "$((STOP_TIMEOUT * 10))" ]; then
			log "$name did not stop in ${STOP_TIMEOUT}s; killing it"
			kill -KILL "$pid" 2>/dev/null || true
			break
		fi
		sleep 0.1
		waited=$((waited + 1))
	done
	wait "$pid" 2>/dev/null || true
}

cleanup() {
	local rc=$?
	[ "$CLEANED" = 1 ] && return
	CLEANED=1
	trap - INT TERM
	rm -f "$RUN_DIR/ready"
	if [ -n "$TAIL_PID" ]; then
		kill -TERM "$TAIL_PID" 2>/dev/null || true
		wait "$TAIL_PID" 2>/dev/null || true
	fi
	# Reverse start order: the enqueuer stops taking requests, the worker
	# finishes its sends, then mailpit and Redis go.
	local e reversed=""
	for e in $STARTED; do reversed="$e $reversed"; done
	for e in $reversed; do stop_one "${e%%=*}" "${e#*=}"; done
	[ -n "$STARTED" ] && log "stopped everything it started (logs stay in $RUN_DIR)"
	exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

start() { # name command...
	local name=$1
	shift
	"$@" >"$RUN_DIR/$name.log" 2>&1 &
	STARTED="$STARTED $name=$!"
	log "started $name (pid $!), log $RUN_DIR/$name.log"
}

check_alive() { # all started processes are still running, else report and fail
	local e name pid
	for e in $STARTED; do
		name=${e%%=*}
		pid=${e#*=}
		if ! kill -0 "$pid" 2>/dev/null; then
			local rc=0
			wait "$pid" 2>/dev/null || rc=$?
			log "$name (pid $pid) exited with status $rc; last lines of $RUN_DIR/$name.log:"
			tail -n 20 "$RUN_DIR/$name.log" | sed 's/^/    /' >&2
			return 1
		fi
	done
}

# ---- addresses ---------------------------------------------------------------
host_of() { # addr -> host to connect to (wildcards become 127.0.0.1)
	local h=${1%:*}
	case $h in "" | 0.0.0.0 | "[::]" | "::") h=127.0.0.1 ;; esac
	echo "$h"
}
port_of() { echo "${1##*:}"; }
url_of() { echo "http://$(host_of "$1"):$(port_of "$1")"; }

port_busy() { # host port: true when something accepts connections there
	local h=${1#[}
	h=${h%]}
	(exec 3<>"/dev/tcp/$h/$2") 2>/dev/null
}

need_free() { # name addr
	if port_busy "$(host_of "$2")" "$(port_of "$2")"; then
		die "$1 address $2 is already in use (another make run? set the *_ADDR variables to move it)"
	fi
}

# ---- prerequisites -------------------------------------------------------------
command -v go >/dev/null 2>&1 || die "go is not on PATH"
command -v curl >/dev/null 2>&1 || die "curl is needed (apt-get install -y curl)"

need_free "enqueuer HTTP_ADDR" "$HTTP_ADDR"
need_free "enqueuer GRPC_ADDR" "$GRPC_ADDR"
need_free "ENQUEUER_ADMIN_ADDR" "$ENQUEUER_ADMIN_ADDR"
need_free "WORKER_ADMIN_ADDR" "$WORKER_ADMIN_ADDR"
need_free "MAILPIT_SMTP_ADDR" "$MAILPIT_SMTP_ADDR"
need_free "MAILPIT_HTTP_ADDR" "$MAILPIT_HTTP_ADDR"

mkdir -p "$RUN_DIR"
rm -f "$RUN_DIR"/*.log "$RUN_DIR/ready" "$RUN_DIR"/mailpit.db*
rm -rf "$RUN_DIR/redis"

# ---- Redis -----------------------------------------------------------------------
# REDIS_URL: redis[s]://[user:password@]host[:port][/db]
r_scheme=${REDIS_URL%%://*}
r_rest=${REDIS_URL#*://}
r_userinfo=""
case $r_rest in *@*) r_userinfo=${r_rest%@*}; r_rest=${r_rest##*@} ;; esac
r_hostport=${r_rest%%/*}
r_hostport=${r_hostport%%\?*}
case $r_hostport in
\[*\]:*) r_host=${r_hostport%:*}; r_port=${r_hostport##*:} ;;
\[*\]) r_host=$r_hostport; r_port=6379 ;;
*:*) r_host=${r_hostport%:*}; r_port=${r_hostport##*:} ;;
*) r_host=$r_hostport; r_port=6379 ;;
esac
r_host=${r_host#[}
r_host=${r_host%]}
[ -n "$r_host" ] || r_host=127.0.0.1

redis_ping() {
	if command -v redis-cli >/dev/null 2>&1; then
		[ "$(timeout 5 redis-cli --no-auth-warning -u "$REDIS_URL" ping 2>/dev/null)" = PONG ]
	else # plain RESP PING; enough for a local Redis without a password
		[ "$r_scheme" = redis ] && [ -z "$r_userinfo" ] || return 1
		local reply=""
		# shellcheck disable=SC2016 # $1 $2 expand in the inner bash
		reply=$(timeout 5 bash -c 'exec 3<>"/dev/tcp/$1/$2" && printf "PING\r\n" >&3 && IFS= read -r l <&3 && printf %s "$l"' _ "$r_host" "$r_port" 2>/dev/null) || return 1
		[ "${reply%$'\r'}" = +PONG ]
	fi
}

REDIS_ORIGIN="yours, at REDIS_URL"
if redis_ping; then
	log "using the Redis that answers at REDIS_URL"
else
	case $r_host in 127.0.0.1 | localhost | ::1) ;; *)
		die "no Redis answers at REDIS_URL (host $r_host) and it is not local, so none is started here" ;;
	esac
	[ "$r_scheme" = redis ] || die "no Redis answers at REDIS_URL; a local one is only started for redis:// URLs"
	[ -z "$r_userinfo" ] || die "no Redis answers at REDIS_URL, which has credentials: start that Redis yourself"
	command -v redis-server >/dev/null 2>&1 ||
		die "no Redis answers at REDIS_URL and redis-server is not installed (Debian: apt-get install -y redis-server redis-tools; macOS: brew install redis)"
	port_busy 127.0.0.1 "$r_port" && die "127.0.0.1:$r_port is in use by something that does not answer as Redis at REDIS_URL"
	mkdir -p "$RUN_DIR/redis"
	start redis redis-server --bind 127.0.0.1 --port "$r_port" --dir "$RUN_DIR/redis" \
		--save "" --appendonly no --daemonize no --logfile ""
	REDIS_ORIGIN="started here on 127.0.0.1:$r_port (no persistence; stopped with the rest)"
	for _ in $(seq 1 100); do
		redis_ping && break
		check_alive || die "redis-server did not start"
		sleep 0.1
	done
	redis_ping || die "redis-server started but does not answer at REDIS_URL"
fi

# ---- builds ------------------------------------------------------------------------
MAILPIT=$ROOT/bin/mailpit
if [ ! -x "$MAILPIT" ] || [ tools/go.mod -nt "$MAILPIT" ] || [ tools/go.sum -nt "$MAILPIT" ] ||
	[ tools/build-mailpit.sh -nt "$MAILPIT" ]; then
	log "building bin/mailpit (tools/build-mailpit.sh; the first build takes a few minutes)"
	bash tools/build-mailpit.sh "$MAILPIT"
fi
log "building bin/worker and bin/enqueuer (go build -o bin/ ./cmd/...)"
go build -o bin/ ./cmd/...

# ---- start ---------------------------------------------------------------------------
start mailpit "$MAILPIT" \
	--listen "$MAILPIT_HTTP_ADDR" \
	--smtp "$MAILPIT_SMTP_ADDR" \
	--smtp-auth-accept-any \
	--smtp-auth-allow-insecure \
	--smtp-disable-rdns \
	--disable-version-check \
	--database "$RUN_DIR/mailpit.db"

REDIS_CLI_URL="'$REDIS_URL'"
# shellcheck disable=SC2016 # printed as is: keeps the URL's password off the screen
[ -z "$r_userinfo" ] || REDIS_CLI_URL='"$REDIS_URL"'
API_URL=$(url_of "$HTTP_ADDR")
ENQ_ADMIN_URL=$(url_of "$ENQUEUER_ADMIN_ADDR")
WORKER_ADMIN_URL=$(url_of "$WORKER_ADMIN_ADDR")
MAILPIT_URL=$(url_of "$MAILPIT_HTTP_ADDR")

if [ "$RUN_FOLLOW" = 1 ]; then
	touch "$RUN_DIR/worker.log" "$RUN_DIR/enqueuer.log"
	tail -n +1 -F "$RUN_DIR/mailpit.log" "$RUN_DIR/worker.log" "$RUN_DIR/enqueuer.log" &
	TAIL_PID=$!
fi

ready() { curl -fsS -o /dev/null --max-time 2 "$1" 2>/dev/null; }
deadline=$(($(date +%s) + READY_TIMEOUT))
wait_ready() { # url...: until every URL answers 2xx, while all processes live
	local u
	for u in "$@"; do
		until ready "$u"; do
			check_alive || die "the stack did not come up"
			[ "$(date +%s)" -lt "$deadline" ] || die "$u not ready after ${READY_TIMEOUT}s (see $RUN_DIR/*.log)"
			sleep 0.2
		done
	done
}

# mailpit first, so that the worker's first sends find its SMTP port open.
wait_ready "$MAILPIT_URL/readyz"
start worker env ADMIN_ADDR="$WORKER_ADMIN_ADDR" "$ROOT/bin/worker"
start enqueuer env ADMIN_ADDR="$ENQUEUER_ADMIN_ADDR" "$ROOT/bin/enqueuer"
wait_ready "$WORKER_ADMIN_URL/readyz" "$ENQ_ADMIN_URL/readyz"

{
	echo "API_URL=$API_URL"
	echo "ENQUEUER_ADMIN_URL=$ENQ_ADMIN_URL"
	echo "WORKER_ADMIN_URL=$WORKER_ADMIN_URL"
	echo "MAILPIT_URL=$MAILPIT_URL"
	echo "CODE_KEY_PREFIX=${CODE_KEY_PREFIX:-code_}"
	echo "RUN_PID=$$"
} >"$RUN_DIR/ready"

cat <<EOF

verifyq is up. Ctrl-C stops everything started here.
  API              $API_URL/v1/codes
  gRPC             $GRPC_ADDR   (message.VarifyService, verifyq.v1.CodeService; reflection on)
  dashboard        $ENQ_ADMIN_URL/monitoring/   metrics: $ENQ_ADMIN_URL/metrics
  enqueuer admin   $ENQ_ADMIN_URL/healthz  $ENQ_ADMIN_URL/readyz
  worker admin     $WORKER_ADMIN_URL/healthz  $WORKER_ADMIN_URL/readyz
  mailpit inbox    $MAILPIT_URL/   (API: $MAILPIT_URL/api/v1/messages)
  mailpit SMTP     $MAILPIT_SMTP_ADDR
  Redis            $REDIS_ORIGIN
  logs             $RUN_DIR/{redis,mailpit,worker,enqueuer}.log  (tail -f $RUN_DIR/*.log)

Try:
  curl -sS -X POST $API_URL/v1/codes -H 'Content-Type: application/json' -d '{"email":"someone@example.com"}'
  redis-cli -u $REDIS_CLI_URL GET '${CODE_KEY_PREFIX:-code_}someone@example.com'
  then open $MAILPIT_URL/

EOF

while check_alive; do
	sleep 1
done
die "a process of the stack stopped; stopping the rest"
