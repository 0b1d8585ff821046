# The two set-up commands of the README. Each works on a fresh machine by itself.
BUILD_DIR ?= build
JOBS ?= $(shell nproc)
CTEST_ARGS ?=
# make fuzz: a separate clang build tree; each target runs FUZZ_SECONDS (docs/fuzzing.md).
FUZZ_DIR ?= build-fuzz
FUZZ_SECONDS ?= 120
FUZZ_TARGETS ?= piece_protocol content_range task_spec daemon_config scheduler_config scheduler
FUZZ_ARGS ?=

.PHONY: all deps configure build test demo bench clean format fuzz fuzz-build tsan

all: build

deps:
	bash scripts/install-deps.sh

configure: deps
	@if [ ! -f $(BUILD_DIR)/build.ninja ]; then \
	  cmake -S . -B $(BUILD_DIR) -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo; fi

build: configure
	cmake --build $(BUILD_DIR) -j $(JOBS)

# Runs every test (unit and end-to-end) through ctest.
test: build
	cd $(BUILD_DIR) && ctest --output-on-failure -j 1 $(CTEST_ARGS)

# The main job on the embedded default: a local cluster on loopback (see README).
demo: build
	$(BUILD_DIR)/src/bench/dfbench $(DEMO_ARGS)

# The engine's tests under ThreadSanitizer (README, "Tests"): a separate tree, build-tsan. Debian's
# gRPC, protobuf and absl are not instrumented; tests/tsan.supp names them, never our code.
TSAN_DIR ?= build-tsan
TSAN_TESTS ?= tests/storage/storage_test tests/daemon/piece_picker_test \
  tests/daemon/piece_protocol_test tests/daemon/engine_test tests/daemon/daemon_test \
  tests/daemon/prober_test
tsan: deps
	@if [ ! -f $(TSAN_DIR)/build.ninja ]; then \
	  cmake -S . -B $(TSAN_DIR) -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DDF_TSAN=ON; fi
	cmake --build $(TSAN_DIR) -j $(JOBS) --target $(notdir $(TSAN_TESTS))
	@set -e; for t in $(TSAN_TESTS); do \
	  echo "== $$t"; \
	  DF_BUILD_DIR=$(CURDIR)/$(TSAN_DIR) \
	  TSAN_OPTIONS="suppressions=$(CURDIR)/tests/tsan.supp ignore_noninstrumented_modules=1 halt_on_error=1 exitcode=66" \
	    $(TSAN_DIR)/$$t; \
	done

# libFuzzer targets (tests/fuzz), built with clang-14, ASan and UBSan in $(FUZZ_DIR).
fuzz-build: deps
	@if [ ! -f $(FUZZ_DIR)/build.ninja ]; then \
	  CC=clang-14 CXX=clang++-14 cmake -S . -B $(FUZZ_DIR) -G Ninja \
	    -DCMAKE_BUILD_TYPE=RelWithDebInfo -DDF_FUZZ=ON; fi
	cmake --build $(FUZZ_DIR) --target fuzz_targets -j $(JOBS)

# Runs each target for FUZZ_SECONDS from the committed corpus (tests/fuzz/corpus/<target>, only
# read); new inputs collect in $(FUZZ_DIR)/corpus/<target>, a crash in $(FUZZ_DIR)/artifacts/.
# Prints libFuzzer's final stats per target; stops at the first finding.
# ASan records one frame per allocation (malloc_context_size=1) unless ASAN_OPTIONS says
# otherwise: its fast unwinder walks garbage through Debian's yaml-cpp (no frame pointers), and
# with the default 30 frames every input stored new "stacks" forever (docs/fuzzing.md).
fuzz: fuzz-build
	@set -e; mkdir -p $(FUZZ_DIR)/artifacts; \
	for t in $(FUZZ_TARGETS); do \
	  mkdir -p $(FUZZ_DIR)/corpus/$$t; \
	  echo "fuzz: $$t for $(FUZZ_SECONDS) s (log: $(FUZZ_DIR)/fuzz-$$t.log)"; \
	  if ! ASAN_OPTIONS=$${ASAN_OPTIONS:-malloc_context_size=1} \
	      $(FUZZ_DIR)/tests/fuzz/fuzz_$$t -max_total_time=$(FUZZ_SECONDS) -timeout=25 -malloc_limit_mb=256 \
	      -print_final_stats=1 -artifact_prefix=$(FUZZ_DIR)/artifacts/$$t- $(FUZZ_ARGS) \
	      $(FUZZ_DIR)/corpus/$$t tests/fuzz/corpus/$$t >$(FUZZ_DIR)/fuzz-$$t.log 2>&1; then \
	    tail -n 40 $(FUZZ_DIR)/fuzz-$$t.log; echo "fuzz: $$t found something"; exit 1; fi; \
	  grep -E '^#[0-9]+[[:space:]]+DONE|^stat::(number_of_executed_units|average_exec_per_sec)' \
	    $(FUZZ_DIR)/fuzz-$$t.log; \
	done

bench: build
	bash bench/back_to_source.sh

format:
	clang-format -i $$(git ls-files '*.cc' '*.h')

clean:
	rm -rf $(BUILD_DIR)
