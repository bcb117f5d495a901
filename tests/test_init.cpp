// Parameter initialization: keys from (seed, full name), the construct-equals-initialize
// invariant, and no two random parameters of a model equal.
#define BOOST_TEST_MODULE init
#include <boost/test/unit_test.hpp>

#include <set>
#include <string>

#include "support/distinct_parameters.hpp"
#include "vediff/backend/cpu.hpp"
#include "vediff/models/autoencoder.hpp"
#include "vediff/models/fashion_classifier.hpp"
#include "vediff/nn/init.hpp"
#include "vediff/nn/linear.hpp"

using namespace vediff;
using namespace vediff::testing;

namespace {

template <class L>
bool same_values(L& a, L& b) {
    const auto pa = nn::named_parameters(a), pb = nn::named_parameters(b);
    if (pa.size() != pb.size()) return false;
    for (std::size_t i = 0; i < pa.size(); ++i)
        if (pa[i].first != pb[i].first || pa[i].second->value.to_vector() != pb[i].second->value.to_vector()) return false;
    return true;
}

// Two linears drawn from one seed by their local names, as a model that forgot to call initialize.
struct pair_of_linears {
    using value_type = float;
    using device_type = cpu;
    nn::linear<float> a{4, 4, true, 3}, b{4, 4, true, 3};
    template <class F>
    void for_each_parameter(F&& f, const std::string& prefix = {}) {
        a.for_each_parameter(f, nn::join_name(prefix, "a"));
        b.for_each_parameter(f, nn::join_name(prefix, "b"));
    }
};

std::string describe(const std::vector<std::pair<std::string, std::string>>& pairs) {
    std::string s;
    for (const auto& [a, b] : pairs) s += a + " == " + b + "; ";
    return s;
}

} // namespace

BOOST_AUTO_TEST_SUITE(initialization)

BOOST_AUTO_TEST_CASE(keys_differ_by_seed_and_name) {
    // Neighbouring seeds and names that differ in one character get unrelated keys.
    std::set<std::uint64_t> keys;
    for (std::uint64_t seed : {0u, 1u, 2u})
        for (const char* name : {"weight", "bias", "blocks.0.weight", "blocks.1.weight", "blocks.10.weight", "blocks.0.bias"})
            keys.insert(nn::parameter_key(seed, name));
    BOOST_TEST(keys.size() == 18u);
    BOOST_TEST(nn::parameter_key(0, "a.weight") == nn::parameter_key(0, std::string("a.") + "weight"));
}

BOOST_AUTO_TEST_CASE(a_layer_built_with_a_seed_holds_what_initialize_draws) {
    models::autoencoder_config c;
    c.ch = 8;
    c.ch_mult = {1, 2};
    c.num_res_blocks = 1;
    c.attn_resolutions = {16};
    c.norm_groups = 4;
    models::autoencoder_kl<float> built(c, 7), redrawn(c, 0);
    BOOST_TEST(!same_values(built, redrawn));
    nn::initialize(redrawn, 7);
    BOOST_TEST(same_values(built, redrawn));

    nn::linear<float> fc(5, 3, true, 9), fc0(5, 3, true, 0);
    nn::initialize(fc0, 9);
    BOOST_TEST(same_values(fc, fc0));
}

BOOST_AUTO_TEST_CASE(no_two_autoencoder_parameters_are_equal) {
    // The default tokenizer: before keys were derived from names, 9 of its conv weights were
    // bit-identical to another layer's.
    models::autoencoder_kl<float> ae(models::autoencoder_config{}, 0);
    BOOST_TEST(random_parameter_count(ae) > 60);
    const auto equal = equal_random_parameters(ae);
    BOOST_TEST(equal.empty(), describe(equal));
}

BOOST_AUTO_TEST_CASE(no_two_classifier_parameters_are_equal) {
    models::fashion_classifier<float> net({}, 0);
    BOOST_TEST(random_parameter_count(net) >= 10);
    const auto equal = equal_random_parameters(net);
    BOOST_TEST(equal.empty(), describe(equal));
}

BOOST_AUTO_TEST_CASE(equal_parameters_are_detected) {
    // The check itself can fail: two linears drawn from one seed by their local names are equal.
    pair_of_linears twins;
    BOOST_TEST(equal_random_parameters(twins).size() == 2u);
    nn::initialize(twins, 3);
    BOOST_TEST(equal_random_parameters(twins).empty());
}

BOOST_AUTO_TEST_SUITE_END()
