#!/bin/sh
# Builds the libFuzzer harnesses of tests/fuzz with Debian's clang (AddressSanitizer +
# UndefinedBehaviorSanitizer) and runs each from its seed corpus (tests/fuzz/corpus/<harness>,
# small valid files, copied: the repository's corpus is never changed).
#
#   tests/fuzz/run.sh [--runs N | --seconds S] [--timeout S] [--out DIR] [harness ...]
#
# Each run: -timeout=1 (an input taking over 1 s is a hang, a finding; --timeout raises it where
# the machine is busy with other work, since the limit is wall-clock time), -rss_limit_mb=2048 and
# -malloc_limit_mb=256 (an input of a few KB that makes vediff allocate more is a finding: sizes
# read from a file must be checked against the file before anything is allocated). A finding
# stops that harness and leaves the input as DIR/<harness>/crash-* (or leak-, timeout-, oom-).
# Prints one line per harness: executions, coverage (edges), corpus size, findings; exits 1 when
# any harness found something.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
limit="-max_total_time=20"
timeout=1
out="$root/build/fuzz"
harnesses=""
while [ $# -gt 0 ]; do
    case "$1" in
        --runs) limit="-runs=$2"; shift 2 ;;
        --seconds) limit="-max_total_time=$2"; shift 2 ;;
        --timeout) timeout="$2"; shift 2 ;;
        --out) out="$2"; shift 2 ;;
        -h|--help) sed -n '2,17p' "$0"; exit 0 ;;
        -*) echo "run.sh: unknown option $1" >&2; exit 2 ;;
        *) harnesses="$harnesses $1"; shift ;;
    esac
done
[ -n "$harnesses" ] || harnesses="safetensors latent_cache idx image npz run_config"
cxx=${CXX_FUZZ:-clang++}
command -v "$cxx" >/dev/null || { echo "run.sh: $cxx not found (Debian: apt-get install clang)" >&2; exit 2; }
mkdir -p "$out"
flags="-std=c++20 -O1 -g -Wno-unknown-warning-option -fno-omit-frame-pointer -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined \
  -I$root/include -isystem /usr/include/eigen3 $(pkg-config --cflags libjpeg libpng libzip libxxhash stb)"
libs="$(pkg-config --libs libjpeg libpng libzip libxxhash stb) -lfmt -lz"
found=0
for h in $harnesses; do
    src="$here/fuzz_$h.cpp"
    [ -f "$src" ] || { echo "run.sh: no harness $src" >&2; exit 2; }
    bin="$out/fuzz_$h"
    if [ ! -x "$bin" ] || [ -n "$(find "$src" "$here/harness.hpp" "$root/include" -newer "$bin" -print -quit)" ]; then
        # shellcheck disable=SC2086
        "$cxx" $flags -o "$bin" "$src" $libs
    fi
    work="$out/$h"
    rm -rf "$work/corpus" "$work"/crash-* "$work"/leak-* "$work"/timeout-* "$work"/oom-* "$work"/slow-unit-*
    mkdir -p "$work/corpus"
    cp "$here/corpus/$h"/* "$work/corpus/"
    log="$work/log.txt"
    status=0
    (cd "$work" && ASAN_OPTIONS=detect_leaks=1:allocator_may_return_null=0 UBSAN_OPTIONS=print_stacktrace=1 \
        "$bin" $limit -timeout="$timeout" -rss_limit_mb=2048 -malloc_limit_mb=256 -print_final_stats=1 \
        -artifact_prefix="$work/" corpus > "$log" 2>&1) || status=$?
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
    slowest=$(sed -n 's/^stat::slowest_unit_time_sec: *//p' "$log" | tail -1)
    cov=$(grep -o 'cov: [0-9]*' "$log" | tail -1 | cut -d' ' -f2)
    files=$(ls "$work/corpus" | wc -l)
    findings=$(ls "$work" | grep -c -E '^(crash|leak|timeout|oom|slow-unit)-' || true)
    echo "fuzz_$h: ${execs:-?} executions, coverage ${cov:-?} edges, corpus $files files, slowest input ${slowest:-?} s, findings $findings (exit $status; log $log)"
    if [ "$status" -ne 0 ] || [ "$findings" -ne 0 ]; then
        found=1
        tail -40 "$log" >&2
    fi
done
exit $found
