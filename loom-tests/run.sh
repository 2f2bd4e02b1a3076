#!/usr/bin/env bash
# Model-checks busline's lock-free core with loom: every correct model, then each deliberately
# broken variant of the core, which its model must catch.
#
# Usage: bash loom-tests/run.sh [PREEMPTIONS]
#   PREEMPTIONS: loom's preemption bound; else $LOOM_MAX_PREEMPTIONS; else 3.
#   (`make loom` runs it at 3; `.ci/run` at 2.)
#
# Builds in target/loom (release, `--cfg busline_loom`), apart from the normal target dir. Each
# broken variant is a cargo feature, unified across a build, so each runs in its own cargo
# invocation, filtered to its `broken_*` test. Each model prints its execution count and time.
set -euo pipefail
cd "$(dirname "$0")/.."

export LOOM_MAX_PREEMPTIONS="${1:-${LOOM_MAX_PREEMPTIONS:-3}}"
export RUSTFLAGS="${RUSTFLAGS:+$RUSTFLAGS }--cfg busline_loom -C debug-assertions"
cargo_test=(cargo test -p busline-loom-tests --release --target-dir target/loom)
start=$(date +%s)

echo "== loom: correct models, LOOM_MAX_PREEMPTIONS=$LOOM_MAX_PREEMPTIONS"
"${cargo_test[@]}" -- --nocapture

echo "== loom: broken variants (each model must fail)"
"${cargo_test[@]}" --features broken-claim --test ring_claim -- --nocapture broken_claim
"${cargo_test[@]}" --features broken-publish --test slot_publish -- --nocapture broken_publish
"${cargo_test[@]}" --features broken-register --test slot_publish -- --nocapture broken_register

echo "== loom: done in $(( $(date +%s) - start )) s"
