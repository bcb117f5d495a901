// A downstream CUDA program: includes the installed vediff's cuda backend, moves tensors to the
// GPU, runs a Linear and a padded 3×3 convolution there (cuBLAS and cuDNN, so that the package's
// vediff::cuda must bring both) and checks them against the same sums on the host.
#include <cmath>
#include <cstdio>
#include <vector>

#include <vediff/backend/cuda.hpp>
#include <vediff/core/transfer.hpp>
#include <vediff/ops/conv.hpp>
#include <vediff/ops/gemm.hpp>

// The README's style: the whole namespace in scope, the device named by its tag (`cuda_device`:
// libcu++'s global namespace `cuda` would make a tag called `cuda` ambiguous here).
using namespace vediff;

int main() {
    if (!cuda_available()) {
        std::printf("vediff cuda consumer built; no CUDA device to run it\n");
        return 0;
    }
    const std::vector<float> x = {1, 2, 3, 4, 5, 6}, w = {1, 0, 1, 0, 1, 0, 2, 2, 2}, b = {0.5f, -1, 0};
    const auto y = ops::linear(tensor<float, cuda_device>::from_host({2, 3}, x).view(),
                               tensor<float, cuda_device>::from_host({3, 3}, w).view(),
                               tensor<float, cuda_device>::from_host({3}, b).view())
                       .to_vector();
    const std::vector<float> expected = {4.5f, 1, 12, 10.5f, 4, 30};
    for (std::size_t i = 0; i < expected.size(); ++i)
        if (std::abs(y[i] - expected[i]) > 1e-5f) {
            std::printf("y[%zu] = %g, expected %g\n", i, y[i], expected[i]);
            return 1;
        }
    // x = 1..9 on a 3 × 3 plane, a 3 × 3 kernel of ones, padding 1: each output sums its neighbourhood.
    const std::vector<float> plane = {1, 2, 3, 4, 5, 6, 7, 8, 9}, ones(9, 1.0f);
    const auto z = ops::conv2d(tensor<float, cuda_device>::from_host({1, 1, 3, 3}, plane).view(),
                               tensor<float, cuda_device>::from_host({1, 1, 3, 3}, ones).view(),
                               ops::conv2d_options{.padding = ops::padding2d::symmetric(1)})
                       .to_vector();
    const std::vector<float> sums = {12, 21, 16, 27, 45, 33, 24, 39, 28};
    for (std::size_t i = 0; i < sums.size(); ++i)
        if (std::abs(z[i] - sums[i]) > 1e-4f) {
            std::printf("conv z[%zu] = %g, expected %g\n", i, z[i], sums[i]);
            return 1;
        }
    std::printf("vediff cuda consumer ok\n");
    return 0;
}
