#pragma once
// OpenMP loop helper for the cpu backend. Loops below a grain size stay on one thread, where
// starting a team costs more than it saves.
#include <cstdint>

namespace vediff::cpu_detail {

inline constexpr std::int64_t parallel_grain = 32768;

/// Calls body(i) for i in [0, n), in parallel when the work is large enough.
template <class Body>
inline void parallel_for(std::int64_t n, Body&& body, std::int64_t work_per_item = 1) {
#pragma omp parallel for schedule(static) if (n * work_per_item > parallel_grain && n > 1)
    for (std::int64_t i = 0; i < n; ++i) body(i);
}

} // namespace vediff::cpu_detail
