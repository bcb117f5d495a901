#pragma once
// Running a piece of a test with a given OpenMP thread count.
#include <omp.h>

namespace vediff::testing {

/// Runs f with the given OpenMP thread count, restoring the previous one.
template <class F>
auto with_threads(int n, F&& f) {
    const int saved = omp_get_max_threads();
    omp_set_num_threads(n);
    auto r = f();
    omp_set_num_threads(saved);
    return r;
}

} // namespace vediff::testing
