# FoodLab: `make demo` runs the labs end to end on this machine,
# `make test` runs every check CI runs.

CARGO ?= cargo
FOODLAB := ./target/debug/foodlab
SYNC_LABS := manifests/examples/sync-baseline.yaml \
             manifests/examples/sync-delay.yaml \
             manifests/examples/sync-failure.yaml \
             manifests/examples/sync-timeout.yaml

.PHONY: build demo test unit-and-integration bench fmt lint crd check-orphans clean

build:
	$(CARGO) build --workspace --bins

## demo: start the sync-rest part on 127.0.0.1 and run its labs with their tables
demo: build
	$(FOODLAB) run $(SYNC_LABS)

## test: formatting, lints, every unit, integration and lab test, no orphans left
test: fmt-check lint build unit-and-integration check-orphans

fmt-check:
	$(CARGO) fmt --all -- --check

unit-and-integration:
	@if $(CARGO) nextest --version >/dev/null 2>&1; then \
		$(CARGO) nextest run --workspace --no-fail-fast; \
	else \
		$(CARGO) test --workspace --no-fail-fast; \
	fi

check-orphans:
	scripts/check-no-orphans.sh

## bench: figures (not assertions) from an optimised build
bench:
	$(CARGO) build --release --workspace --bins
	./target/release/foodlab bench sync-rest

fmt:
	$(CARGO) fmt --all

lint:
	$(CARGO) clippy --workspace --all-targets -- -D warnings

## crd: regenerate the checked-in CRD from the Rust types
crd: build
	$(FOODLAB) crd > manifests/crds/foodlab.yaml

clean:
	$(CARGO) clean
	rm -rf .foodlab
