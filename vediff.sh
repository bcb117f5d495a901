#!/usr/bin/env bash
# vediff's one entry point on a fresh Debian 12 machine (run as root, or with sudo available):
#   ./vediff.sh demo    install what is missing, build, run `vediff experiment` (KL against VE, ~20 min)
#   ./vediff.sh test    install what is missing, build, run the whole test suite (ctest)
#   ./vediff.sh sanitize   the unit tests again under AddressSanitizer + UBSan
#   ./vediff.sh bench   the benchmarks against OpenBLAS and PyTorch (docs/benchmarks.md)
set -euo pipefail
cd "$(dirname "$0")"

JOBS=${JOBS:-$(nproc)}
BUILD=${BUILD:-build}

# Debian packages the build, the tests and the demo need.
# OpenMPI: data-parallel training under mpirun, and its tests.
PACKAGES=(build-essential cmake g++ libeigen3-dev libfmt-dev libcxxopts-dev libboost-test-dev zlib1g-dev
          nlohmann-json3-dev libstb-dev libjpeg62-turbo-dev libpng-dev libzip-dev libxxhash-dev clang pkg-config dataset-fashion-mnist gnuplot-nox libopenmpi-dev openmpi-bin)
# The benchmarks also run the peers: OpenBLAS sgemm and PyTorch.
BENCH_PACKAGES=(libopenblas-dev libopenblas0-pthread python3-torch)

install_missing() {
    local missing=()
    for p in "$@"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
    done
    if ((${#missing[@]})); then
        echo "vediff: installing ${missing[*]}"
        local sudo=""
        [[ $(id -u) -eq 0 ]] || sudo="sudo"
        $sudo apt-get update -q
        DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q "${missing[@]}"
    fi
}

configure() {  # build_dir, extra cmake args...
    local dir=$1
    shift
    cmake -S . -B "$dir" -DCMAKE_BUILD_TYPE=Release "$@"
}

# The GPU architectures the test build compiles the cuda code for: this machine's GPUs where
# nvidia-smi lists one (the tests then run there); without a GPU the cuda tests only compile, and
# one architecture (the oldest the library supports) checks that as well as five would, in a
# fifth of the time. CMAKE_CUDA_ARCHITECTURES in the environment overrides; a plain cmake build
# keeps the library's default of five (CMakeLists.txt).
test_cuda_architectures() {
    if [[ -n "${CMAKE_CUDA_ARCHITECTURES:-}" ]]; then echo "$CMAKE_CUDA_ARCHITECTURES"
    elif nvidia-smi -L 2>/dev/null | grep -q '^GPU '; then echo native
    else echo 80-real
    fi
}

configure_and_build() {  # build_dir, extra cmake args...
    configure "$@"
    cmake --build "$1" -j "$JOBS"
}

# Prints how long the named part took when the script leaves it (CI's budget is tracked per half).
started=$SECONDS
report_duration() { echo "vediff.sh ${1:-}: $((SECONDS - started)) s"; }

case "${1:-}" in
demo)
    install_missing "${PACKAGES[@]}"
    # Only the program the demo runs: the tests, benchmarks and other examples are `test`'s to build.
    configure "$BUILD"
    cmake --build "$BUILD" -j "$JOBS" --target vediff_cli
    shift
    "$BUILD/examples/vediff" experiment "$@"
    ;;
test)
    trap 'report_duration test' EXIT
    install_missing "${PACKAGES[@]}"
    # MPI is required here, so that its tests cannot be left out silently.
    configure_and_build "$BUILD" -DVEDIFF_WITH_MPI=ON -DCMAKE_CUDA_ARCHITECTURES="$(test_cuda_architectures)"
    (cd "$BUILD" && ctest --output-on-failure -j "$JOBS")
    ;;
sanitize)
    trap 'report_duration sanitize' EXIT
    install_missing "${PACKAGES[@]}"
    configure_and_build "$BUILD-sanitize" -DVEDIFF_SANITIZE=ON -DVEDIFF_BUILD_EXAMPLES=OFF -DVEDIFF_BUILD_BENCHMARKS=OFF \
        -DVEDIFF_WITH_CUDA=OFF
    (cd "$BUILD-sanitize" && ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
        ctest --output-on-failure -j "$JOBS" -L unit)
    ;;
bench)
    install_missing "${PACKAGES[@]}" "${BENCH_PACKAGES[@]}"
    benchmarks/run.sh
    ;;
*)
    sed -n '2,7p' "$0"
    exit 2
    ;;
esac
