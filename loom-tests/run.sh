#!/usr/bin/env bash
# Model-checks busline's lock-free core with loom: every correct model, and each deliberately
# broken variant of the core, which its model must catch.
#
# Usage: bash loom-tests/run.sh [PREEMPTIONS]
#   PREEMPTIONS: loom's preemption bound; else $LOOM_MAX_PREEMPTIONS; else 3.
#   (`make loom` runs it at 3; `.ci/run` at 2.)
#
# Builds in target/loom (release, `--cfg busline_loom`, with debug assertions on so the core's
# own `debug_assert!`s run in every execution), apart from the normal target dir. The broken
# variants are switched on at run time inside that build (`busline::model::Bug`, which exists
# only under `--cfg busline_loom`), one per `*broken*` test, so one build serves them all.
# Each model prints its execution count and time.
set -euo pipefail
cd "$(dirname "$0")/.."

export LOOM_MAX_PREEMPTIONS="${1:-${LOOM_MAX_PREEMPTIONS:-3}}"
export RUSTFLAGS="${RUSTFLAGS:+$RUSTFLAGS }--cfg busline_loom -C debug-assertions"
cargo_test=(cargo test -p busline-loom-tests --release --target-dir target/loom)
start=$(date +%s)

echo "== loom: build"
"${cargo_test[@]}" --no-run

echo "== loom: correct models and broken variants, LOOM_MAX_PREEMPTIONS=$LOOM_MAX_PREEMPTIONS"
"${cargo_test[@]}" --no-fail-fast -- --nocapture

echo "== loom: done in $(( $(date +%s) - start )) s"
