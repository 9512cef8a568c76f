# The two commands of the quick start: `make run` and `make test`.
.PHONY: setup run test build clean

setup:
	@bash scripts/setup.sh

build:
	@npm run --silent build

run: setup
	node dist/cli/main.js serve

test: setup
	@bash scripts/test.sh

clean:
	rm -rf dist .build
