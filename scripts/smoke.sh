#!/usr/bin/env bash
# End-to-end smoke test of the local stack (behind `make smoke`):
#
#   1. starts scripts/run.sh in the background (its own process group) and
#      waits until it reports ready (builds included);
#   2. asks for a code for a random address with curl (expects 202, and a
#      reply that does not contain the code);
#   3. polls mailpit's API until the mail to that address is there;
#   4. checks that the code in the mail is the one in Redis at
#      CODE_KEY_PREFIX+address;
#   5. prints PASS and the mailpit message id, stops the stack, exits 0.
#
# Any failure prints the tail of every log and exits non-zero. run.sh's
# variables (REDIS_URL, HTTP_ADDR, *_ADMIN_ADDR, MAILPIT_*_ADDR, RUN_DIR, ...)
# pass through. Also:
#   SMOKE_START_TIMEOUT  seconds for run.sh to build and come up [600]
#   SMOKE_MAIL_TIMEOUT   seconds to wait for the mail in mailpit [30]
#   CODE_LENGTH          digits of the code [6]
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"

export RUN_DIR=${RUN_DIR:-$ROOT/tmp-run}
export REDIS_URL=${REDIS_URL:-redis://127.0.0.1:6379/0}
export RUN_FOLLOW=0
SMOKE_START_TIMEOUT=${SMOKE_START_TIMEOUT:-600}
SMOKE_MAIL_TIMEOUT=${SMOKE_MAIL_TIMEOUT:-30}
CODE_LENGTH=${CODE_LENGTH:-6}
PREFIX=${CODE_KEY_PREFIX:-code_}
RUN_OUT=$RUN_DIR/run.out # run.sh's own output (run.sh clears *.log)

say() { printf 'smoke: %s\n' "$*"; }

for tool in curl redis-cli; do
	command -v "$tool" >/dev/null 2>&1 || {
		say "FAIL: $tool is needed (Debian: apt-get install -y curl redis-tools)"
		exit 1
	}
done

RUN_PID=""
MARK=/nonexistent
GROUP=0
FAILED=0

show_logs() {
	local f
	for f in "$RUN_OUT" "$RUN_DIR"/redis.log "$RUN_DIR"/mailpit.log "$RUN_DIR"/worker.log "$RUN_DIR"/enqueuer.log; do
		[ -f "$f" ] || continue
		# Only logs of this run, not those left by an earlier one.
		[ "$f" = "$RUN_OUT" ] || [ "$f" -nt "$MARK" ] || continue
		echo "----- last lines of $f"
		tail -n 25 "$f"
	done
}

stop_stack() {
	[ -n "$RUN_PID" ] || return 0
	if kill -0 "$RUN_PID" 2>/dev/null; then
		say "stopping the stack (run.sh pid $RUN_PID)"
		kill -TERM "$RUN_PID" 2>/dev/null || true
		for _ in $(seq 1 600); do
			kill -0 "$RUN_PID" 2>/dev/null || break
			sleep 0.1
		done
	fi
	# Whatever is left of run.sh's process group (nothing, normally).
	if [ "$GROUP" = 1 ] && kill -0 -- "-$RUN_PID" 2>/dev/null; then
		say "killing what is left of process group $RUN_PID"
		kill -KILL -- "-$RUN_PID" 2>/dev/null || true
	fi
	wait "$RUN_PID" 2>/dev/null || true
	RUN_PID=""
}

fail() {
	FAILED=1
	say "FAIL: $*"
	show_logs
	exit 1
}

on_exit() {
	local rc=$?
	trap - INT TERM EXIT
	if [ "$rc" != 0 ] && [ "$FAILED" = 0 ]; then
		say "FAIL: interrupted or unexpected error (status $rc)"
		show_logs
	fi
	stop_stack
	exit "$rc"
}
trap on_exit EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# ---- start the stack ----------------------------------------------------------
mkdir -p "$RUN_DIR"
rm -f "$RUN_DIR/ready"
MARK=$RUN_DIR/.smoke-start
touch "$MARK"
sleep 1 # file times may have a 1 s resolution: logs written from now on are newer
say "starting scripts/run.sh (output in $RUN_OUT)"
if command -v setsid >/dev/null 2>&1; then
	setsid bash scripts/run.sh >"$RUN_OUT" 2>&1 </dev/null &
	GROUP=1
else
	bash scripts/run.sh >"$RUN_OUT" 2>&1 </dev/null &
fi
RUN_PID=$!

deadline=$(($(date +%s) + SMOKE_START_TIMEOUT))
until [ -f "$RUN_DIR/ready" ]; do
	kill -0 "$RUN_PID" 2>/dev/null || fail "run.sh exited before the stack was ready"
	[ "$(date +%s)" -lt "$deadline" ] || fail "the stack was not ready after ${SMOKE_START_TIMEOUT}s"
	sleep 0.5
done

value() { sed -n "s/^$1=//p" "$RUN_DIR/ready"; }
API_URL=$(value API_URL)
MAILPIT_URL=$(value MAILPIT_URL)
say "stack ready: API $API_URL, mailpit $MAILPIT_URL"

# ---- ask for a code ---------------------------------------------------------------
email="smoke-$(date +%s)-$RANDOM$RANDOM@example.com"
body=$(mktemp)
status=$(curl -sS -o "$body" -w '%{http_code}' --max-time 10 -X POST "$API_URL/v1/codes" \
	-H 'Content-Type: application/json' -d "{\"email\":\"$email\"}") || fail "POST $API_URL/v1/codes failed"
reply=$(cat "$body")
rm -f "$body"
say "POST /v1/codes for $email -> $status $reply"
[ "$status" = 202 ] || fail "want status 202, got $status"

# ---- wait for the mail in mailpit ---------------------------------------------------
id=""
deadline=$(($(date +%s) + SMOKE_MAIL_TIMEOUT))
while :; do
	found=$(curl -sS --max-time 5 --get "$MAILPIT_URL/api/v1/search" \
		--data-urlencode "query=to:\"$email\"" 2>/dev/null || true)
	id=$(printf '%s' "$found" | grep -o '"ID":"[^"]*"' | head -n 1 | sed 's/^"ID":"\(.*\)"$/\1/' || true)
	[ -n "$id" ] && break
	[ "$(date +%s)" -lt "$deadline" ] || fail "no mail to $email in mailpit after ${SMOKE_MAIL_TIMEOUT}s"
	sleep 0.5
done
say "mail arrived in mailpit: id $id"

message=$(curl -sS --max-time 5 "$MAILPIT_URL/api/v1/message/$id") || fail "GET $MAILPIT_URL/api/v1/message/$id failed"
printf '%s' "$message" | grep -qF "\"Address\":\"$email\"" || fail "message $id is not addressed to $email: $message"
if command -v jq >/dev/null 2>&1; then
	text=$(printf '%s' "$message" | jq -r '.Text')
else
	text=$(printf '%s' "$message" | sed -n 's/.*"Text":"\([^"]*\)".*/\1/p' | sed 's/\\[rn]/ /g')
fi
# The code is the only run of exactly CODE_LENGTH digits in the text.
mail_codes=$(printf '%s\n' "$text" | grep -oE '[0-9]+' | awk -v n="$CODE_LENGTH" 'length($0) == n' | sort -u)
[ -n "$mail_codes" ] || fail "no $CODE_LENGTH-digit code in the text of message $id: $text"
[ "$(printf '%s\n' "$mail_codes" | wc -l)" -eq 1 ] || fail "more than one $CODE_LENGTH-digit number in message $id: $mail_codes"
mail_code=$mail_codes

# ---- compare with Redis and the reply ---------------------------------------------
redis_code=$(redis-cli --no-auth-warning -u "$REDIS_URL" GET "$PREFIX$email") || fail "redis-cli GET failed"
[ -n "$redis_code" ] || fail "Redis has no $PREFIX$email"
[ "$mail_code" = "$redis_code" ] || fail "code in the mail ($mail_code) != Redis $PREFIX$email ($redis_code)"
case $reply in *"$redis_code"*) fail "the HTTP reply contains the code: $reply" ;; esac
say "code in the mail = redis GET $PREFIX$email ($CODE_LENGTH digits); the reply does not contain it"

stop_stack
say "PASS: mail to $email is in mailpit, message id $id"
