# gradcam: make demo · make test · make fuzz · make bench · make lint
VENV ?= .venv
PY := $(VENV)/bin/python
# torch and torchvision first, pinned to releases pip can take from a local mirror where one exists;
# override with `make test TORCH="torch torchvision"`.
TORCH ?= torch==2.14.1 torchvision==0.29.1
EXTRAS ?= test,timm,web,ray,hf,clip,video,volume,lightning,tensorboard,mlflow,wandb,yolo

.PHONY: demo test fuzz bench lint typecheck clean

$(VENV)/.installed-$(EXTRAS): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -c "import torch, torchvision" 2>/dev/null || $(PY) -m pip install -q $(TORCH)
	$(PY) -m pip install -q -e ".[$(EXTRAS)]"
	touch $@

demo: $(VENV)/.installed-$(EXTRAS)
	$(VENV)/bin/gradcam explain examples/ --out gradcam-out --per-channel 8 --overwrite

test: $(VENV)/.installed-$(EXTRAS)
	$(PY) -m pytest

fuzz: $(VENV)/.installed-$(EXTRAS)
	$(PY) tests/fuzz/run_for.py 600

bench: $(VENV)/.installed-$(EXTRAS)
	$(PY) bench/bench_core.py --model resnet50 --batch 8 --repeats 5

lint: $(VENV)/.installed-$(EXTRAS)
	$(VENV)/bin/ruff check src tests bench scripts
	$(VENV)/bin/ruff format --check src tests bench scripts
	$(VENV)/bin/mypy src/gradcam

clean:
	rm -rf gradcam-out gradcam-eval .pytest_cache
