# ringmail — build, test, sanitizer and benchmark entry points.
#
#   make                 build build/ringmail
#   make test            unit + end-to-end tests (needs the packages .ci/run installs)
#   make asan            the same tests with an ASan+UBSan build in build-asan/
#   make demo            the main job end to end: 100,000 messages over STARTTLS to a local sink
#   make bench           benchmarks (bench/run.sh), results in bench/results/
#   make bench-ab OLD=DIR  this build beside the build in DIR (bench/ab.sh)
#   make install PREFIX=/usr/local
#   make format / format-check
#   make check-layers    the include rules between engine/ pool/ campaign/ bench/

BUILD  ?= build
MAKEFLAGS += --no-print-directory
SAN    ?= 0
PREFIX ?= /usr/local
CC     ?= gcc
WERROR ?= -Werror

# libpq pulls in OpenSSL 3 (libssl.so.3), which exports the same SSL_*
# names as BoringSSL: it comes last in the link, and connections never use
# libpq's TLS (see campaign/pq.h).

# BoringSSL from Debian's android-libboringssl-dev. Its headers must come
# before /usr/include so <openssl/ssl.h> is never OpenSSL 3's.
BSSL_INC := /usr/include/android
BSSL_LIB := /usr/lib/x86_64-linux-gnu/android

# GMime (the MIME parser of inbound feedback, campaign/feedback_parse.c) and
# the glib it pulls in: their headers as -isystem, so -Wextra -Werror judge
# our code and not theirs.
GMIME_CFLAGS := $(shell pkg-config --cflags gmime-3.0 | sed 's/-I/-isystem /g')
GMIME_LIBS   := $(shell pkg-config --libs gmime-3.0)

CPPFLAGS += -I$(BSSL_INC) -I. -I/usr/include/postgresql -D_GNU_SOURCE $(GMIME_CFLAGS)
CFLAGS   ?= -O2 -g
CFLAGS   += -std=gnu11 -Wall -Wextra $(WERROR) -MMD -MP
LDLIBS   := -L$(BSSL_LIB) -Wl,-rpath,$(BSSL_LIB) -lssl -lcrypto -luring -lcares \
            -lidn2 -ljansson -linih $(GMIME_LIBS) -lmicrohttpd -lresolv -lm -lz -lpq

# jemalloc is the process allocator. Sanitizer and valgrind builds use
# their own allocator instead (JEMALLOC=0): jemalloc and valgrind's malloc
# replacement do not mix.
JEMALLOC ?= 1
ifeq ($(SAN),1)
CFLAGS  += -O1 -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined
LDFLAGS += -fsanitize=address,undefined
JEMALLOC := 0
endif
ifeq ($(JEMALLOC),1)
# --no-as-needed or the linker drops it.
LDLIBS  += -Wl,--no-as-needed -ljemalloc -Wl,--as-needed
endif

LIB_SRC  := $(wildcard engine/*.c pool/*.c) $(filter-out campaign/main.c,$(wildcard campaign/*.c))
LIB_OBJ  := $(LIB_SRC:%.c=$(BUILD)/%.o) $(BUILD)/gen/report_embed.o
# What `report --format html` inlines into its page, compiled in as byte
# arrays by xxd -i (each file's variable name beside it).
REPORT_EMBED := report_vendor_uplot_js:campaign/vendor/uplot/uPlot.iife.min.js \
                report_vendor_uplot_css:campaign/vendor/uplot/uPlot.min.css \
                report_vendor_app_js:campaign/report_html.js
# The sink (`ringmail sink`) is linked into the binary only, not the library.
BENCH_OBJ := $(patsubst %.c,$(BUILD)/%.o,$(wildcard bench/*.c))
# ringmail-signer (campaign/signer/): the process that holds the DKIM
# private keys and signs digests for the render workers. It is built
# against OpenSSL 3 (/usr/include/openssl, libcrypto.so.3) and never sees
# BoringSSL: no -I/usr/include/android, its own object directory (the
# frames, campaign/sign_proto.c, and engine/buf.c are compiled again for it).
SIGNER_SRC := $(wildcard campaign/signer/*.c) campaign/sign_proto.c engine/buf.c
SIGNER_OBJ := $(SIGNER_SRC:%.c=$(BUILD)/signer/%.o)
SIGNER_CPPFLAGS := -I. -I/usr/include/postgresql -D_GNU_SOURCE
UNIT_SRC := $(wildcard tests/unit/test_*.c)
UNIT_BIN := $(UNIT_SRC:tests/unit/%.c=$(BUILD)/tests/%)

.PHONY: all test unit e2e asan bench bench-ab install format format-check check-layers clean fuzz fuzz-run valgrind demo
FUZZ_SECONDS ?= 20

all: $(BUILD)/ringmail $(BUILD)/ringmail-signer $(UNIT_BIN)

$(BUILD)/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(CPPFLAGS) $(CFLAGS) -c $< -o $@

$(BUILD)/gen/report_embed.c: $(foreach e,$(REPORT_EMBED),$(lastword $(subst :, ,$(e))))
	@mkdir -p $(dir $@)
	for e in $(REPORT_EMBED); do xxd -i -n $${e%%:*} $${e#*:} || exit 1; done > $@.tmp && mv $@.tmp $@

$(BUILD)/gen/report_embed.o: $(BUILD)/gen/report_embed.c
	$(CC) $(CFLAGS) -c $< -o $@

$(BUILD)/libringmail.a: $(LIB_OBJ)
	@rm -f $@
	ar rcs $@ $^

$(BUILD)/ringmail: $(BUILD)/campaign/main.o $(BENCH_OBJ) $(BUILD)/libringmail.a
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)

$(BUILD)/signer/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(SIGNER_CPPFLAGS) $(CFLAGS) -c $< -o $@

$(BUILD)/ringmail-signer: $(SIGNER_OBJ)
	$(CC) $(LDFLAGS) -o $@ $^ -lcrypto -lpq

$(BUILD)/tests/%: tests/unit/%.c $(BUILD)/libringmail.a
	@mkdir -p $(dir $@)
	$(CC) $(CPPFLAGS) $(CFLAGS) $(LDFLAGS) -o $@ $< $(BUILD)/libringmail.a -lcmocka $(LDLIBS)

test: all
	tests/run.sh $(BUILD)

unit: all
	tests/run.sh $(BUILD) unit

e2e: all
	tests/run.sh $(BUILD) e2e

# Under ASan a script runs 2 to 5 times slower; the per-script timeout is a
# guard against a hang, so it is doubled there, and RINGMAIL_SAN=1 tells a
# script that sizes its work by time (test_bounded_stop's restart after
# kill -9 took 137 to 259 s of its own 300 s bound with 12,000 recipients
# left: under ASan it now has half the campaign).
asan:
	RINGMAIL_SAN=1 RINGMAIL_E2E_TIMEOUT=$${RINGMAIL_E2E_TIMEOUT:-600} $(MAKE) BUILD=build-asan SAN=1 test

bench: all
	bench/run.sh $(BUILD)

# Two builds side by side (a change that must not cost speed):
#   make bench-ab OLD=/path/to/old/build
bench-ab: all
	bench/ab.sh $(OLD) $(BUILD)

# The main job end to end: 100,000 messages over STARTTLS to a local sink.
demo: all
	bench/demo.sh $(BUILD)

# A blast run under valgrind (memcheck, leak check) against the sink.
valgrind:
	$(MAKE) BUILD=build-vg JEMALLOC=0 all
	tests/valgrind.sh build-vg

install: $(BUILD)/ringmail $(BUILD)/ringmail-signer
	install -D -m 0755 $(BUILD)/ringmail $(DESTDIR)$(PREFIX)/bin/ringmail
	install -D -m 0755 $(BUILD)/ringmail-signer $(DESTDIR)$(PREFIX)/bin/ringmail-signer

FORMAT_SRC = $(wildcard engine/*.[ch] pool/*.[ch] campaign/*.[ch] campaign/signer/*.[ch] bench/*.[ch] tests/unit/*.[ch] tests/fuzz/*.[ch])
format:
	clang-format -i $(FORMAT_SRC)

format-check:
	clang-format --dry-run --Werror $(FORMAT_SRC)

# The layers, checked by grep on the #include lines (tests/ are exempt):
#   engine/   includes nothing from pool/, campaign/ or bench/;
#   pool/     nothing from campaign/ or bench/, and not <liburing.h>;
#   BoringSSL (<openssl/...>) only in engine/tls.c, engine/tls_session_cache.c, engine/dane.c
#             (the TLS layer) and engine/crypto.c (everything else's door);
#   campaign/signer/ (ringmail-signer, OpenSSL 3's <openssl/...>) includes of ours only
#             engine/buf.h and campaign/sign_proto.h (nothing that is BoringSSL's door),
#             and nothing outside it includes campaign/signer/;
#   campaign/ nothing from bench/ but campaign/main.c's bench/sink.h;
#   bench/    only its own headers and engine/ and pool/ ones.
# Each offending line is printed as file:line:text; any makes this fail.
LAYER_SRC = $(wildcard engine/*.[ch] pool/*.[ch] campaign/*.[ch] campaign/signer/*.[ch] bench/*.[ch] tools/*.[ch])
LAYER_INC = ^[[:space:]]*\#[[:space:]]*include[[:space:]]*
check-layers:
	@fail=0; \
	layer() { \
	  hits=$$(grep -nHE "$(LAYER_INC)$$2" $$3 /dev/null | grep -vE "$$4"); \
	  if [ -n "$$hits" ]; then echo "check-layers: $$1:"; echo "$$hits"; fail=1; fi; \
	}; \
	layer "engine/ includes pool/, campaign/ or bench/" \
	  '["<](\.\./)*(pool|campaign|bench)/' "$(filter engine/%,$(LAYER_SRC))" '^$$'; \
	layer "pool/ includes campaign/, bench/ or liburing" \
	  '(["<](\.\./)*(campaign|bench)/|<liburing\.h>)' "$(filter pool/%,$(LAYER_SRC))" '^$$'; \
	layer "BoringSSL outside engine/tls.c, engine/tls_session_cache.c, engine/crypto.c, engine/dane.c" \
	  '<openssl/' "$(LAYER_SRC)" '^(engine/(tls|tls_session_cache|crypto|dane)\.c|campaign/signer/[^:]*):'; \
	layer "campaign/signer/ includes more of ours than engine/buf.h and campaign/sign_proto.h" \
	  '"' "$(filter campaign/signer/%,$(LAYER_SRC))" '"(engine/buf\.h|campaign/sign_proto\.h|signer[a-z_]*\.h)"'; \
	layer "campaign/signer/ included from outside it" \
	  '["<](\.\./)*campaign/signer/' "$(filter-out campaign/signer/%,$(LAYER_SRC))" '^$$'; \
	layer "campaign/ includes bench/" \
	  '["<](\.\./)*bench/' "$(filter campaign/%,$(LAYER_SRC))" '^campaign/main\.c:[0-9]+:[^"]*"bench/sink\.h"'; \
	layer "bench/ includes more than engine/, pool/ and bench/ headers" \
	  '("|<(\.\./)*campaign/)' "$(filter bench/%,$(LAYER_SRC))" \
	  ':[0-9]+:[[:space:]]*#[[:space:]]*include[[:space:]]*"((engine|pool|bench)/)?[^/"]+"'; \
	hits=$$(grep -nH "Exports:" $(wildcard engine/*.h pool/*.h campaign/*.h bench/*.h) /dev/null); \
	if [ -n "$$hits" ]; then \
	  echo "check-layers: a hand-kept Exports list (a header's declarations are its exports):"; \
	  echo "$$hits"; fail=1; \
	fi; \
	if [ $$fail = 0 ]; then echo "check-layers: ok"; fi; \
	exit $$fail

# libFuzzer targets for the parsers that read peer input (needs clang).
FUZZ_SRC := $(wildcard tests/fuzz/fuzz_*.c)
fuzz:
	@mkdir -p $(BUILD)/fuzz
	for f in $(FUZZ_SRC); do \
	  clang -g -O1 -fsanitize=fuzzer,address,undefined $(CPPFLAGS) -std=gnu11 \
	    -o $(BUILD)/fuzz/$$(basename $$f .c) $$f engine/buf.c engine/smtp_reply.c \
	    engine/smtp_ehlo.c engine/smtp_data.c engine/smtp_server.c engine/crypto.c \
	    campaign/feedback_parse.c campaign/feedback_report.c campaign/feedback_text.c \
	    -L$(BSSL_LIB) -Wl,-rpath,$(BSSL_LIB) -lcrypto $(GMIME_LIBS) || exit 1; done

# A short run of every fuzz target (FUZZ_SECONDS each), as CI does. A
# target with a seed folder (FUZZ_SEEDS_name) starts from it; what the run
# finds goes to $(BUILD)/fuzz/name.corpus, never into the seed folder.
FUZZ_SEEDS_fuzz_feedback := tests/unit/feedback
fuzz-run: fuzz
	for s in $(FUZZ_SRC); do \
	  n=$$(basename $$s .c); f=$(BUILD)/fuzz/$$n; seeds=""; \
	  case $$n in fuzz_feedback) mkdir -p $$f.corpus; seeds="$$f.corpus $(FUZZ_SEEDS_fuzz_feedback)";; esac; \
	  if $$f -max_total_time=$(FUZZ_SECONDS) -print_final_stats=0 $$seeds > $$f.log 2>&1; \
	  then echo "$$(basename $$f): $$(tail -1 $$f.log)"; \
	  else tail -40 $$f.log; echo "$$(basename $$f): FAILED"; exit 1; fi; done

clean:
	rm -rf build build-asan build-vg

-include $(shell find $(BUILD) -name '*.d' 2>/dev/null)
