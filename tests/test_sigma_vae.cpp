#define BOOST_TEST_MODULE sigma_vae
#include <boost/test/unit_test.hpp>

#include <cmath>
#include <fstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "support/errors.hpp"
#include "support/gradcheck.hpp"
#include "support/scratch_dir.hpp"
#include "vediff/backend/cpu.hpp"
#include "vediff/io/image.hpp"
#include "vediff/io/safetensors.hpp"
#include "vediff/jobs/train_tokenizer.hpp"
#include "vediff/models/sigma_vae_noise.hpp"
#include "vediff/ops/concat.hpp"
#include "vediff/train/tokenizer_run.hpp"

using namespace vediff;
using namespace vediff::testing;
using boost::test_tools::tolerance;
using law = models::sigma_vae_noise::law;

namespace {

/// A posterior of moments (B, 2C, h, w) whose logvar half is a recognizable pattern.
models::gaussian_posterior<double> pattern_posterior(std::int64_t batch) {
    const auto mean = random_tensor<double>({batch, 3, 4, 4}, 1);
    const auto logvar = random_tensor<double>({batch, 3, 4, 4}, 2, 0, 0.5);
    return models::gaussian_posterior<double>::from_moments(ops::concat<double, cpu>({mean.view(), logvar.view()}, 1));
}

std::vector<nlohmann::json> log_lines(const std::filesystem::path& p) {
    std::vector<nlohmann::json> v;
    std::ifstream in(p);
    for (std::string line; std::getline(in, line);) v.push_back(nlohmann::json::parse(line));
    return v;
}

} // namespace

BOOST_AUTO_TEST_SUITE(noise_law)

// E[σ²] = C² for σ = C|n| and C²/3 for σ = C·u; σ ≥ 0, and a uniform σ never exceeds C.
BOOST_AUTO_TEST_CASE(the_laws_have_their_second_moments) {
    const int n = 40000;
    for (const auto& [distribution, expected] : {std::pair{law::normal, 4.0}, std::pair{law::uniform, 4.0 / 3.0}}) {
        const models::sigma_vae_noise noise{.scale = 2.0, .distribution = distribution};
        double second = 0, largest = 0;
        for (int i = 0; i < n; ++i) {
            const double s = noise.sigma(7, 3, i);
            BOOST_TEST_REQUIRE(s >= 0.0);
            largest = std::max(largest, s);
            second += s * s;
        }
        second /= n;
        BOOST_TEST(noise.expected_variance() == expected, tolerance(1e-12));
        // Standard errors: √(Var σ²/n) = √(2·16/n) ≈ 0.028 (normal) and √((16/5 − 16/9)/n) ≈ 0.006 (uniform).
        BOOST_TEST(std::abs(second - expected) < (distribution == law::normal ? 0.12 : 0.03), "law " << models::sigma_vae_noise::law_name(distribution)
                                                                                                     << ": E[σ²] ≈ " << second);
        if (distribution == law::uniform) BOOST_TEST(largest <= 2.0);
        else BOOST_TEST(largest > 2.0 * 3.0);  // a half-normal reaches 3 standard deviations in 40,000 draws
    }
}

BOOST_AUTO_TEST_CASE(a_draw_is_a_function_of_seed_draw_and_index) {
    const models::sigma_vae_noise noise{.scale = 1.0};
    BOOST_TEST(noise.sigma(1, 2, 3) == noise.sigma(1, 2, 3));
    BOOST_TEST(noise.sigma(1, 2, 3) != noise.sigma(1, 2, 4));
    BOOST_TEST(noise.sigma(1, 2, 3) != noise.sigma(1, 5, 3));
    BOOST_TEST(noise.sigma(1, 2, 3) != noise.sigma(9, 2, 3));
    BOOST_TEST(models::sigma_vae_noise{.scale = 0.0}.sigma(1, 2, 3) == 0.0);
}

BOOST_AUTO_TEST_CASE(bad_settings_are_named) {
    BOOST_TEST(contains(error_message<std::invalid_argument>([] { models::sigma_vae_noise{.scale = -1}.validate(); }), "scale -1"));
    BOOST_TEST(contains(error_message<std::invalid_argument>([] { (void)models::sigma_vae_noise::parse_law("cauchy"); }), "cauchy"));
    BOOST_TEST(contains(error_message<std::invalid_argument>([] { models::sigma_vae_noise{.scale = NAN}.validate(); }), "finite"));
}

BOOST_AUTO_TEST_SUITE_END()

BOOST_AUTO_TEST_SUITE(posterior)

// After fix_variance, logvar of image b is log σ_b² everywhere, and sample() draws
// z = μ + σ_b·ε with the generator's ε.
BOOST_AUTO_TEST_CASE(fixed_variance_replaces_the_encoders_and_scales_the_noise) {
    const models::sigma_vae_noise noise{.scale = 1.5};
    auto post = pattern_posterior(3);
    noise.fix_variance(post, 4, 10, 5);
    BOOST_TEST(post.variance_fixed());
    philox_generator gen{.seed = 1, .stream = 2, .offset = 0};
    const auto z = post.sample(gen);
    const auto& eps = post.noise();
    for (std::int64_t b = 0; b < 3; ++b) {
        const double s = noise.sigma(4, 10, 5 + b);
        for (std::int64_t i = 0; i < 48; ++i) {
            const std::int64_t c = i / 16, y = i / 4 % 4, x = i % 4;
            BOOST_TEST(post.logvar.at(b, c, y, x) == std::log(s * s), tolerance(1e-12));
            BOOST_TEST(z.at(b, c, y, x) == post.mean.at(b, c, y, x) + s * eps.at(b, c, y, x), tolerance(1e-9));
        }
    }
}

// The backward reaches μ only: dmean gains dz, dlogvar is untouched, and the encoder's logvar
// channels get a zero gradient even where the loss handed one in.
BOOST_AUTO_TEST_CASE(the_backward_reaches_the_mean_only) {
    auto post = pattern_posterior(2);
    models::sigma_vae_noise{.scale = 0.8}.fix_variance(post, 0, 0, 0);
    philox_generator gen{.seed = 3, .stream = 0, .offset = 0};
    (void)post.sample(gen);
    const auto dz = random_tensor<double>(post.mean.shape(), 5);
    auto dmean = random_tensor<double>(post.mean.shape(), 6);
    auto dlogvar = random_tensor<double>(post.mean.shape(), 7);
    const auto dmean_before = dmean.to_vector(), dlogvar_before = dlogvar.to_vector(), dz_values = dz.to_vector();
    post.sample_backward(dz.view(), dmean.view(), dlogvar.view());
    const auto after = dmean.to_vector();
    for (std::size_t i = 0; i < after.size(); ++i) BOOST_TEST(after[i] == dmean_before[i] + dz_values[i], tolerance(1e-14));
    BOOST_TEST(dlogvar.to_vector() == dlogvar_before);
    const auto dmoments = post.moments_backward(dmean.view(), dlogvar.view());
    BOOST_TEST_REQUIRE(dmoments.dim(1) == 6);
    for (std::int64_t b = 0; b < 2; ++b)
        for (std::int64_t c = 0; c < 3; ++c)
            for (std::int64_t i = 0; i < 16; ++i) {
                BOOST_TEST(dmoments.at(b, c, i / 4, i % 4) == dmean.at(b, c, i / 4, i % 4));
                BOOST_TEST(dmoments.at(b, 3 + c, i / 4, i % 4) == 0.0);
            }
}

// A data-parallel shard that holds images 2 and 3 of a global batch draws their σ_b as the whole
// batch does.
BOOST_AUTO_TEST_CASE(a_shard_draws_the_global_batchs_sigmas) {
    const models::sigma_vae_noise noise{.scale = 1.0, .distribution = law::uniform};
    auto whole = pattern_posterior(4);
    noise.fix_variance(whole, 8, 2, 0);
    auto shard = pattern_posterior(2);
    noise.fix_variance(shard, 8, 2, 2);
    for (std::int64_t b = 0; b < 2; ++b) BOOST_TEST(shard.logvar.at(b, 0, 0, 0) == whole.logvar.at(b + 2, 0, 0, 0));
    BOOST_TEST(whole.logvar.at(0, 0, 0, 0) != whole.logvar.at(1, 0, 0, 0));
}

// σ-VAE's magnitude term weighs μ: λ2·Σ exp(|μ| − τ) per image, its gradient in dmean, none in dz.
BOOST_AUTO_TEST_CASE(the_magnitude_term_of_the_mean) {
    const auto x = random_tensor<double>({2, 1, 4, 4}, 1);
    const auto mean = random_tensor<double>({2, 2, 2, 2}, 2, 0, 2.0);
    const auto logvar = tensor<double>::zeros({2, 2, 2, 2});
    const auto z = random_tensor<double>({2, 2, 2, 2}, 3, 0, 4.0);
    const loss::tokenizer_loss<loss::magnitude_regularizer> of_mean{{loss::magnitude_regularizer({.weight = 0.5, .tau = 1.0, .of_mean = true})}};
    const auto r = of_mean.evaluate(loss::tokenizer_outputs<double, cpu>{x.view(), x.view(), mean.view(), logvar.view(), z.view()});
    double expected = 0;
    for (const double m : mean.to_vector()) expected += 0.5 * std::exp(std::abs(m) - 1.0) / 2.0;
    BOOST_TEST(r.total == expected, tolerance(1e-12));
    const auto dmean = r.gradients.dmean.to_vector(), values = mean.to_vector();
    for (std::size_t i = 0; i < values.size(); ++i)
        BOOST_TEST(dmean[i] == 0.5 * (values[i] > 0 ? 1.0 : -1.0) * std::exp(std::abs(values[i]) - 1.0) / 2.0, tolerance(1e-12));
    for (const double g : r.gradients.dz.to_vector()) BOOST_TEST(g == 0.0);
}

BOOST_AUTO_TEST_SUITE_END()

BOOST_AUTO_TEST_SUITE(training)

// --loss sigma-vae end to end on a generated folder: the log holds the reconstruction and the
// magnitude term only, its σ² is the mean of the step's drawn σ_b², the encoder's logvar half of
// conv_out never moves from its initialization (no gradient reaches it) while the mean half
// does, and the trained run reloads with its noise law.
BOOST_AUTO_TEST_CASE(a_sigma_vae_run_trains_the_mean_only) {
    scratch_dir dir("sigma_vae");
    const auto folder = dir.path / "images";
    std::filesystem::create_directories(folder);
    for (int i = 0; i < 20; ++i) {  // the 20th is held out for the test split
        io::image img(16, 16, 1);
        for (std::int64_t y = 0; y < 16; ++y)
            for (std::int64_t x = 0; x < 16; ++x) img.at(y, x, 0) = static_cast<std::uint8_t>((y * 13 + x * (i + 3) * 5 + i * 17) % 256);
        io::write_png(folder / fmt::format("{:02d}.png", i), img);
    }
    jobs::tokenizer_job cfg;
    cfg.image_folder = folder.string();
    cfg.image_size = 16;
    cfg.channels = 1;
    cfg.model.ch = 8;
    cfg.model.ch_mult = {1, 2};
    cfg.model.num_res_blocks = 1;
    cfg.model.norm_groups = 4;
    cfg.model.z_channels = cfg.model.embed_dim = 2;
    cfg.loss = "sigma-vae";
    cfg.sigma_vae = {.scale = 0.7, .distribution = law::normal};
    cfg.steps = 3;
    cfg.batch = 4;
    cfg.warmup = 1;
    cfg.log_every = 1;
    cfg.checkpoint_every = 100;
    cfg.eval_images = 1;
    cfg.seed = 5;
    cfg.out = (dir.path / "run").string();
    const auto metrics = jobs::train_tokenizer(cfg);

    const auto log = log_lines(dir.path / "run" / "log.jsonl");
    BOOST_TEST_REQUIRE(log.size() == 3u);
    for (std::size_t i = 0; i < log.size(); ++i) {
        BOOST_TEST(log[i].contains("rec_l1"));
        BOOST_TEST(log[i].contains("magnitude"));
        BOOST_TEST(!log[i].contains("ve"));
        BOOST_TEST(!log[i].contains("kl"));
        double expected = 0;
        for (std::int64_t b = 0; b < cfg.batch; ++b) expected += std::pow(cfg.sigma_vae.sigma(cfg.seed, i, b), 2) / double(cfg.batch);
        BOOST_TEST(log[i].at("sigma2_mean").get<double>() == expected, tolerance(1e-5));
    }
    BOOST_TEST(metrics.at("config").at("sigma_vae_scale").get<double>() == 0.7);
    BOOST_TEST(metrics.at("config").at("sigma_vae_law").get<std::string>() == "normal");

    // quant_conv maps to 2·embed_dim = 4 moments: output rows 0-1 the mean, rows 2-3 the unused
    // logvar. (The encoder's own conv_out feeds both halves through quant_conv, so it trains whole.)
    const models::autoencoder_kl<float> initial([&] {
        auto c = cfg.model;
        c.in_channels = c.out_channels = 1;
        c.resolution = 16;
        return c;
    }(), cfg.seed);
    auto run = train::load_tokenizer_run<cpu>(dir.path / "run");
    BOOST_TEST_REQUIRE(run.sigma_vae.has_value());
    BOOST_TEST(run.sigma_vae->scale == 0.7);
    const auto find = [](auto& model, const std::string& name) {
        for (auto& [n, p] : nn::named_parameters(model))
            if (n == name) return p->value.to_vector();
        BOOST_FAIL("no parameter " << name);
        return std::vector<float>{};
    };
    auto& initial_model = const_cast<models::autoencoder_kl<float>&>(initial);
    for (const char* name : {"quant_conv.weight", "quant_conv.bias"}) {
        const auto before = find(initial_model, name), after = find(run.model, name);
        BOOST_TEST_REQUIRE(before.size() == after.size());
        const std::size_t half = before.size() / 2;  // output channels lead: the first half is the mean's
        const bool mean_moved = !std::equal(before.begin(), before.begin() + half, after.begin());
        const bool logvar_moved = !std::equal(before.begin() + half, before.end(), after.begin() + half);
        BOOST_TEST(mean_moved, name << ": the mean half trained");
        BOOST_TEST(!logvar_moved, name << ": the logvar half received no gradient");
    }
}

BOOST_AUTO_TEST_SUITE_END()
