# sarcodec: `make demo` and `make test` are all a new machine needs; both set up first.
SHELL := /bin/bash
PY := .venv/bin/python
export QT_QPA_PLATFORM ?= offscreen
export PYTHONDONTWRITEBYTECODE := 1

.PHONY: setup test lint demo bench eval model examples gpu-check package clean

setup:
	@bash scripts/setup.sh

lint: setup
	$(PY) -m ruff check engine sarcodec_plugin tests bench scripts

test: setup lint
	$(PY) -m pytest -q -p no:cacheprovider tests

demo: setup
	$(PY) scripts/demo.py

bench: setup
	$(PY) bench/engine.py
	$(PY) bench/codec_speed.py --size 4096
	$(PY) bench/soak.py --rounds 50
	$(PY) bench/window.py
	$(PY) bench/infer.py

eval: setup
	$(PY) bench/rd.py
	$(PY) bench/overhead.py
	$(PY) bench/bounded.py
	$(PY) bench/tiling_cost.py
	$(PY) bench/diagnostics.py

gpu-check: setup
	$(PY) bench/gpu_check.py

examples: setup
	PYTHONPATH=engine $(PY) -m sarcodec.training.examples --which sr --minutes 8
	PYTHONPATH=engine $(PY) -m sarcodec.training.examples --which despeckle --minutes 12

model: setup
	$(PY) -m sarcodec.training --config configs/train_default.toml

package:
	/usr/bin/python3 scripts/package_plugin.py

clean:
	rm -rf build dist demo tests/artifacts .pytest_cache .ruff_cache
