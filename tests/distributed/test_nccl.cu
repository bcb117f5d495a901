// The NCCL communicator (distributed/nccl.hpp) on one GPU: MPI starts NCCL (rank 0's unique id),
// device buffers go through NCCL on its own stream and host values through MPI, and the
// data-parallel machinery hands it cuda buckets without host staging. Compiled by nvcc in CI;
// without a GPU the program reports itself skipped (exit code 77), and a CUDA error other than
// "no device" (an old driver, say) fails it. Run as `mpirun -np 1 test_nccl` (or alone: MPI then
// starts as a singleton). Two ranks need two GPUs: NCCL refuses two ranks on one device.
#define BOOST_TEST_MODULE nccl
#define BOOST_TEST_NO_MAIN
#define BOOST_TEST_ALTERNATIVE_INIT_API
#include <boost/test/unit_test.hpp>

#include <cstdio>
#include <cstdint>
#include <filesystem>
#include <vector>

#include "vediff/backend/cuda.hpp"
#include "vediff/distributed/data_parallel.hpp"
#include "vediff/distributed/nccl.hpp"
#include "vediff/models/dit.hpp"
#include "support/cuda_gate.hpp"

using namespace vediff;
using gpu = cuda_device;

namespace {

distributed::nccl& world() {
    static distributed::mpi host(60.0);
    static distributed::nccl comm(host);
    return comm;
}

} // namespace

static_assert(distributed::takes_memory_of<distributed::nccl, gpu>(), "NCCL takes cuda buckets as they are");
static_assert(!distributed::takes_memory_of<distributed::mpi, gpu>(), "MPI's cuda buckets are staged through the host");

BOOST_AUTO_TEST_CASE(nccl_starts_over_mpi_on_the_local_ranks_gpu) {
    auto& comm = world();
    BOOST_TEST(comm.size() == comm.host().size());
    int device = -1;
    BOOST_TEST(cudaGetDevice(&device) == cudaSuccess);
    BOOST_TEST(device == comm.local_rank());
}

// Device buffers: the all-reduce sums over the ranks (each rank adds rank + 1 to its values), in
// flight until wait; broadcast and the uneven all-gather place every rank's block.
BOOST_AUTO_TEST_CASE(device_collectives_sum_broadcast_and_gather) {
    auto& comm = world();
    const int n = comm.size(), r = comm.rank();
    std::vector<float> values(1000);
    for (std::size_t i = 0; i < values.size(); ++i) values[i] = float(i) * 0.5f + float(r + 1);
    auto x = tensor<float, gpu>::from_host({1000}, std::span<const float>(values));
    auto request = comm.start_all_reduce_sum(x.data(), 1000, "a test buffer");
    comm.wait(request);
    BOOST_TEST(comm.test(request));
    const auto sum = x.to_vector();
    for (std::size_t i = 0; i < sum.size(); i += 97) BOOST_TEST(sum[i] == float(i) * 0.5f * float(n) + float(n * (n + 1) / 2));

    auto b = tensor<double, gpu>::full({8}, double(r == 0 ? 3.25 : -1.0));
    comm.broadcast(b.data(), 8, 0, "a test buffer");
    BOOST_TEST(b.to_vector() == std::vector<double>(8, 3.25), boost::test_tools::per_element());

    std::vector<int> counts, displacements;
    int total = 0;
    for (int k = 0; k < n; ++k) {
        counts.push_back(k + 2);
        displacements.push_back(total);
        total += k + 2;
    }
    std::vector<float> mine(static_cast<std::size_t>(total), -1.0f);
    for (int i = 0; i < counts[static_cast<std::size_t>(r)]; ++i) mine[static_cast<std::size_t>(displacements[static_cast<std::size_t>(r)] + i)] = float(100 * r + i);
    auto g = tensor<float, gpu>::from_host({total}, std::span<const float>(mine));
    comm.all_gather(g.data(), counts, displacements, "a test buffer");
    const auto gathered = g.to_vector();
    for (int k = 0; k < n; ++k)
        for (int i = 0; i < counts[static_cast<std::size_t>(k)]; ++i)
            BOOST_TEST(gathered[static_cast<std::size_t>(displacements[static_cast<std::size_t>(k)] + i)] == float(100 * k + i));
}

// Host values (a step's loss terms) go through MPI.
BOOST_AUTO_TEST_CASE(host_values_go_through_mpi) {
    auto& comm = world();
    std::vector<double> v{1.5, -2.0};
    comm.all_reduce_sum(v.data(), v.size(), "host values");
    BOOST_TEST(v[0] == 1.5 * comm.size());
    BOOST_TEST(comm.decide(comm.rank() == 0 ? 7 : 0, "a decision") == 7);
}

// A cuda DiT's gradients through data_parallel over NCCL: on one rank the mean is the gradient
// itself; on more, every rank ends with the same gradients.
BOOST_AUTO_TEST_CASE(data_parallel_reduces_cuda_gradients) {
    auto& comm = world();
    models::dit_config c;
    c.input_size = 8;
    c.in_channels = 4;
    c.num_classes = 4;
    c.hidden_size = 32;
    c.depth = 2;
    c.num_heads = 2;
    models::dit<float, gpu> model(c, 1);
    distributed::data_parallel<distributed::nccl, models::dit<float, gpu>> parallel(comm, model, 8 << 10);
    model.for_each_parameter([&](const std::string&, nn::parameter<float, gpu>& p) {
        memory<gpu>::fill(p.grad.data(), p.grad.numel(), 0.25f * float(comm.rank() + 1));
    }, std::string{});
    parallel.begin_backward(model, 0);
    parallel.reduce_gradients(model, 0);
    const float expected = comm.size() == 1 ? 0.25f : 0.25f * float(comm.size() + 1) / 2.0f;
    model.for_each_parameter([&](const std::string& name, nn::parameter<float, gpu>& p) {
        if (!p.trainable) return;
        const auto g = p.grad.to_vector();
        BOOST_TEST(g.front() == expected, name);
        BOOST_TEST(g.back() == expected, name);
    }, std::string{});
}

int main(int argc, char* argv[]) {
    if (const int gate = vediff::testing::cuda_test_gate("nccl"); gate != 0) return gate;
    return boost::unit_test::unit_test_main(&init_unit_test, argc, argv);
}
