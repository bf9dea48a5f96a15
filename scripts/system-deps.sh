#!/usr/bin/env bash
# Installs the Debian packages the test suite needs (headless Chromium for the
# end-to-end tests, restic and pg_dump/pg_restore for the backup tests, Dovecot IMAP
# for the mail plugin's private test server started by its fixture), or the
# packages given as arguments. Idempotent: does nothing when everything is present,
# so `make test` stays fast on a prepared machine. Needs root (or sudo) only when
# something is missing.
set -euo pipefail

packages=(chromium restic postgresql-client dovecot-imapd)
[ $# -gt 0 ] && packages=("$@")
missing=()
for pkg in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
[ ${#missing[@]} -eq 0 ] && exit 0

echo "Installing system packages: ${missing[*]}"
sudo_cmd=()
[ "$(id -u)" -eq 0 ] || sudo_cmd=(sudo)
export DEBIAN_FRONTEND=noninteractive
"${sudo_cmd[@]}" apt-get update -qq
"${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}"
