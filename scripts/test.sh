#!/usr/bin/env bash
# Runs every check and every test of the workspace: formatting, clippy (warnings are
# errors), then all tests of all crates with all features, doc tests included.
# Starts or installs what the tests need first (see scripts/services.sh).
set -euo pipefail
cd "$(dirname "$0")/.."

if [ -x scripts/services.sh ]; then
  scripts/services.sh
fi

echo "== cargo fmt --check"
cargo fmt --all -- --check

echo "== cargo clippy (warnings are errors)"
cargo clippy --workspace --all-targets --all-features -- -D warnings

echo "== cargo test"
cargo test --workspace --all-features --no-fail-fast
