# The two commands of the quick start: `make run` and `make test`. `make test-unit`: the fast unit
# tier alone (no root, server, database or sandbox; see scripts/test-tiers.mjs).
# `make run PORT=18787` (or any setting of the Configuration section) is passed on to the server.
# `make bench`: the latency, throughput and memory benches against issue 18's targets, on an idle
# machine (each marks a loaded run); `make bench QUICK=1`: short runs that only show they work.
.PHONY: setup setup-test run cluster test test-unit build clean bench bench-cluster

setup:
	@bash scripts/setup.sh run

setup-test:
	@bash scripts/setup.sh test

build:
	@npm run --silent build

run: setup
	node dist/cli/main.js serve

# Three nodes on one PostgreSQL (Debian's package, installed by this target's set-up) behind a
# round-robin proxy on PORT (8787): `make cluster NODES=2 PORT=18787`. Ctrl-C stops everything.
cluster:
	@bash scripts/setup.sh cluster
	node dist/cli/main.js cluster --nodes $(or $(NODES),3)

test: setup-test
	@bash scripts/test.sh

test-unit:
	@npm run --silent test:unit

bench: setup-test
	@bench/latency $(if $(QUICK),--quick) && bench/throughput $(if $(QUICK),--quick) && bench/memory $(if $(QUICK),--quick)

# `make bench-cluster`: 1 node against 3 on one PostgreSQL (issue 19); its own target, as it starts
# PostgreSQL and four `serve` processes (about 4 minutes; QUICK=1: about 2).
bench-cluster: setup-test
	@bench/cluster $(if $(QUICK),--quick)

clean:
	rm -rf dist .build
