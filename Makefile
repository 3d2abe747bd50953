# ddict — PGXS build of the extension; see README.md.
#
#   make            build ddict.so
#   make install    install the extension into the PostgreSQL found by $(PG_CONFIG)
#   make test       install missing packages, build, install, run every suite (as root on CI)
#   make demo       the README's demo on a throwaway cluster

EXTENSION   = ddict
MODULE_big  = ddict
# src/common/: C shared with the client (src/client), listed one by one.
OBJS        = $(patsubst %.c,%.o,$(sort $(wildcard src/*.c src/common/*.c)))
EXTVERSION  = $(shell sed -n "s/^default_version = '\(.*\)'/\1/p" ddict.control)
DATA        = $(wildcard sql/ddict--*.sql)
PGFILEDESC  = "ddict - dicts backed by tables with commit-time versions"

REGRESS      = 01_setup 02_basic 03_types 04_errors 05_attach 06_security 07_versions 08_changes 09_stats 10_hardening 11_rls 12_relation 13_ddl 14_cursors 15_privileges 16_load
REGRESS_OPTS = --inputdir=. --outputdir=test/out/regress --user=postgres
ISOLATION    = commit_visibility rollback out_of_order setdefault changes_delta ddl_locks aborted_writers publish_rls truncate_load full_load_swap
ISOLATION_OPTS = --inputdir=test/isolation --outputdir=test/out/isolation --user=postgres

PG_CONFIG  ?= /usr/lib/postgresql/15/bin/pg_config
PG_CPPFLAGS = -I$(srcdir)/src
SHLIB_LINK  = -lhiredis
PG_CFLAGS   = -Wall -Wextra -Werror -Wno-unused-parameter -Wno-missing-field-initializers -Wno-sign-compare -Wno-clobbered

# No LLVM bitcode: JIT inlining of ddict is not worth a clang build dependency.
override with_llvm = no

PGXS := $(shell $(PG_CONFIG) --pgxs 2>/dev/null)
ifneq ($(PGXS),)
include $(PGXS)
else
all install installcheck:
	@echo "$(PG_CONFIG) not found: run 'make deps' (or 'make test', which runs it) first" >&2; exit 1
endif

# PGXS rebuilds an object when its .c changes, not when a header does: a
# struct that grew in ddict.h would otherwise meet stale objects.
# (After PGXS: the first rule of this file is the default goal, "all".)
$(OBJS): $(wildcard src/*.h src/common/*.h)

.PHONY: test demo deps
deps:
	bash test/deps.sh

test:
	bash test/run-all.sh

demo:
	bash test/demo.sh

# ---------------------------------------------------------------------------
# libddict, the C client (src/client): library, header, ddict.pc, ddict tool.
# `make` above builds the extension only; `make install` installs both.
# PREFIX defaults to /usr/local (lib, include, bin, lib/pkgconfig).
.PHONY: client install-client
client:
	$(MAKE) -C src/client

install-client:
	$(MAKE) -C src/client install

install: install-client

# ---------------------------------------------------------------------------
# make bench [QUICK=1]: the benchmark (test/bench/run.sh); not part of `make test`.
.PHONY: bench
bench:
	QUICK=$(QUICK) bash test/bench/run.sh

# make bench-fleet [QUICK=1]: 1,000 push processes (100 with QUICK) following
# published changes vs version-only push (test/bench/fleet.sh; run.sh calls it).
.PHONY: bench-fleet
bench-fleet:
	QUICK=$(QUICK) bash test/bench/fleet.sh
