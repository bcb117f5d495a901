#pragma once
// The start of every cuda test program: run the tests where a GPU is usable, report the program
// skipped to ctest (exit code 77) only where the machine has no GPU at all, and fail where a GPU
// is present but unusable (a driver too old for CUDA 13, a broken installation), so that a GPU
// machine can never "pass" by skipping.
#include <cstdio>

#include "vediff/backend/cuda/runtime.hpp"

namespace vediff::testing {

/// 0: run the tests; 77: no GPU here (skipped); 1: a GPU is present but cannot be used (printed).
inline int cuda_test_gate(const char* program) {
    try {
        if (cuda_available()) return 0;
        std::printf("%s: no CUDA device on this machine (no GPU, or no NVIDIA driver installed): skipped\n", program);
        return 77;
    } catch (const cuda_error& e) {
        std::printf("%s: %s\n", program, e.what());
        return 1;
    }
}

} // namespace vediff::testing
