#!/bin/bash
# Writes `run --json` of every bundled scenario (and example) under car, natural, gated,
# adaptive and the window, and of the fleet study at 1, 16 and 256 instances under every
# routing and policy, into DIR: one file per run. A change meant to leave the simulator's
# results alone (a speed-up) must leave them the same to the byte:
#
#   sim/scripts/outputs.sh target/release/busline-sim.before /tmp/before
#   sim/scripts/outputs.sh target/release/busline-sim /tmp/after
#   diff -r /tmp/before /tmp/after && echo same
#
# Run from the repository's root; two runs at a time (`JOBS=n` for more), niced; their
# stderr (timings, errors) goes to DIR.stderr.
set -euo pipefail
bin=$(realpath "$1")
out=$2
jobs=${JOBS:-2}
mkdir -p "$out"
policies="car natural gated adaptive window"
{
    for s in sim/scenarios/*.toml sim/scenarios/examples/*.toml; do
        for p in $policies; do
            echo "$s $(basename "$s" .toml).$p policy.kind=$p"
        done
    done
    f=sim/scenarios/fleet/fleet-zipf.toml
    for n in 1 16 256; do
        for r in random round_robin key_affinity; do
            for p in $policies; do
                echo "$f fleet-zipf.$n.$r.$p policy.kind=$p fleet.instances=$n fleet.routing=$r"
            done
        done
    done
} | xargs -P "$jobs" -L 1 sh -c '
    s=$1 name=$2; shift 2
    sets=""
    for kv in "$@"; do sets="$sets --set $kv"; done
    nice -n 19 "'"$bin"'" run "$s" $sets --json > "'"$out"'/$name.json" 2>> "'"$out"'.stderr"
' sh
echo "$(ls "$out" | wc -l) runs in $out"
