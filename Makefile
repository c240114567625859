# admn_ros developer commands. Everything runs inside .venv with scripts/env.sh sourced.
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
ENV := . scripts/env.sh &&

.PHONY: setup test demo train bench lint

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

lint: setup
	@$(ENV) ruff check .
