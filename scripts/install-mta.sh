#!/usr/bin/env bash
# Installs what the MTA harness (internal/mtatest, `make test-mta`) needs from
# Debian's packages: postfix, Cyrus SASL's saslpasswd2 (sasl2-bin) and its
# PLAIN/LOGIN modules, and SpamAssassin with its packaged rules. Idempotent:
# quick when everything is present. The tests start their own Postfix
# instances on free loopback ports, so the system instance that the package
# may start is stopped and disabled; nothing depends on port 25.
set -euo pipefail

say() { printf '==> install-mta: %s\n' "$*"; }

SUDO=""
if [ "$(id -u)" != 0 ] && command -v sudo >/dev/null 2>&1; then SUDO="sudo"; fi

# Debian's packages, checked by dpkg's own record, so a half-removed one is
# installed again.
missing=""
for pkg in postfix sasl2-bin libsasl2-modules spamassassin; do
	dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' || missing="$missing $pkg"
done

if [ -n "$missing" ]; then
	say "installing with apt-get:$missing"
	export DEBIAN_FRONTEND=noninteractive
	# "No configuration": the package writes no main.cf for a system
	# instance; the harness writes its own per test.
	printf '%s\n' \
		'postfix postfix/main_mailer_type select No configuration' \
		'postfix postfix/mailname string localhost' |
		$SUDO debconf-set-selections
	$SUDO apt-get update
	# shellcheck disable=SC2086 # word splitting of the package list is wanted
	$SUDO apt-get install -y --no-install-recommends $missing
else
	say "postfix, sasl2-bin, libsasl2-modules and spamassassin are present; nothing to install"
fi

# A system Postfix is not wanted: stop it when the package started one. With
# "No configuration" it normally has no main.cf and does not start.
if [ -f /etc/postfix/main.cf ] && $SUDO postfix status >/dev/null 2>&1; then
	say "stopping the system postfix"
	$SUDO postfix stop || true
fi
if command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then
	$SUDO systemctl disable --now postfix.service >/dev/null 2>&1 || true
fi

# SpamAssassin must score offline with the rules in the package (no
# sa-update, no network): a message without a Date header must trip MISSING_DATE.
rules=/usr/share/spamassassin
if ! ls "$rules"/*.cf >/dev/null 2>&1; then
	say "error: no packaged SpamAssassin rules in $rules"
	exit 1
fi
out="$(printf 'From: a@example.test\nTo: b@example.test\nSubject: hi\n\nhello\n' |
	timeout 120 spamassassin -t --local 2>/dev/null || true)"
if ! grep -q '^X-Spam-Status:' <<<"$out"; then
	say "error: spamassassin -t --local did not score a message (no X-Spam-Status)"
	exit 1
fi
say "$(postconf -d mail_version 2>/dev/null), $(spamassassin --version | head -n 1), $(grep -m1 '^X-Spam-Status:' <<<"$out")"
