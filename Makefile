# The README's two commands: `make demo` (the main job) and `make test`. Each does its own set-up on a fresh machine.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# torch/torchvision pinned to the wheels this project's machines hold on disk (see README, "Installing").
TORCH_PINS ?= torch==2.14.1 torchvision==0.29.1
RD := $(VENV)/bin/resnet-deploy
RECIPE ?= recipes/fashion_mnist_quick.yaml
RUN ?= runs/demo
BUNDLE ?= bundles/demo
DATA ?= fashion-mnist
# FORCE=1 retrains and re-exports; otherwise finished stages (checkpoint, bundle) are reused.
FORCE ?=
FT_RUN ?= runs/finetune-demo
FT_BUNDLE ?= bundles/finetune-demo

.PHONY: install test test-slow lint demo finetune-demo data gpu-check clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q $(TORCH_PINS)
	$(PY) -m pip install -q -e '.[dev]'
	# Optional extras the tests exercise when present: a platform without their wheels still tests the rest.
	$(PY) -m pip install -q -e '.[openvino]' || echo "the openvino extra did not install: its tests will skip"
	$(PY) -m pip install -q -e '.[serve]' || echo "the serve extra (Triton) did not install: its tests will skip"
	touch $(STAMP)

test: install
	$(PY) -m pytest -q

# The tests marked slow, which `make test` deselects: export and training killed 20 times each (several minutes).
test-slow: install
	$(PY) -m pytest -q -m slow

lint: install
	$(VENV)/bin/ruff check .

# The main job: data -> train -> export (fp32, fp16, int8; TensorRT when present) -> validate -> bench -> summary.
demo: install data
	@start=$$(date +%s); \
	if [ -n "$(FORCE)" ] || [ ! -f $(RUN)/best.pt ]; then \
	  resume=; [ -z "$(FORCE)" ] && [ -f $(RUN).partial/last.pt ] && resume=--resume; \
	  [ -z "$$resume" ] && rm -rf $(RUN).partial; \
	  echo "== train $(RECIPE) -> $(RUN)"; \
	  $(RD) train --recipe $(RECIPE) --data $(DATA) --download --estimate || exit 1; \
	  $(RD) train --recipe $(RECIPE) --data $(DATA) --out $(RUN).partial --download $$resume || exit 1; \
	  rm -rf $(RUN) && mv $(RUN).partial $(RUN); \
	else echo "== train: reusing $(RUN)/best.pt (FORCE=1 retrains)"; fi; \
	if [ -n "$(FORCE)" ] || [ ! -f $(BUNDLE)/manifest.json ] || [ $(RUN)/best.pt -nt $(BUNDLE)/manifest.json ]; then \
	  trt=$$($(PY) -c "import tensorrt, torch; assert torch.cuda.is_available(); print('--trt')" 2>/dev/null); \
	  echo "== export $(RUN)/best.pt -> $(BUNDLE) --fp16 --int8 $$trt"; \
	  $(RD) export $(RUN)/best.pt --out $(BUNDLE) --fp16 --int8 --calib-data $(DATA) --force $$trt || exit 1; \
	else echo "== export: reusing $(BUNDLE) (FORCE=1 re-exports)"; fi; \
	echo "== validate $(BUNDLE) on the $(DATA) test set"; \
	$(RD) validate $(BUNDLE) --data $(DATA) || exit 1; \
	echo "== bench $(BUNDLE)"; \
	$(RD) bench $(BUNDLE) --batch 1,32 --warmup-s 1 --duration-s 3 || exit 1; \
	$(RD) report $(BUNDLE) || exit 1; \
	echo "demo: done in $$(( $$(date +%s) - start )) s"

# Transfer: pretrain on Fashion-MNIST classes 0-4, fine-tune on a PNG folder of classes 5-9 (10 images each) and
# train the same recipe from scratch; then export the fine-tuned model, validate it and name a few test images.
finetune-demo: install data
	@start=$$(date +%s); \
	$(PY) benchmarks/finetune_transfer.py --out $(FT_RUN) --data $(DATA) --download $(if $(FORCE),--force) || exit 1; \
	echo "== export $(FT_RUN)/finetune/last.pt -> $(FT_BUNDLE) --fp16 --int8"; \
	$(RD) export $(FT_RUN)/finetune/last.pt --out $(FT_BUNDLE) --fp16 --int8 --calib-data folder:$(FT_RUN)/data \
	  --force --quiet || exit 1; \
	echo "== validate $(FT_BUNDLE) on the folder's held-out images"; \
	$(RD) validate $(FT_BUNDLE) --data folder:$(FT_RUN)/data || exit 1; \
	echo "== predict: one held-out image of each class"; \
	$(RD) predict $(FT_BUNDLE) $(FT_RUN)/data/test/*/0000.png --topk 2 || exit 1; \
	echo "finetune-demo: done in $$(( $$(date +%s) - start )) s"

# Fashion-MNIST: Debian's package when apt is usable as root, else training falls back to torchvision's download.
data:
	@if [ -d /usr/share/datasets/fashion-mnist ] || [ -n "$$RESNET_DEPLOY_DATA" ]; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  echo "== installing Debian's dataset-fashion-mnist"; \
	  apt-get install -y -q dataset-fashion-mnist >/dev/null 2>&1 || \
	    { apt-get update -q >/dev/null && apt-get install -y -q dataset-fashion-mnist >/dev/null; } || \
	    echo "apt could not install it; training will try torchvision's download"; \
	else echo "Fashion-MNIST is not on disk and apt is not usable; training will try torchvision's download"; fi

# On a CUDA machine: AMP + channels_last training, DDP/NCCL, ONNX parity of the CUDA model, GPU inference timing.
gpu-check: install
	$(PY) benchmarks/gpu_check.py

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
