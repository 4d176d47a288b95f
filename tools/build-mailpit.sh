#!/usr/bin/env bash
# Builds the dev mail catcher mailpit at the version pinned in tools/go.mod.
#
#   tools/build-mailpit.sh [OUTPUT]        (default: bin/mailpit)
#
# The Go module of mailpit does not ship its compiled web UI (server/ui/dist
# is made by npm in mailpit's own release process), so a plain
# `go build github.com/axllent/mailpit` gives a mailpit whose SMTP server and
# HTTP API work but whose inbox page is blank. With MAILPIT_UI=auto (the
# default) and npm on the PATH this script copies the pinned module source to
# bin/.mailpit-src/, builds the UI there with npm (lockfile, no install
# scripts) and builds the binary from that copy; the copy's go.mod and go.sum
# are mailpit's own, checksummed with the module, so it gets the dependency
# versions mailpit released with. MAILPIT_UI=0 (or no npm) builds the API-only
# binary straight from tools/go.mod, where the other pinned tools can raise
# shared dependencies (x/net, x/sys, ...) to newer minor versions.
# MAILPIT_UI=1 fails when npm is missing.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
out=${1:-$root/bin/mailpit}
case $out in /*) ;; *) out=$PWD/$out ;; esac
ui=${MAILPIT_UI:-auto}
mod=github.com/axllent/mailpit

log() { printf 'build-mailpit: %s\n' "$*" >&2; }

command -v go >/dev/null 2>&1 || { log "go is not on PATH"; exit 1; }

version=$(go -C "$root/tools" list -m -f '{{.Version}}' "$mod")
ldflags="-s -w -X $mod/config.Version=$version"
mkdir -p "$(dirname "$out")"

if [ "$ui" = auto ]; then
	if command -v npm >/dev/null 2>&1; then ui=1; else ui=0; fi
	[ "$ui" = 1 ] || log "npm not found: building mailpit $version without its web UI (API only); apt-get install -y npm for the inbox page"
fi

if [ "$ui" = 0 ]; then
	log "go build $mod@$version (API only) -> $out"
	go -C "$root/tools" build -trimpath -ldflags "$ldflags" -o "$out" "$mod"
	exit 0
fi

command -v npm >/dev/null 2>&1 || { log "MAILPIT_UI=1 but npm is not on PATH (apt-get install -y npm)"; exit 1; }

src=$(go -C "$root/tools" mod download -json "$mod" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",*$/\1/p')
if [ -z "$src" ] || [ ! -d "$src" ]; then
	log "could not locate the source of $mod@$version"
	exit 1
fi

work=$root/bin/.mailpit-src
if [ "$(cat "$work/.version" 2>/dev/null || true)" != "$version" ]; then
	log "copying $mod@$version source to $work"
	rm -rf "$work"
	mkdir -p "$work"
	cp -R "$src/." "$work/"
	chmod -R u+w "$work"
fi
if [ ! -f "$work/server/ui/dist/app.js" ]; then
	log "building the web UI with npm (npm ci --ignore-scripts && npm run build)"
	(cd "$work" && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error && npm run build --silent) >&2
fi
echo "$version" >"$work/.version"

log "go build $mod@$version (with web UI) -> $out"
go -C "$work" build -trimpath -ldflags "$ldflags" -o "$out" .
