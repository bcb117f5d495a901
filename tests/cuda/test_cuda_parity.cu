// The cuda device against the cpu device on whole training steps and sampling runs
// (support/device_parity.hpp): the loss and every parameter gradient of one tokenizer step and one
// DiT / LightningDiT step within 1e-4 relative, and same-seed guided samples (Euler, Heun, SDE)
// within 1e-4 relative (their displacement from the noise). Without a GPU the program reports
// itself skipped (exit code 77).
#define BOOST_TEST_MODULE cuda_parity
#define BOOST_TEST_NO_MAIN
#define BOOST_TEST_ALTERNATIVE_INIT_API
#include <boost/test/unit_test.hpp>

#include <cmath>
#include <cstdio>
#include <vector>

#include "support/cuda_gate.hpp"
#include "support/device_parity.hpp"
#include "vediff/backend/cuda.hpp"

using namespace vediff;
using namespace vediff::testing::parity;
using other = cuda_device;

namespace {
constexpr double loss_tolerance = 1e-4, gradient_tolerance = 1e-4, sample_tolerance = 1e-4;
} // namespace

#include "support/device_parity_cases.hpp"

int main(int argc, char* argv[]) {
    if (const int gate = testing::cuda_test_gate("cuda_parity"); gate != 0) return gate;
    set_cuda_conv_tf32(false);  // compared with the cpu at fp32 precision (TF32 convolutions are the default)
    return boost::unit_test::unit_test_main(&init_unit_test, argc, argv);  // init_unit_test: BOOST_TEST_MODULE's
}
