# busline: every task a developer or CI runs. Needs only a Rust toolchain (rustup's stable);
# `make miri` adds the nightly Miri component itself.

CARGO ?= cargo
LOOM_MAX_PREEMPTIONS ?= 3
export CARGO_TERM_COLOR ?= never

.PHONY: all build lint test loom miri sim bench bench-build ci clean demo demo-pg

all: build

build:
	$(CARGO) build --workspace --all-targets

# Clippy with warnings denied, on the normal build and on the loom build of the core.
lint:
	$(CARGO) clippy --workspace --all-targets -- -D warnings
	RUSTFLAGS="--cfg busline_loom" $(CARGO) clippy -p busline -p busline-loom-tests --all-targets --target-dir target/loom -- -D warnings

test:
	$(CARGO) test --workspace

# Model-check the core's lock-free protocol (release mode), then show each broken variant fails.
loom:
	LOOM_MAX_PREEMPTIONS=$(LOOM_MAX_PREEMPTIONS) bash loom-tests/run.sh

# The core's unit tests that touch unsafe code, under Miri (installs the component if missing).
miri:
	bash loom-tests/miri.sh

# Car-vs-bus simulation of the bundled scenarios: writes reports/sim/.
sim:
	$(CARGO) run --release -p busline-sim -- report --scenarios sim/scenarios --out reports/sim

# The article's scenario on a real database, the simulator checked against it: writes
# reports/db/. `demo` uses an SQLite file under target/ (created and filled on first run);
# `demo-pg` a throwaway PostgreSQL on loopback (installed from Debian's packages if missing).
demo:
	$(CARGO) run --release -p busline-demo -- run --out reports/db

demo-pg:
	bash demo/pg.sh run --out reports/db

# Benchmarks against the peer crates: writes reports/bench/.
bench:
	$(CARGO) run --release -p busline-benches --bin compare -- --out reports/bench
	$(CARGO) bench -p busline-benches

bench-build:
	$(CARGO) bench --workspace --no-run

# What .ci/run runs on a fresh clone (`build` compiles the benches too, unoptimised).
ci: build lint test
	$(MAKE) loom LOOM_MAX_PREEMPTIONS=2

clean:
	$(CARGO) clean
