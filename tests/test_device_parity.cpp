// The device-parity harness of cuda/test_cuda_parity.cu, run cpu against cpu on every machine:
// the same steps must agree exactly, and the harness must notice one perturbed weight, so that the
// GPU test's checks are known to run and to be able to fail.
#define BOOST_TEST_MODULE device_parity
#include <boost/test/unit_test.hpp>

#include <cmath>
#include <vector>

#include "support/device_parity.hpp"

using namespace vediff;
using namespace vediff::testing::parity;
using other = vediff::cpu;

namespace {
// The same device and code: bit-identical results.
constexpr double loss_tolerance = 0, gradient_tolerance = 0, sample_tolerance = 0;
} // namespace

#include "support/device_parity_cases.hpp"

BOOST_AUTO_TEST_CASE(a_perturbed_weight_is_noticed) {
    models::dit<float, cpu> a(small_dit(), 0), b(small_dit(), 0);
    randomize_and_copy(a, b);
    // One weight matrix of one block 1% off: what a kernel with a wrong scale or a lost term gives.
    auto params = nn::named_parameters(b);
    auto& off = params[params.size() / 2].second->value;
    for (auto& w : off.span()) w *= 1.01f;
    philox_generator data{.seed = 4};
    const auto x1 = ops::normal<float, cpu>({8, 4, 8, 8}, data);
    const std::vector<std::int32_t> labels = {0, 1, 2, 3, 4, 5, 6, 7};
    const double loss_a = dit_step<cpu>(a, x1, labels), loss_b = dit_step<cpu>(b, x1, labels);
    BOOST_TEST(loss_a != loss_b);
    BOOST_TEST(largest_gradient_difference(a, b) > 1e-4);  // the tolerances of the GPU test
    BOOST_TEST(relative_difference(guided_samples<cpu>(a, diffusion::sampler_kind::euler),
                                   guided_samples<cpu>(b, diffusion::sampler_kind::euler)) > 1e-4);
}
