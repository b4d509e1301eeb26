# rete — the front door. `make demo` and `make test` work on a fresh Debian
# machine as root (or with sudo): both install what is missing first.

BUILD      ?= build
ASAN_BUILD ?= build-asan
CLANG_BUILD ?= build-clang
FUZZ_BUILD ?= build-fuzz
# Debian's interpreter: the python3 first on PATH may lack Debian's python3-* modules.
PYTHON     := /usr/bin/python3
SUDO       := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
FUZZ_SECONDS ?= 60
FUZZ_SMOKE_SECONDS ?= 3
TSAN_BUILD ?= build-tsan
# The system tests whose point is several worker threads at once (reloads,
# scrapes and traffic together), run again on a ThreadSanitizer build.
TSAN_TESTS := tests/system/test_proxy_threads.py tests/system/test_proxy_pools.py \
	tests/system/test_proxy_reload_drain.py tests/system/test_proxy_lifecycle.py tests/system/test_proxy_metrics.py
TSAN_BUILD ?= build-tsan
# The system tests whose point is several worker threads at once (reloads,
# scrapes and traffic together), run again on a ThreadSanitizer build.
TSAN_TESTS := tests/system/test_proxy_threads.py tests/system/test_proxy_pools.py \
	tests/system/test_proxy_reload_drain.py tests/system/test_proxy_lifecycle.py tests/system/test_proxy_metrics.py
# System tests run in parallel (pytest-xdist): SYSTEM_JOBS workers, each on
# its own range of loopback addresses (tests/system/helpers.py fresh_host), a
# test module per worker at a time so module-scoped fixtures start once.
# SYSTEM_JOBS=0 runs them serially in one process. 3 on this project's
# 2-core reference machine: 163 s for the suite against 434 s serially
# (2 workers: about 1.4x slower than 3; 4: no faster, and less stable).
SYSTEM_JOBS ?= 3
PYTEST_PARALLEL = $(if $(filter 0,$(SYSTEM_JOBS)),,-n $(SYSTEM_JOBS) --dist loadfile)

# Every Debian package the project needs: build, unit and system tests, demo, bench.
DEB_PACKAGES := build-essential clang meson ninja-build pkg-config \
	libuv1-dev libssl-dev libnghttp2-dev libyaml-dev libjansson-dev libsqlite3-dev \
	libpcre2-dev libcmocka-dev libclang-rt-14-dev \
	openssl curl nghttp2-client python3 python3-pytest python3-h2 python3-grpcio \
	python3-websockets python3-pytest-xdist redis-server redis-tools prometheus haproxy nginx wrk \
	iproute2 nftables iptables procps dnsutils tcpdump systemd python3-matplotlib python3-cryptography linux-perf \
	valgrind etcd-server etcd-client nodejs npm chromium python3-protobuf protobuf-compiler python3-uvloop

# Sources listed by directory globbing in meson.build; re-run setup when the set changes.
SRC_LIST := $(sort $(wildcard src/*/*.c src/*/*/*.c examples/*.c tests/unit/test_*.c tests/fuzz/fuzz_*.c))

.PHONY: all deps layers build dashboard dashboard-check test unit system asan clang tsan tsan-test demo bench bench-smoke soak fuzz fuzz-build fuzz-smoke install clean format

all: build

# A package counts as present when installed, or when an installed package
# Provides it (NodeSource's nodejs provides npm and conflicts with Debian's).
deps:
	@provided=$$(dpkg-query -W -f='$${Status}|$${Provides}\n' 2>/dev/null | grep '^install ok installed|' | \
	    cut -d'|' -f2 | tr ',' '\n' | sed 's/ *(.*//; s/^ *//'); \
	missing=$$(for p in $(DEB_PACKAGES); do \
	    dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q 'install ok installed' || \
	    echo "$$provided" | grep -qx "$$p" || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	    echo "make deps: installing $$missing"; \
	    $(SUDO) apt-get update -qq && \
	    DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends $$missing; \
	fi

define setup_build
	@mkdir -p $(1)
	@if [ ! -f $(1)/build.ninja ]; then \
	    $(3) meson setup $(1) $(2) >/dev/null; \
	elif [ "$$(cat $(1)/.rete-sources 2>/dev/null)" != "$(SRC_LIST)" ]; then \
	    meson setup --reconfigure $(1) $(2) >/dev/null; \
	fi
	@echo "$(SRC_LIST)" > $(1)/.rete-sources
	ninja -C $(1)
	@for b in src/proxy/rete-proxy src/control/reted src/ctl/retectl; do \
	    if [ -x $(1)/$$b ]; then ln -sf $$b $(1)/$$(basename $$b); fi; done
endef

build:
	$(call setup_build,$(BUILD),,)

asan:
	$(call setup_build,$(ASAN_BUILD),-Db_sanitize=address$(,)undefined -Db_lundef=false,)

clang:
	$(call setup_build,$(CLANG_BUILD),,CC=clang)

, := ,

unit: build
	meson test -C $(BUILD) --print-errorlogs

# Unit tests on the gcc build, the clang build compiled with -Werror, then unit
# and system tests under ASan+UBSan, then the benchmark's 30-second smoke run
# (every scenario briefly; it fails on a crash, an error, or a target that
# could not be measured in some scenario, never on a figure). CI runs exactly this.
# tests/check_layers.py before the builds (no include goes up a layer), then
# tests/check_deps.py: every module and command the tests, bench and demo use
# comes from a package in DEB_PACKAGES. Unit tests run with
# UBSAN_OPTIONS=halt_on_error=1 (set in tests/unit/meson.build), and system
# tests fail on any sanitizer report in a process's log (docs/testing.md).
test: deps layers build clang asan
	$(PYTHON) tests/check_deps.py
	$(MAKE) --no-print-directory dashboard-check
	meson test -C $(BUILD) --print-errorlogs
	meson test -C $(ASAN_BUILD) --print-errorlogs
	$(MAKE) --no-print-directory fuzz-smoke
	RETE_BUILD=$(CURDIR)/$(ASAN_BUILD) ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 \
	UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
	    $(PYTHON) -m pytest -q $(PYTEST_PARALLEL) tests/system
	$(MAKE) --no-print-directory tsan-test
	$(PYTHON) bench/run.py --smoke

# The dashboard's front end (dashboard/; docs/architecture.md, "The
# dashboard's assets"): npm ci from package-lock.json, then esbuild bundles
# it into dashboard/dist/. dist/ is committed, so reted builds from a clone
# without npm or the registry (meson embeds dist/ in reted). `make dashboard`
# after changing dashboard/src or package.json, and commit dist/;
# `make dashboard-check` (part of `make test`) bundles into a temporary
# directory and fails when dist/ differs from what the sources give.
dashboard: deps
	cd dashboard && npm ci --no-audit --no-fund --loglevel=error && node build.mjs

dashboard-check: deps
	cd dashboard && npm ci --no-audit --no-fund --loglevel=error && node build.mjs --check

# The layer rule of src/ (tests/check_layers.py): no #include goes up a layer
# and none closes a cycle. Runs before any build in `make test`.
layers:
	$(PYTHON) tests/check_layers.py

system: build
	RETE_BUILD=$(CURDIR)/$(BUILD) $(PYTHON) -m pytest -q $(PYTEST_PARALLEL) tests/system

demo: deps build
	$(PYTHON) examples/demo.py

bench: deps build
	$(PYTHON) bench/run.py

bench-smoke: deps build
	$(PYTHON) bench/run.py --smoke

# Not in `make test`: SOAK_MINUTES (default 30) of mixed traffic under
# reted with config pushes, short-lived certificates and backend churn;
# asserts flat RSS and fds, writes bench/soak.json and bench/soak.png.
SOAK_MINUTES ?= 30
soak: deps build
	$(PYTHON) bench/soak.py --minutes $(SOAK_MINUTES)

# clang with -fsanitize=thread (build-tsan/); tests/tsan.supp says what is
# suppressed and why.
tsan: deps
	$(call setup_build,$(TSAN_BUILD),-Db_sanitize=thread -Db_lundef=false,CC=clang)

tsan-test: tsan
	RETE_BUILD=$(CURDIR)/$(TSAN_BUILD) \
	TSAN_OPTIONS=halt_on_error=1:second_deadlock_stack=1:suppressions=$(CURDIR)/tests/tsan.supp \
	    $(PYTHON) -m pytest -q $(PYTEST_PARALLEL) $(TSAN_TESTS)

fuzz-build: deps
	$(call setup_build,$(FUZZ_BUILD),-Dfuzz=true -Db_lundef=false,CC=clang)

# Each target for FUZZ_SECONDS, growing tests/fuzz/corpus-run/<target>
# (not committed); a crash stops and leaves its input in the working directory.
fuzz: fuzz-build
	@for f in $(FUZZ_BUILD)/tests/fuzz/fuzz_*; do \
	    [ -f "$$f" ] && [ -x "$$f" ] || continue; n=$$(basename $$f); d=tests/fuzz/$${n#fuzz_}.dict; \
	    dict=""; [ -f $$d ] && dict="-dict=$$d"; \
	    mkdir -p tests/fuzz/corpus-run/$$n; \
	    $$f -max_total_time=$(FUZZ_SECONDS) $$dict tests/fuzz/corpus-run/$$n tests/fuzz/corpus/$$n || exit 1; \
	done

# Part of `make test`: every target replays its committed corpus (each
# input once: a crash found once stays a regression input there), then
# fuzzes for FUZZ_SMOKE_SECONDS from it, into the build tree. Any crash,
# leak or failed check fails the run, with the log's tail.
fuzz-smoke: fuzz-build
	@mkdir -p $(FUZZ_BUILD)/smoke $(FUZZ_BUILD)/artifacts; \
	for f in $(FUZZ_BUILD)/tests/fuzz/fuzz_*; do \
	    [ -f "$$f" ] && [ -x "$$f" ] || continue; n=$$(basename $$f); d=tests/fuzz/$${n#fuzz_}.dict; \
	    dict=""; [ -f $$d ] && dict="-dict=$$d"; w=$(FUZZ_BUILD)/smoke/$$n; \
	    rm -rf $$w; mkdir -p $$w; \
	    [ -n "$$(ls tests/fuzz/corpus/$$n 2>/dev/null)" ] || { echo "fuzz-smoke: $$n has no seed corpus"; exit 1; }; \
	    $$f -runs=0 -artifact_prefix=$(FUZZ_BUILD)/artifacts/$$n- tests/fuzz/corpus/$$n >$$w.replay.log 2>&1 || \
	        { tail -40 $$w.replay.log; echo "fuzz-smoke: $$n failed on its corpus"; exit 1; }; \
	    $$f -max_total_time=$(FUZZ_SMOKE_SECONDS) -seed=1 -artifact_prefix=$(FUZZ_BUILD)/artifacts/$$n- $$dict \
	        $$w tests/fuzz/corpus/$$n >$$w.log 2>&1 || \
	        { tail -40 $$w.log; echo "fuzz-smoke: $$n failed; input in $(FUZZ_BUILD)/artifacts"; exit 1; }; \
	    echo "fuzz-smoke: $$n: $$(grep -o 'Done [0-9]* runs' $$w.log | tail -1)"; \
	done

# The programs (meson: /usr/local/bin), the systemd units and the system
# users they run as (docs/install.md): rete-proxy (the sidecar: init tells its
# connections from the app's by this user and group) and reted, created by
# systemd-sysusers from packaging/systemd/rete.sysusers.conf (no change when
# they exist). DESTDIR=dir installs, and creates the users, under dir.
install: build
	meson install -C $(BUILD)
	install -D -m 0644 packaging/systemd/rete.sysusers.conf $(DESTDIR)/usr/lib/sysusers.d/rete.conf
	install -D -m 0644 -t $(DESTDIR)/etc/systemd/system packaging/systemd/reted.service \
	    packaging/systemd/rete-proxy@.service
	systemd-sysusers $(if $(DESTDIR),--root=$(DESTDIR)) $(DESTDIR)/usr/lib/sysusers.d/rete.conf

format:
	clang-format -i $$(git ls-files '*.c' '*.h')

clean:
	rm -rf $(BUILD) $(ASAN_BUILD) $(CLANG_BUILD) $(FUZZ_BUILD)
