#!/usr/bin/env bash
# Runs the core's unit tests that exercise its unsafe code (the ring and its batch slots) under
# Miri, on the nightly toolchain. Installs the Miri component if it is missing.
#
# Usage: bash loom-tests/miri.sh [extra unit-test filters...]
set -euo pipefail
cd "$(dirname "$0")/.."

if ! cargo +nightly miri --version >/dev/null 2>&1; then
    rustup component add --toolchain nightly miri rust-src
fi
cargo +nightly miri setup

# ring::tests drive claim, write, seal, collect, publish, cancel, release and reset on real
# slots (the `unsafe` of ring.rs and slot.rs); seats::tests install, race for, recycle, pool
# and free seat segments (seats.rs); slot::tests checks the seat's layout; driver::batch::tests
# gather keys ahead of a seal and collect the rest on a batcher's real state. The other
# unit tests (policy, stats, timer) touch no unsafe code of the core; timer's would need prctl,
# which Miri cannot run, and is filtered out rather than ignored.
export MIRIFLAGS="${MIRIFLAGS:--Zmiri-strict-provenance -Zmiri-symbolic-alignment-check}"
cargo +nightly miri test -p busline --lib -- ring:: slot:: seats:: driver::batch:: "$@"

# The whole Batcher path (claim to release, the tokio driver, the timer thread) on the public
# API tests, minus the two heavy ones (tens of thousands of loads are hours under Miri) and the
# one that drops a load in the last tenth of a 1 ms window (under Miri a poll takes longer than
# the window, so it would check nothing; the gather it exercises is in ring::tests' reach
# through `Slot`, and loom's slot_gather model).
# -Zmiri-ignore-leaks: the process-wide timer thread and tokio's blocking pool outlive `main`
# by design; -Zmiri-disable-isolation: the timer reads the real clock.
MIRIFLAGS="$MIRIFLAGS -Zmiri-ignore-leaks -Zmiri-disable-isolation" \
    cargo +nightly miri test -p busline --test engine -- api:: --skip every_policy --skip max_in_flight --skip a_caller_gone_in_the_last_stretch
