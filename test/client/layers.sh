#!/usr/bin/env bash
# test/client/layers.sh [SRCDIR] — libddict's files must form a stack.
#
# Compiles every library source of SRCDIR (default src/client, plus
# src/common) to an object file, derives the file-level call graph from the
# symbols (file A -> file B when A's object references a function or
# variable that B's object defines) and fails, naming the files, when the
# graph has a cycle.  Prints the graph (and a layer order) either way.
# internal.h documents the intended stack.
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
SRC=${1:-$ROOT/src/client}
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
PQ_CFLAGS=$(pkg-config --cflags libpq 2>/dev/null || echo "-I$(pg_config --includedir)")

srcs=()
for f in "$SRC"/*.c "$SRC"/../common/*.c; do [[ -f $f ]] && srcs+=("$f"); done
for f in "${srcs[@]}"; do
  b=$(basename "$f" .c)
  # shellcheck disable=SC2086
  cc -std=c11 -D_GNU_SOURCE -pthread -O0 -w -I"$SRC" $PQ_CFLAGS -c "$f" -o "$TMP/$b.o" ||
    { echo "layers: cannot compile $f" >&2; exit 2; }
  nm --defined-only -g "$TMP/$b.o" | awk -v f="$b" 'NF == 3 { print $3, f }' >>"$TMP/defs"
  nm -u "$TMP/$b.o" | awk -v f="$b" '{ print f, $NF }' >>"$TMP/uses"
done
# edges "user provider", one per pair of files
awk 'NR == FNR { def[$1] = $2; next } ($2 in def) && def[$2] != $1 { print $1, def[$2] }' \
  "$TMP/defs" "$TMP/uses" | sort -u >"$TMP/edges"
echo "# calls (file -> file it calls):"
awk '{ a[$1] = a[$1] " " $2 } END { for (f in a) print "#   " f " ->" a[f] }' "$TMP/edges" | sort
# tsort wants "before after": provider first
if awk '{ print $2, $1 }' "$TMP/edges" | tsort >"$TMP/order" 2>"$TMP/tsort.err"; then
  echo "# layers, bottom first: $(tr '\n' ' ' <"$TMP/order")"
  exit 0
fi
echo "layers: the client's files call each other in a cycle:" >&2
grep -v '^tsort: -: input contains a loop:' "$TMP/tsort.err" | sed 's/^tsort: /  /' >&2
exit 1
