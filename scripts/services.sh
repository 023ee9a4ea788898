#!/usr/bin/env bash
# Installs (and, where needed, starts) what the tests need. Idempotent: each section checks
# first and does nothing when its service is already there. Keep it a simple list of
# sections, one per service.
set -euo pipefail

apt_updated=0
apt_install() {
  if [ "$apt_updated" = 0 ]; then
    apt-get update -qq
    apt_updated=1
  fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@"
}

# --- SMTP test server: Debian's aiosmtpd (crates/smtp tests start it themselves on a free
# loopback port, with /usr/bin/python3: a pyenv or venv python3 first on PATH lacks it).
if ! /usr/bin/python3 -c 'import aiosmtpd' >/dev/null 2>&1; then
  echo "== installing python3-aiosmtpd"
  apt_install python3-aiosmtpd
fi
# The SMTP TLS tests make a throw-away CA and server certificate with the openssl CLI.
command -v openssl >/dev/null 2>&1 || apt_install openssl

# --- Chromium and chromedriver: Debian's packages, for the admin console's browser test
# (tests/admin_console_browser.rs drives /usr/bin/chromium headless through
# /usr/bin/chromedriver with WebDriver).
if [ ! -x /usr/bin/chromium ] || [ ! -x /usr/bin/chromedriver ]; then
  echo "== installing chromium and chromium-driver"
  apt_install --no-install-recommends chromium chromium-driver fonts-liberation
fi

# --- PostgreSQL: the machine's cluster on 127.0.0.1:5432 (trust auth, user postgres,
# database test), for crates/postgres tests and benches (TENANTRY_PG_URL overrides the URL).
# Starts it when it does not answer, then waits until it accepts connections.
if command -v pg_isready >/dev/null 2>&1 && ! pg_isready -q -h 127.0.0.1 -p 5432; then
  echo "== starting PostgreSQL"
  pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql)" main start || true
  for _ in $(seq 1 60); do
    pg_isready -q -h 127.0.0.1 -p 5432 && break
    sleep 1
  done
  pg_isready -h 127.0.0.1 -p 5432
fi

# --- Tools from PyPI and npm, in folders of the project's own (.tools/, not committed):
# schemathesis (the JSON API's property-based test, crates/axum/tests/api_schemathesis.rs
# runs .tools/venv/bin/schemathesis) and axe-core (the browser test injects
# .tools/node/node_modules/axe-core/axe.min.js into each console page). Versions are pinned
# so a run is repeatable.
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
tools="$root/.tools"
if [ ! -x "$tools/venv/bin/schemathesis" ]; then
  echo "== installing schemathesis into $tools/venv"
  python3 -m venv "$tools/venv"
  "$tools/venv/bin/pip" install -q --disable-pip-version-check "schemathesis==4.*"
fi
# standardwebhooks: the Standard Webhooks reference verifier, which crates/webhooks tests run
# (.tools/venv/bin/python) on every delivered webhook.
if ! "$tools/venv/bin/python" -c 'import standardwebhooks' >/dev/null 2>&1; then
  echo "== installing standardwebhooks into $tools/venv"
  [ -x "$tools/venv/bin/python" ] || python3 -m venv "$tools/venv"
  "$tools/venv/bin/pip" install -q --disable-pip-version-check "standardwebhooks==1.*"
fi
if [ ! -f "$tools/node/node_modules/axe-core/axe.min.js" ]; then
  echo "== installing axe-core into $tools/node"
  mkdir -p "$tools/node"
  (cd "$tools/node" && npm install --silent --no-audit --no-fund --prefix . "axe-core@4")
fi
