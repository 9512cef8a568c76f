# The two commands of the quick start: `make run` and `make test`. `make test-unit`: the fast unit
# tier alone (no root, server, database or sandbox; see scripts/test-tiers.mjs).
# `make run PORT=18787` (or any setting of the Configuration section) is passed on to the server.
.PHONY: setup setup-test run test test-unit build clean

setup:
	@bash scripts/setup.sh run

setup-test:
	@bash scripts/setup.sh test

build:
	@npm run --silent build

run: setup
	node dist/cli/main.js serve

test: setup-test
	@bash scripts/test.sh

test-unit:
	@npm run --silent test:unit

clean:
	rm -rf dist .build
