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
