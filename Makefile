# Two commands from a fresh clone:
#   make demo   set up .venv, train the CPU demo, generate pairs + preview, print where they are
#   make test   set up .venv, get Chromium where this machine allows, run the whole test suite (the browser
#               tests are skipped, with the command that enables them, where no Chromium can be had)
#   make browser   install Debian's Chromium for the browser tests (apt-get; sudo when not root)
# CUDA users: make demo TORCH="torch torchvision --index-url https://download.pytorch.org/whl/cu124"
PYTHON ?= python3
VENV   ?= .venv
TORCH  ?= torch==2.14.1 torchvision==0.29.1
BIN    := $(VENV)/bin
DEMO_CKPT := OUTPUT/demo/checkpoints/latest.safetensors

.PHONY: setup demo test lint browser
setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q $(TORCH)
	$(BIN)/pip install -q -e '.[app,test]'
	touch $@

demo: setup
	$(BIN)/python main.py --name demo --config configs/demo.yaml
	$(BIN)/python infer.py --ckpt $(DEMO_CKPT) --mask_dir OUTPUT/demo/procedural/Ground_truth \
		--save_folder_name demo
	@echo "demo checkpoint:  $(DEMO_CKPT)"
	@echo "training grids:   OUTPUT/demo/samples/"
	@echo "generated pairs:  generation_samples/demo/{Source_Images,Ground_truth}/ + generation.json"
	@echo "preview:          generation_samples/demo/preview.png"

test: setup
	@$(BIN)/python -m tools.browser provision
	$(BIN)/python -m pytest -q -n 2 --dist loadfile

lint: setup
	$(BIN)/ruff check .

browser:
	@if [ -x "$${DEFFILLER_CHROMIUM:-/usr/bin/chromium}" ]; then echo "Chromium: $${DEFFILLER_CHROMIUM:-/usr/bin/chromium}"; \
	elif [ "$$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq chromium; \
	else sudo apt-get update -qq && sudo apt-get install -y -qq chromium; fi
