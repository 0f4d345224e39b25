#!/usr/bin/env bash
# The test command of the README: every unit, simulation, property and
# end-to-end test of the workspace, then the doc tests.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/strata/target}"
cargo nextest run --workspace --no-fail-fast --status-level fail --final-status-level fail "$@"
cargo test --workspace --doc --quiet
