#define BOOST_TEST_MODULE strict_json
#include <boost/test/unit_test.hpp>

#include <stdexcept>
#include <string>

#include <nlohmann/json.hpp>

#include "support/errors.hpp"
#include "vediff/backend/cpu.hpp"
#include "vediff/core/error.hpp"
#include "vediff/models/autoencoder_config.hpp"
#include "vediff/train/dit_run.hpp"

using namespace vediff;
using namespace vediff::testing;

// Run configurations read back from a checkpoint or a file convert nothing silently: an integer
// field takes JSON integers in its range only (nlohmann alone casts 3.7 to 3, and 1e118 to
// whatever the undefined cast gives: found by tests/fuzz/fuzz_run_config), a real any number.
BOOST_AUTO_TEST_CASE(integer_fields_take_integers_only) {
    const models::autoencoder_config defaults;
    const nlohmann::json good = defaults;
    BOOST_TEST(good.get<models::autoencoder_config>().ch == defaults.ch);

    const auto refused = [&](const char* field, const nlohmann::json& value) {
        nlohmann::json j = good;
        j[field] = value;
        return error_message<std::invalid_argument>([&] { (void)j.get<models::autoencoder_config>(); });
    };
    auto msg = refused("ch", 3.7);
    BOOST_TEST(contains(msg, "configuration field 'ch': 3.7 is not an integer"), msg);
    msg = refused("ch_mult", nlohmann::json::array({1, 1.66e118}));
    BOOST_TEST(contains(msg, "'ch_mult[1]'"), msg);
    msg = refused("num_res_blocks", "2");
    BOOST_TEST(contains(msg, "'num_res_blocks': \"2\" is not an integer"), msg);
    msg = refused("resolution", 18446744073709551615ull);
    BOOST_TEST(contains(msg, "in range"), msg);

    // A DiT run: the same, named as a configuration error; reals take integers.
    train::dit_run_config run;
    nlohmann::json d = run.to_json();
    d["lr"] = 1;
    BOOST_TEST(train::dit_run_config::from_json(d).lr == 1.0);
    d["steps"] = 10.5;
    const auto dit_msg = io_error_message([&] { (void)train::dit_run_config::from_json(d); });
    BOOST_TEST(contains(dit_msg, "'steps': 10.5 is not an integer"), dit_msg);
    d["steps"] = 10;
    d["seed"] = -1;
    const auto seed_msg = io_error_message([&] { (void)train::dit_run_config::from_json(d); });
    BOOST_TEST(contains(seed_msg, "'seed': -1 is not a non-negative integer"), seed_msg);
}
