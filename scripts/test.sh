#!/usr/bin/env bash
# Runs every check and every test of the workspace: formatting, clippy (warnings are
# errors), then all tests of all crates with all features, doc tests included.
# Starts or installs what the tests need first (see scripts/services.sh).
set -euo pipefail
# A clean build keeps no incremental state: it only costs disk on a one-off run.
export CARGO_INCREMENTAL="${CARGO_INCREMENTAL:-0}"
cd "$(dirname "$0")/.."

if [ -x scripts/services.sh ]; then
  scripts/services.sh
fi

echo "== cargo fmt --check"
cargo fmt --all -- --check

echo "== cargo clippy (warnings are errors)"
cargo clippy --workspace --all-targets --all-features -- -D warnings

echo "== dependency graph (a PostgreSQL host and the axum adapter build no SQLite)"
for args in "-p tenantry-axum" "-p tenantry --no-default-features --features postgres,smtp"; do
  # shellcheck disable=SC2086
  if cargo tree $args -e normal --prefix none | grep -q '^libsqlite3-sys'; then
    echo "cargo tree $args pulls in libsqlite3-sys" >&2
    exit 1
  fi
done

echo "== cargo package (every crate can be published, in dependency order)"
cargo package --workspace --no-verify --allow-dirty --quiet

echo "== cargo doc (intra-doc links must resolve)"
RUSTDOCFLAGS="-D rustdoc::broken_intra_doc_links" cargo doc --workspace --all-features --no-deps --quiet

echo "== cargo test"
cargo test --workspace --all-features --no-fail-fast
