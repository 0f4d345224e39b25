#!/usr/bin/env bash
# The test command of the README: the doc tests, then every unit,
# simulation, property and end-to-end test of the workspace.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/strata/target}"
cargo test --workspace --doc --quiet
cargo nextest run --workspace --no-fail-fast --status-level fail --final-status-level fail "$@"
