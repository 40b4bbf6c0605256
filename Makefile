# libeasdirect: `make demo` runs the demo, `make test` runs every test. Both set up what they
# need on a fresh machine (Rust toolchain from rustup is assumed; cbindgen is installed, pinned,
# into $(CACHE) once).
SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
export PATH := $(HOME)/.cargo/bin:/usr/local/go/bin:$(PATH)

CACHE ?= $(HOME)/.cache/easdirect
CBINDGEN_VERSION := 0.29.4
CBINDGEN := $(CACHE)/tools/cbindgen-$(CBINDGEN_VERSION)/bin/cbindgen
# rnacos: a Nacos server in Rust, the real server of the Nacos tests (about 8 minutes to build on
# 2 cores, once: it is kept in $(CACHE) and never rebuilt when there).
RNACOS_VERSION := 0.8.8
RNACOS := $(CACHE)/tools/rnacos-$(RNACOS_VERSION)/bin/rnacos
# The official Nacos Python client registers instances over gRPC in the Nacos tests.
NACOS_PY := $(CACHE)/nacos-py/bin/python
NACOS_SDK_PYTHON_VERSION := 3.2.0
# Fuzzing: cargo-fuzz on a nightly toolchain, when the machine has one.
CARGO_FUZZ_VERSION := 0.13.1
CARGO_FUZZ := $(CACHE)/tools/cargo-fuzz-$(CARGO_FUZZ_VERSION)/bin/cargo-fuzz
FUZZ_SECONDS ?= 20
CARGO ?= cargo
RELEASE := target/release
# The one version of everything (the crate, eas_version(), EAS_VERSION, the packages): Cargo.toml's.
VERSION := $(shell sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n1)
# The ABI major (the shared library's SONAME libeasdirect.so.$(ABI_MAJOR)): src/ffi/mod.rs's.
ABI_MAJOR := $(shell sed -n 's/^pub const EAS_ABI_MAJOR: u32 = \([0-9]*\);/\1/p' src/ffi/mod.rs)
CBUILD := tests/c/build
CFLAGS_STRICT := -Wall -Wextra -Werror -pedantic -Iinclude
CLIBS := -lpthread -ldl -lm

.PHONY: demo test build install dist dist-go dist-python dist-java tools header check-header lint test-rust test-c bench bench-rust bench-c bench-nacos bench-lb bench-go test-go bench-python test-python test-fuzz test-java bench-java clean

## The main job: a live demo on an embedded default (emulated EAS service, real local instances).
demo: build
	$(RELEASE)/easdirect demo

## Every test: lint, header drift, Rust unit/integration tests (rnacos included), C tests
## under valgrind.
test: build check-header lint test-rust test-c test-go test-python test-java test-fuzz
	@echo "make test: all suites passed"

build:
	$(CARGO) build --release --workspace --locked
	@# Programs linked against the .so look for its SONAME at run time.
	ln -sf libeasdirect.so $(RELEASE)/libeasdirect.so.$(ABI_MAJOR)

## Installs the header, both libraries and pkg-config files (easdirect, easdirect-static):
## `make install PREFIX=/usr/local` (DESTDIR for staging).
PREFIX ?= /usr/local
install: build
	install -d $(DESTDIR)$(PREFIX)/include $(DESTDIR)$(PREFIX)/lib/pkgconfig
	install -m 644 include/easdirect.h $(DESTDIR)$(PREFIX)/include/
	install -m 644 $(RELEASE)/libeasdirect.a $(DESTDIR)$(PREFIX)/lib/
	install -m 755 $(RELEASE)/libeasdirect.so $(DESTDIR)$(PREFIX)/lib/libeasdirect.so.$(VERSION)
	ln -sf libeasdirect.so.$(VERSION) $(DESTDIR)$(PREFIX)/lib/libeasdirect.so.$(ABI_MAJOR)
	ln -sf libeasdirect.so.$(ABI_MAJOR) $(DESTDIR)$(PREFIX)/lib/libeasdirect.so
	bindings/go/pkgconfig.sh --prefix $(PREFIX) --out $(DESTDIR)$(PREFIX)/lib/pkgconfig

## Packages for users: dist/easdirect-$(VERSION)-linux-x86_64.tar.gz (include/, lib/ with the
## versioned .so and its links, lib/pkgconfig/ relocatable: a C program builds against it with
## only pkg-config, wherever it is unpacked).
DIST := dist
C_DIST := $(DIST)/easdirect-$(VERSION)-linux-x86_64.tar.gz
dist: $(C_DIST) dist-go dist-python dist-java

## The Java jar (multi-release, natives inside) installed in a local Maven repository dist/m2.
dist-java: build
	bash bindings/java/dist.sh $(DIST)/

## The Python wheel (manylinux, the library and extensions inside).
dist-python: build
	bash bindings/python/dist.sh $(DIST)/

## The Go module as a file GOPROXY (dist/goproxy), its archive and header bundled.
dist-go: build
	bash bindings/go/dist.sh $(DIST)/

$(C_DIST): build
	rm -rf $(DIST)/stage && mkdir -p $(DIST)/stage/easdirect-$(VERSION)
	$(MAKE) --no-print-directory install PREFIX=/ DESTDIR=$(CURDIR)/$(DIST)/stage/easdirect-$(VERSION) >/dev/null
	@# pkg-config's own variable: the prefix is wherever the tarball was unpacked.
	sed -i 's|^prefix=.*|prefix=$${pcfiledir}/../..|; s|^libdir=.*|libdir=$${prefix}/lib|; s|^includedir=.*|includedir=$${prefix}/include|' \
	  $(DIST)/stage/easdirect-$(VERSION)/lib/pkgconfig/*.pc
	tar -C $(DIST)/stage -czf $@ --owner=0 --group=0 easdirect-$(VERSION)
	rm -rf $(DIST)/stage
	@echo "dist: $@"

$(CBINDGEN):
	$(CARGO) install cbindgen --version $(CBINDGEN_VERSION) --locked --root $(CACHE)/tools/cbindgen-$(CBINDGEN_VERSION)

## Regenerates include/easdirect.h from src/ffi.
header: $(CBINDGEN)
	$(CBINDGEN) --config cbindgen.toml --quiet | sed 's/@EAS_VERSION@/$(VERSION)/' >include/easdirect.h

check-header: $(CBINDGEN)
	@tmp=$$(mktemp); $(CBINDGEN) --config cbindgen.toml --quiet 2>/dev/null | sed 's/@EAS_VERSION@/$(VERSION)/' >$$tmp; \
	if ! cmp -s $$tmp include/easdirect.h; then \
	  diff -u include/easdirect.h $$tmp | head -40; rm -f $$tmp; \
	  echo "include/easdirect.h differs from what cbindgen generates: run 'make header' and commit"; exit 1; \
	fi; rm -f $$tmp; echo "header: include/easdirect.h matches cbindgen $(CBINDGEN_VERSION)"

lint:
	$(CARGO) fmt --all --check
	$(CARGO) clippy --release --workspace --all-targets --locked -- -D warnings
	RUSTDOCFLAGS="-D warnings" $(CARGO) doc --no-deps -p easdirect -p easdirect-emulator --locked --quiet

$(RNACOS):
	$(CARGO) install rnacos --version $(RNACOS_VERSION) --locked --root $(CACHE)/tools/rnacos-$(RNACOS_VERSION)

$(NACOS_PY):
	python3 -m venv $(CACHE)/nacos-py
	$(CACHE)/nacos-py/bin/pip install --quiet nacos-sdk-python==$(NACOS_SDK_PYTHON_VERSION)

tools: $(CBINDGEN) $(RNACOS) $(NACOS_PY)

test-rust: tools
	rm -f target/tmp/netns-result.txt
	EASDIRECT_CBINDGEN=$(CBINDGEN) EASDIRECT_RNACOS=$(RNACOS) EASDIRECT_NACOS_PYTHON=$(NACOS_PY) $(CARGO) test --release --workspace --locked
	@cat target/tmp/netns-result.txt

$(CBUILD):
	mkdir -p $(CBUILD)

test-c: build | $(CBUILD)
	@command -v valgrind >/dev/null || { apt-get update -qq && apt-get install -y -qq valgrind; }
	gcc -std=c99 $(CFLAGS_STRICT) tests/c/test_api.c -o $(CBUILD)/test_api_c99 $(RELEASE)/libeasdirect.a $(CLIBS)
	g++ -std=c++17 $(CFLAGS_STRICT) -x c++ tests/c/test_api.c -x none -o $(CBUILD)/test_api_cxx17 $(RELEASE)/libeasdirect.a $(CLIBS)
	gcc -std=c99 -g $(CFLAGS_STRICT) tests/c/test_api.c -o $(CBUILD)/test_api_shared -L$(RELEASE) -leasdirect -Wl,-rpath,$(CURDIR)/$(RELEASE) $(CLIBS)
	gcc -std=c99 -g -fsanitize=address,undefined -fno-omit-frame-pointer $(CFLAGS_STRICT) tests/c/test_api.c -o $(CBUILD)/test_api_asan $(RELEASE)/libeasdirect.a $(CLIBS)
	$(CBUILD)/test_api_c99
	$(CBUILD)/test_api_cxx17
	ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=halt_on_error=1 $(CBUILD)/test_api_asan
	EASDIRECT_STORM_REPORTS=300 valgrind --fair-sched=yes --quiet --error-exitcode=1 --leak-check=full --errors-for-leak-kinds=definite \
	  --show-leak-kinds=definite --suppressions=tests/c/valgrind.supp $(CBUILD)/test_api_shared
	bash tests/c/run-examples.sh
	bash tests/c/run-dist.sh

## The Java binding: one JUnit 5 suite on JDK 25 (Panama), JDK 17 (JNI) and JDK 25 with JNI
## forced; Maven downloads go to $(CACHE)/m2.
test-java: build
	EASDIRECT_CACHE=$(CACHE) bash bindings/java/run-tests.sh
	EASDIRECT_CACHE=$(CACHE) $(MAKE) --no-print-directory dist-java
	EASDIRECT_CACHE=$(CACHE) bash bindings/java/test-dist.sh $(DIST)/

## Fuzz targets (fuzz/): each runs FUZZ_SECONDS where a nightly toolchain is installed;
## skipped, saying so, where none is.
test-fuzz:
	@if ! rustup run nightly rustc --version >/dev/null 2>&1; then \
	  echo "fuzz: skipped (no nightly toolchain here; the property tests in tests/hostile_input.rs ran)"; \
	else \
	  test -x $(CARGO_FUZZ) || $(CARGO) install cargo-fuzz --version $(CARGO_FUZZ_VERSION) --locked --root $(CACHE)/tools/cargo-fuzz-$(CARGO_FUZZ_VERSION); \
	  for t in target_and_options discovery_answers; do \
	    echo "fuzz: $$t for $(FUZZ_SECONDS) s"; \
	    PATH=$(dir $(CARGO_FUZZ)):$$PATH cargo +nightly fuzz run --fuzz-dir fuzz $$t -- -max_total_time=$(FUZZ_SECONDS) -print_final_stats=1 2>&1 | grep -E "^(stat::number_of_executed_units|Done|==|ERROR|SUMMARY)" ; \
	    test $${PIPESTATUS[0]} -eq 0 || exit 1; \
	  done; \
	fi

## The Go binding: gofmt, vet, go test -race against the emulator, static link, examples.
test-go: build
	@command -v pkg-config >/dev/null || { apt-get update -qq && apt-get install -y -qq pkg-config; }
	bash bindings/go/run-tests.sh
	$(MAKE) --no-print-directory dist-go
	bash bindings/go/test-dist.sh $(DIST)/

## The Python binding: a venv in $(CACHE), the package installed from bindings/python, pytest
## against the emulator (the official eas-prediction SDK runs the same scenarios as reference).
test-python: build
	bash bindings/python/run-tests.sh
	$(MAKE) --no-print-directory dist-python
	bash bindings/python/test-dist.sh $(DIST)/

## Benchmarks (figures go to BENCHMARKS.md).
bench: bench-rust bench-c bench-nacos bench-lb bench-go bench-python bench-java

bench-rust:
	$(CARGO) bench --bench pick
	$(CARGO) bench --bench publish

## Load-aware balancing under open-loop load (issue 13): every lb_policy and an oracle over 8
## LLM-like emulator backends, four scenarios; LB_REQUESTS (per cell, default 20000) and
## LB_RUNS (default 3, median) make a quick run possible: `LB_REQUESTS=2000 LB_RUNS=1 make bench-lb`.
bench-lb:
	$(CARGO) bench --bench lb --locked

bench-nacos: $(RNACOS) $(NACOS_PY)
	EASDIRECT_RNACOS=$(RNACOS) EASDIRECT_NACOS_PYTHON=$(NACOS_PY) $(CARGO) bench --bench nacos

bench-go: build $(RNACOS)
	EASDIRECT_RNACOS=$(RNACOS) bash bindings/go/run-bench.sh

bench-java: build $(RNACOS)
	EASDIRECT_CACHE=$(CACHE) EASDIRECT_RNACOS=$(RNACOS) bash bindings/java/run-bench.sh

bench-python: build
	bash bindings/python/run-bench.sh

bench-c: build | $(CBUILD)
	gcc -std=c11 -O2 -Wall -Wextra -Werror -Iinclude benches/c/bench_select.c -o $(CBUILD)/bench_select $(RELEASE)/libeasdirect.a $(CLIBS)
	$(CBUILD)/bench_select
	gcc -std=c11 -O2 -Wall -Wextra -Werror -Iinclude benches/c/bench_call.c -o $(CBUILD)/bench_call $(RELEASE)/libeasdirect.a $(CLIBS)
	$(CBUILD)/bench_call

clean:
	$(CARGO) clean
	rm -rf $(CBUILD)
