# The README's two commands: `make demo` (the main job) and `make test`. Each does its own set-up on a fresh machine.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# torch/torchvision pinned to the wheels this project's machines hold on disk (see README, "Installing").
TORCH_PINS ?= torch==2.14.1 torchvision==0.29.1
RD := $(VENV)/bin/resnet-deploy
# Where `serve` finds tritonserver and the numpy<2 its Python backend runs with (`resnet-deploy server-env`).
SERVER_ENV ?= $(VENV)/resnet-deploy-server
RECIPE ?= recipes/fashion_mnist_quick.yaml
RUN ?= runs/demo
BUNDLE ?= bundles/demo
DATA ?= fashion-mnist
# FORCE=1 retrains and re-exports; otherwise finished stages (checkpoint, bundle) are reused.
FORCE ?=
FT_RUN ?= runs/finetune-demo
FT_BUNDLE ?= bundles/finetune-demo

# The C++ SDK (cpp/): its build folders, and the Debian packages it needs (installed with apt when root, as the data is).
CPP_BUILD ?= build/cpp
CPP_ASAN := build/cpp-asan
CPP_FIXTURES := build/cpp-fixtures
CPP_APT := cmake g++ pkg-config nlohmann-json3-dev libpng-dev libjpeg-dev libssl-dev libxxhash-dev libgtest-dev

.PHONY: install test test-slow lint demo finetune-demo depth-study data gpu-check clean FORCE cpp cpp-deps cpp-build \
	cpp-test

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q $(TORCH_PINS)
	$(PY) -m pip install -q -e '.[dev]'
	# Optional extras the tests exercise when present: a platform without their wheels still tests the rest.
	$(PY) -m pip install -q -e '.[openvino]' || echo "the openvino extra did not install: its tests will skip"
	$(PY) -m pip install -q -e '.[serve]' || echo "the serve extra (Triton's client) did not install: its tests will skip"
	$(PY) -m pip install -q -e '.[signing]' || echo "the signing extra did not install: its tests will skip"
	# tritonserver's own environment (numpy<2 for its Python backend), beside this one's numpy 2: $(SERVER_ENV)
	$(RD) server-env --path $(SERVER_ENV) || echo "the server environment did not install: the served tests will skip"
	touch $(STAMP)

# The C++ SDK's tests first (built twice: as shipped, and with AddressSanitizer + UBSan), then the Python suite, whose
# test_cpp_sdk.py compares the built library with the Python runtime. Without the toolchain they skip with the reason.
test: install cpp-deps
	@missing=$$(cpp/toolchain.sh); \
	if [ -n "$$missing" ]; then echo "C++ tests skipped: this machine lacks$$missing (apt-get install $(CPP_APT))"; \
	else $(MAKE) --no-print-directory cpp-test || exit 1; fi
	RESNET_DEPLOY_SERVER_ENV=$(abspath $(SERVER_ENV)) $(PY) -m pytest -q

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

# The paper's depth study (§4.2, Fig. 6) on Fashion-MNIST, shortened (recipes/fashion_mnist_depth_*.yaml): plain and
# residual nets of depths 20 and 56, then the figure and table (STUDY/depth_study.png, .md). Two runs at a time with
# one thread each: on the shared 2-core machine two single-thread runs kept 1,070-1,760 img/s together where one
# two-thread run fell to 230-300 (OpenMP threads wait for each other whenever another job takes a core).
# A finished run (STUDY/<net>/) is reused, a killed one (STUDY/<net>.partial/last.pt) resumes; FORCE=1 retrains.
# While it runs: `resnet-deploy curves runs/depth-study/*.partial` draws the runs as far as they got.
STUDY ?= runs/depth-study
STUDY_NETS ?= plain56 resnet56 plain20 resnet20
STUDY_JOBS ?= 2
STUDY_THREADS ?= 1

depth-study: install data
	@start=$$(date +%s); \
	$(MAKE) --no-print-directory -j$(STUDY_JOBS) $(foreach n,$(STUDY_NETS),$(STUDY)/$(n)/best.pt) || exit 1; \
	$(RD) curves $(foreach n,$(sort $(STUDY_NETS)),$(STUDY)/$(n)) --out $(STUDY)/depth_study.png \
	  --title "Fashion-MNIST, plain vs residual nets (shortened schedule, recipes/fashion_mnist_depth_*)" || exit 1; \
	echo "depth-study: done in $$(( $$(date +%s) - start )) s"

.PRECIOUS: $(STUDY)/%/best.pt
$(STUDY)/%/best.pt: $(if $(FORCE),FORCE)
	@run=$(STUDY)/$*; resume=; \
	[ -z "$(FORCE)" ] && [ -f $$run.partial/last.pt ] && resume=--resume; \
	[ -z "$$resume" ] && rm -rf $$run.partial; \
	echo "== train recipes/fashion_mnist_depth_$*.yaml -> $$run $$resume"; \
	$(RD) train --recipe recipes/fashion_mnist_depth_$*.yaml --data $(DATA) --out $$run.partial --download \
	  --set run.threads=$(STUDY_THREADS) --no-progress $$resume | sed "s|^|$*: |"; \
	[ "$${PIPESTATUS[0]}" = 0 ] || exit 1; \
	rm -rf $$run && mv $$run.partial $$run

FORCE:

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

# The C++ SDK: library, headers and the example app `$(CPP_BUILD)/classify` (README, "C++ and other languages").
cpp: install cpp-deps
	@missing=$$(cpp/toolchain.sh); [ -z "$$missing" ] || { echo "cannot build the C++ SDK: this machine lacks$$missing"; exit 1; }
	@$(MAKE) --no-print-directory cpp-build
	@echo "C++ SDK built: $(CPP_BUILD)/libresnet_deploy.so, example app $(CPP_BUILD)/classify"

cpp-deps:
	@missing=$$(cpp/toolchain.sh); \
	if [ -z "$$missing" ]; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  echo "== installing the C++ toolchain ($$missing missing): $(CPP_APT)"; \
	  apt-get install -y -q $(CPP_APT) >/dev/null 2>&1 || \
	    { apt-get update -q >/dev/null && apt-get install -y -q $(CPP_APT) >/dev/null; } || \
	    echo "apt could not install them; the C++ SDK will not be built"; \
	else echo "the C++ toolchain is incomplete ($$missing missing) and apt is not usable: the C++ SDK will not be built"; fi

# OpenVINO's C++ package comes with the openvino wheel of the venv; without it the SDK builds with no backend.
cpp-build:
	@ov=$$($(PY) -c "import openvino.utils as u; print(u.get_cmake_path())" 2>/dev/null); \
	[ -n "$$ov" ] || echo "openvino is not installed in $(VENV): building the C++ SDK without its OpenVINO backend"; \
	cmake -S cpp -B $(CPP_BUILD) -DOpenVINO_DIR="$$ov" -DCMAKE_BUILD_TYPE=Release >/dev/null && \
	cmake --build $(CPP_BUILD) -j$$(nproc)

cpp-test: cpp-build
	@ov=$$($(PY) -c "import openvino.utils as u; print(u.get_cmake_path())" 2>/dev/null); \
	cmake -S cpp -B $(CPP_ASAN) -DOpenVINO_DIR="$$ov" -DRD_SANITIZE=ON -DRD_BUILD_EXAMPLES=OFF >/dev/null && \
	cmake --build $(CPP_ASAN) -j$$(nproc)
	$(PY) cpp/tests/make_fixtures.py $(CPP_FIXTURES)
	RD_FIXTURES=$(abspath $(CPP_FIXTURES)) ctest --test-dir $(CPP_BUILD) --output-on-failure
	@echo "== the same tests under AddressSanitizer and UndefinedBehaviorSanitizer"
	RD_FIXTURES=$(abspath $(CPP_FIXTURES)) ctest --test-dir $(CPP_ASAN) --output-on-failure
	@echo "== pixels, damaged images, planted cache entries and a racing renamer from Python through the sanitized library"
	LD_PRELOAD="$$(c++ -print-file-name=libasan.so) $$(c++ -print-file-name=libubsan.so)" ASAN_OPTIONS=detect_leaks=0 \
	  TBB_ENABLE_SANITIZERS=1 RESNET_DEPLOY_CPP_LIB=$(abspath $(CPP_ASAN))/libresnet_deploy.so $(PY) -m pytest -q \
	  -p no:cacheprovider tests/test_cpp_sdk.py tests/test_cpp_cache.py \
	  -k "pngs or jpegs or camera or raw or bad or cut or damaged or limits or test_cpp_cache.py"
	@echo "== cmake --install, then an app that does find_package(resnet_deploy) (cpp/examples/embed)"
	cmake --install $(CPP_BUILD) --prefix $(abspath build/cpp-install) >/dev/null
	cmake -S cpp/examples/embed -B build/cpp-embed -DCMAKE_PREFIX_PATH=$(abspath build/cpp-install) >/dev/null
	cmake --build build/cpp-embed
	@if grep -q RD_HAVE_OPENVINO $(CPP_BUILD)/CMakeFiles/rd_core.dir/flags.make; then \
	  RESNET_DEPLOY_CACHE=$(abspath $(CPP_BUILD))/test-cache build/cpp-embed/embed $(CPP_FIXTURES)/bundle \
	    $(CPP_FIXTURES)/images/rgb8_40x29.png; \
	else echo "embed not run: the SDK was built without OpenVINO"; fi

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
