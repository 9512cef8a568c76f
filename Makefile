# The two commands of the quick start: `make run` and `make test`.
# `make run PORT=18787` (or any setting of the Configuration section) is passed on to the server.
.PHONY: setup setup-test run test build clean

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

clean:
	rm -rf dist .build
