#!/usr/bin/env bash
# The test command of the README: the doc tests, then every unit,
# simulation, property and end-to-end test of the workspace.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/strata/target}"
# The registry in etcd is a cargo feature whose build needs protoc: tested
# where protoc is (as under .ci/run, which installs it with etcd), else
# left out, saying so.
features=()
# protoc also needs the well-known types (Debian: libprotobuf-dev).
if command -v protoc >/dev/null 2>&1 && [ -e /usr/include/google/protobuf/descriptor.proto ]; then
    features=(--features strata/etcd)
elif [ -n "${STRATA_REQUIRE_ETCD:-}" ]; then
    echo "no protoc with its well-known types to build the etcd registry, and STRATA_REQUIRE_ETCD is set" >&2
    exit 1
else
    echo "note: no protoc (Debian: protobuf-compiler, libprotobuf-dev): the etcd registry is not built or tested" >&2
fi
cargo test --workspace "${features[@]}" --doc --quiet
cargo nextest run --workspace "${features[@]}" --no-fail-fast --status-level fail --final-status-level fail "$@"
