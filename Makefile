# NativeStore — every target installs what it needs first (idempotent).
#   make demo   run the demo (shows the library and a timing against ETS)
#   make test   run every test (cargo test for the engine, then mix test)
#   make bench  run the benchmarks (ETS / Registry side by side, ratios)

SHELL := /bin/bash
export MIX_ENV ?= test

.PHONY: setup demo test bench lint

setup:
	@bash scripts/setup.sh

demo: setup
	MIX_ENV=dev mix run bench/demo.exs

test: setup
	cargo test -p native_store_engine
	mix test

bench: setup
	MIX_ENV=prod mix run bench/run.exs

lint: setup
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets -- -D warnings
	mix format --check-formatted
