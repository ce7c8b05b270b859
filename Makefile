# Constellation's front door. Two commands do all the set-up on a fresh Debian machine:
#   make run    install what is missing, start Kafka + PostgreSQL, create topics, migrate, run every service
#   make test   install what is missing, start the stack, build plain and sanitized, run every test, stop the stack
# Everything else is a step of those two.

BUILD      ?= build
BUILD_ASAN ?= build-asan
GENERATOR  := $(shell command -v ninja >/dev/null 2>&1 && echo Ninja || echo "Unix Makefiles")
JOBS       ?= $(shell nproc 2>/dev/null || echo 2)
SOURCES     = $(shell git ls-files '*.c' '*.h' 2>/dev/null)

.PHONY: all deps build build-asan test test-unit run stack-up stack-down stack-status format \
        format-check lint bench fuzz clean help

all: build

help:
	@sed -n 's/^#   //p' Makefile
	@echo "targets: deps build build-asan test test-unit run stack-up stack-down stack-status format lint bench clean"

deps:
	@bash infra/local/deps.sh

$(BUILD)/build.ninja $(BUILD)/Makefile:
	@cmake -S . -B $(BUILD) -G "$(GENERATOR)" -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null

build: $(BUILD)/$(if $(filter Ninja,$(GENERATOR)),build.ninja,Makefile)
	@cmake --build $(BUILD) -j $(JOBS)

build-asan:
	@test -f $(BUILD_ASAN)/CMakeCache.txt || \
	  cmake -S . -B $(BUILD_ASAN) -G "$(GENERATOR)" -DCMAKE_BUILD_TYPE=Debug -DCSTL_SANITIZE=ON >/dev/null
	@cmake --build $(BUILD_ASAN) -j $(JOBS)

test:
	@bash infra/local/test.sh

# Unit tests only: no stack needed.
test-unit: build
	@cd $(BUILD) && ctest -L unit --output-on-failure -j $(JOBS)

run:
	@bash infra/local/run.sh

stack-up:
	@bash infra/local/stack.sh up

stack-down:
	@bash infra/local/stack.sh down

stack-status:
	@bash infra/local/stack.sh status

format:
	@clang-format -i $(SOURCES)

format-check:
	@clang-format --dry-run --Werror $(SOURCES)

lint: build
	@clang-tidy -p $(BUILD) --quiet $(filter %.c,$(SOURCES))

bench: build
	@bash bench/run.sh $(BUILD)

clean:
	@rm -rf $(BUILD) $(BUILD_ASAN) build-fuzz
