// --device: the job bodies run for the device the flag names, among those the program was built
// for, and anything else is an error that names the flag, the value and the choices.
#define BOOST_TEST_MODULE device_choice
#include <boost/test/unit_test.hpp>

#include <stdexcept>
#include <string>
#include <type_traits>
#include <vector>

#include <cxxopts.hpp>

#include "support/errors.hpp"
#include "vediff/backend/cpu.hpp"
#include "vediff/core/transfer.hpp"
#include "vediff/jobs/device_choice.hpp"

using namespace vediff;
using namespace vediff::testing;

namespace {

// A second device for dispatch only: the bodies below never allocate on it.
struct other_device {
    static constexpr const char* name = "other";
    static constexpr bool host_accessible = true;
};
using two_devices = jobs::device_list<cpu, other_device>;

// A device the program was built for but this machine lacks (a GPU where there is none).
struct absent_device {
    static constexpr const char* name = "absent";
    static constexpr bool host_accessible = true;
};

} // namespace

template <>
struct vediff::device_check<absent_device> {
    static void require_available() { throw std::runtime_error("no such device on this machine"); }
};

namespace {

const auto name_of_device = []<device D>() { return std::string(D::name); };

} // namespace

BOOST_AUTO_TEST_CASE(the_body_runs_for_the_named_device) {
    BOOST_TEST(jobs::with_device<jobs::cpu_only>("cpu", name_of_device) == "cpu");
    BOOST_TEST(jobs::with_device<two_devices>("cpu", name_of_device) == "cpu");
    BOOST_TEST(jobs::with_device<two_devices>("other", name_of_device) == "other");
    int calls = 0;
    jobs::with_device<two_devices>("other", [&]<device D>() { calls += std::is_same_v<D, other_device> ? 1 : 100; });
    BOOST_TEST(calls == 1);
}

BOOST_AUTO_TEST_CASE(unknown_and_missing_devices_are_named_errors) {
    const auto cuda_message = error_message<std::invalid_argument>([] { (void)jobs::with_device<jobs::cpu_only>("cuda", name_of_device); });
    BOOST_TEST(cuda_message.find("--device cuda: this program was built without the cuda backend") != std::string::npos, cuda_message);
    const auto other_message = error_message<std::invalid_argument>([] { (void)jobs::with_device<two_devices>("tpu", name_of_device); });
    BOOST_TEST(other_message == "--device tpu: expected cpu or other");
    BOOST_TEST(two_devices::names() == "cpu | other");
    BOOST_TEST(jobs::cpu_only::names() == "cpu");
}

BOOST_AUTO_TEST_CASE(a_device_missing_at_run_time_is_an_error_before_the_job_starts) {
    int calls = 0;
    const auto message = error_message<std::invalid_argument>(
        [&] { jobs::with_device<jobs::device_list<cpu, absent_device>>("absent", [&]<device D>() { ++calls; }); });
    BOOST_TEST(message == "--device absent: no such device on this machine");
    BOOST_TEST(calls == 0);
    BOOST_TEST((jobs::with_device<jobs::device_list<cpu, absent_device>>("cpu", name_of_device)) == "cpu");
}

BOOST_AUTO_TEST_CASE(the_flag_defaults_to_cpu_and_is_checked_when_read) {
    const auto parse = [](std::vector<const char*> args) {
        cxxopts::Options options("prog");
        jobs::add_device_option<two_devices>(options);
        args.insert(args.begin(), "prog");
        return options.parse(static_cast<int>(args.size()), args.data());
    };
    BOOST_TEST(jobs::read_device<two_devices>(parse({})) == "cpu");
    BOOST_TEST(jobs::read_device<two_devices>(parse({"--device", "other"})) == "other");
    const auto message = error_message<std::invalid_argument>([&] { (void)jobs::read_device<two_devices>(parse({"--device=gpu"})); });
    BOOST_TEST(message == "--device gpu: expected cpu or other");
}

BOOST_AUTO_TEST_CASE(view_on_the_same_device_is_the_view_itself) {
    auto x = tensor<float>::from_host({2, 3}, {1, 2, 3, 4, 5, 6});
    const view_on<float, cpu> same(x.view());
    BOOST_TEST(same.view().data() == x.data());  // no copy on the device the data already lives on
    BOOST_TEST(same.view().shape() == x.shape());
    // A temporary tensor would leave the view dangling: that does not compile.
    static_assert(!std::is_constructible_v<view_on<float, cpu>, tensor<float>&&>);
    static_assert(std::is_constructible_v<view_on<float, cpu>, const tensor<float>&>);
    static_assert(std::is_constructible_v<view_on<float, cpu>, tensor_view<float>>);
}
