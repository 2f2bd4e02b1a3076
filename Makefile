# busline: every task a developer or CI runs. Needs only a Rust toolchain (rustup's stable);
# `make miri` adds the nightly Miri component itself.

CARGO ?= cargo
LOOM_MAX_PREEMPTIONS ?= 3
export CARGO_TERM_COLOR ?= never

.PHONY: all build lint test test-features-off test-benches examples loom miri sim sim-speed bench bench-build ci clean demo demo-pg

all: build

build:
	$(CARGO) build --workspace --all-targets

# Clippy with warnings denied, on the normal build and on the loom build of the core.
lint:
	$(CARGO) clippy --workspace --all-targets -- -D warnings
	$(CARGO) clippy -p busline --all-targets --all-features -- -D warnings
	$(CARGO) clippy -p busline-benches --all-targets --no-default-features -- -D warnings
	RUSTFLAGS="--cfg busline_loom" $(CARGO) clippy -p busline -p busline-loom-tests --all-targets --target-dir target/loom -- -D warnings

# Every crate's tests in one build: busline with all its features (the metrics, tracing and
# tower tests need them; one feature set compiles the core's test binaries once), the doc
# tests. Leaves out the benches (their peer
# crates, async-graphql and the rest, are most of a cold build: `make test-benches`, CI), the
# examples crate (axum: `make examples`), the crates' `examples/` programs (measurement
# tools; `make lint` compiles them) and the loom models (`make loom`; without
# `--cfg busline_loom` they compile to 17 empty test binaries).
TEST_CRATES = --workspace --exclude busline-benches --exclude busline-examples --exclude busline-loom-tests --features busline/metrics,busline/tracing,busline/tower
# Without incremental compilation: a first `make test` builds every crate once, where its
# bookkeeping is pure cost (the test build of a fresh clone: 162 s against 177 s, and 155 s
# against 190 s in the other order, on the 2-core VM). `CARGO_INCREMENTAL=1 make test` keeps it
# for quicker rebuilds while iterating on a crate.
test: export CARGO_INCREMENTAL ?= 0
test:
	$(CARGO) test $(TEST_CRATES) --lib --bins --tests
	$(CARGO) test $(TEST_CRATES) --doc

# The engine's unit tests with every feature off (CI; `make test` runs them with the features on,
# and a second feature set would rebuild tokio and the core).
test-features-off:
	$(CARGO) test -p busline --lib

# The examples crate (axum, Prometheus): builds it and runs each example's self-test.
examples:
	$(CARGO) run -p busline-examples --bin users_service

# The benches with their peer crates: their unit tests (the compare runner's included), and the
# criterion benches compiled (`make bench` runs them).
test-benches:
	$(CARGO) test -p busline-benches --lib --bins
	$(CARGO) test -p busline-benches --benches --no-run

# Model-check the core's lock-free protocol (release mode), then show each broken variant fails.
loom:
	LOOM_MAX_PREEMPTIONS=$(LOOM_MAX_PREEMPTIONS) bash loom-tests/run.sh

# The core's unit tests that touch unsafe code, under Miri (installs the component if missing).
miri:
	bash loom-tests/miri.sh

# Car-vs-bus simulation of the bundled scenarios and one fleet study: writes reports/sim/.
sim:
	$(CARGO) run --profile sim -p busline-sim -- report --scenarios sim/scenarios --fleet sim/scenarios/fleet/fleet-zipf.toml --out reports/sim

# Simulated requests per CPU-second of every bundled scenario and policy (issue 14's speed goal).
sim-speed:
	$(CARGO) run --release -p busline-sim -- speed --scenarios sim/scenarios --fleet sim/scenarios/fleet/fleet-zipf.toml

# The article's scenario on a real database, the simulator checked against it: writes
# reports/db/. `demo` uses an SQLite file under target/ (created and filled on first run);
# `demo-pg` a throwaway PostgreSQL on loopback (installed from Debian's packages if missing).
demo:
	$(CARGO) run --profile sim -p busline-demo -- run --out reports/db

demo-pg:
	bash demo/pg.sh run --out reports/db

# Benchmarks against the peer crates: writes reports/bench/.
bench:
	$(CARGO) run --release -p busline-benches --bin compare -- --out reports/bench
	$(CARGO) bench -p busline-benches

bench-build:
	$(CARGO) bench --workspace --no-run

# What .ci/run runs on a fresh clone.
ci:
	bash .ci/run

clean:
	$(CARGO) clean
