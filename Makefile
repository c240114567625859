# admn_ros developer commands. Everything runs inside .venv with scripts/env.sh sourced.
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
ENV := . scripts/env.sh &&

.PHONY: setup test demo train bench lint docs-img docs-graph gpu-check

setup:
	@bash scripts/setup.sh

test: setup
	@$(ENV) python -m pytest

demo: setup
	@$(ENV) bash scripts/demo.sh

train: setup
	@$(ENV) bash scripts/train.sh

bench: setup
	@$(ENV) admn bench

# GPU check with the Python and torch already on the machine (no set-up, no network):
# make gpu-check [OUT=benchmarks/results/gpu_<host>]
gpu-check:
	@bash scripts/gpu_check.sh $(or $(OUT),benchmarks/results/gpu_$(shell hostname))

lint: setup
	@$(ENV) ruff check .

docs-img: setup
	@$(ENV) bash scripts/docs_img.sh

docs-graph: setup
	@$(ENV) python -m admn_ros.nodes.graph_doc README.md
