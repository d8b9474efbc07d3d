# cis490: the two commands a newcomer needs are `make demo` and `make test`.
# CI (.ci/run) installs prerequisites, then runs `make test`.

CARGO ?= cargo
MUSL_TARGET := x86_64-unknown-linux-musl
# Tests build the binaries with named crash points (tests/crash.rs); the
# release and static builds never carry them.
TEST_FEATURES := --features fault-injection

.PHONY: build static test test-systemd lint demo bench dist embed clean

build:
	$(CARGO) build --release

# The shipper with the release-shipper profile (panic = "abort": smaller),
# the receiver with the release profile (it unwinds, so a panic ends one
# connection, not all): docs/build.md.
static:
	@command -v musl-gcc >/dev/null || { echo "make static: musl-gcc not found: apt-get install musl-tools" >&2; exit 1; }
	rustup target add $(MUSL_TARGET)
	$(CARGO) build --profile release-shipper --target $(MUSL_TARGET) --bin cis490-shipper
	$(CARGO) build --release --target $(MUSL_TARGET) --bin cis490-receiver
	@file target/$(MUSL_TARGET)/release-shipper/cis490-shipper
	@ls -l target/$(MUSL_TARGET)/release-shipper/cis490-shipper target/$(MUSL_TARGET)/release/cis490-receiver

test: lint
	$(CARGO) test $(TEST_FEATURES)

# The README's deployment in a Debian booted under systemd-nspawn (root; builds
# `make static` itself). `make test` runs it too (tests/systemd.rs) when the
# machine allows, and prints why not otherwise.
test-systemd:
	bash scripts/test-systemd.sh

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --all-targets $(TEST_FEATURES) -- -D warnings

demo:
	bash scripts/demo.sh

bench:
	bash scripts/bench.sh

dist:
	bash scripts/dist.sh

# Copy etc/ and scripts/lib/ into the installers after editing either; the
# tests only check the copies (tests/deploy.rs), they never rewrite them.
embed:
	bash scripts/embed-templates.sh

clean:
	$(CARGO) clean
	rm -rf demo bench-data dist
