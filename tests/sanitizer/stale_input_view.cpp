// A layer keeps a view of its input for backward. Feeding it a tensor that dies before backward
// (here through an explicit view, which the compile-time rvalue check cannot see) must be caught
// in sanitized builds: there the allocator's cache is bypassed, so the released block sits in
// ASan's quarantine and backward's read is a reported heap-use-after-free (tests/CMakeLists.txt
// expects that report). With the cache, a later tensor of the same size would take the block.
#include "vediff/backend/cpu.hpp"
#include "vediff/nn/linear.hpp"
#include "vediff/ops/elementwise.hpp"

#include <cstdio>

int main() {
    using namespace vediff;
    nn::linear<float> fc(8, 4, true, 1);
    auto a = tensor<float>::full({2, 8}, 1.0f), b = tensor<float>::full({2, 8}, 2.0f);
    auto dy = tensor<float>::full({2, 4}, 1.0f);
    {
        auto x = ops::add(a.view(), b.view());
        auto y = fc.forward(x.view());
        (void)y;
    }  // x is released here, while fc still holds a view of it
    auto dx = fc.backward(dy.view());
    std::printf("backward read a released input without a report: %f\n", double(fc.weight.grad.at(0, 0)));
    return 0;
}
