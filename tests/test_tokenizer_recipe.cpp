#define BOOST_TEST_MODULE tokenizer_recipe
#include <boost/test/unit_test.hpp>

#include <algorithm>
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
#include "vediff/jobs/experiment_preset.hpp"
#include "vediff/jobs/export_tokenizer.hpp"
#include "vediff/jobs/train_tokenizer.hpp"
#include "vediff/train/tokenizer_critics.hpp"

using namespace vediff;
using namespace vediff::testing;

namespace {
using critics_type = train::tokenizer_critics<double, cpu, distributed::single_process>;

models::autoencoder_config tiny_rgb_tokenizer() {
    models::autoencoder_config c;
    c.in_channels = c.out_channels = 3;
    c.ch = 8;
    c.ch_mult = {1, 2};
    c.norm_groups = 4;
    c.z_channels = c.embed_dim = 2;
    c.resolution = 32;
    return c;
}

train::critic_config tiny_critics() {
    return {.perceptual_weight = 0.7, .lpips_weights = "random", .lpips_width_divisor = 32, .disc_weight = 0.5, .disc_start = 0,
            .disc_ndf = 4, .disc_lr = 1e-3};
}

// Σ|x − x̂| / N (LDM's per-image sum) and its gradient, by the library's own policy.
double reconstruction(const tensor<double>& x, const tensor_view<double, cpu>& x_hat, tensor<double>* dx_hat = nullptr) {
    const loss::tokenizer_loss<loss::reconstruction<loss::l1>> rec;
    const auto latent = tensor<double>::zeros({x.dim(0), 1, 1, 1});
    auto r = rec.evaluate(loss::tokenizer_outputs<double, cpu>{x.view(), x_hat, latent.view(), latent.view(), latent.view()});
    if (dx_hat) *dx_hat = std::move(r.gradients.dx_hat);
    return r.total;
}

double mean_of(const tensor<double>& t) {
    double s = 0;
    for (const auto v : t.to_vector()) s += v;
    return s / double(t.numel());
}
/// A tiny RGB tokenizer, its critics, a batch, and one generator() call on the reconstruction of
/// fixed latents: dx_hat holds the reconstruction's gradient plus the critics'.
struct generator_step {
    distributed::single_process comm;
    models::autoencoder_kl<double> ae{tiny_rgb_tokenizer(), 5};
    critics_type critics{tiny_critics(), 3, 11, comm};
    tensor<double> x = random_tensor<double>({2, 3, 32, 32}, 1, 0, 0.5);
    tensor<double> z = random_tensor<double>({2, 2, 16, 16}, 2);
    tensor<double> x_hat = ae.decode(z);
    tensor<double> dx_hat;
    train::generator_terms terms;

    generator_step() {
        (void)reconstruction(x, x_hat.view(), &dx_hat);
        terms = critics.generator(x.view(), x_hat.view(), dx_hat.view(), std::get<2>(ae.decoder.head.layers), 0,
                                  loss::reduction::per_image_sum);
    }
};
} // namespace

// LDM's adaptive weight: ‖∂L_nll/∂w‖ / (‖∂L_G/∂w‖ + 1e-4) · disc_weight with w the decoder's
// conv_out weight, both gradients here by central differences through decode, LPIPS and the
// discriminator (in training mode, as the step runs it).
BOOST_AUTO_TEST_CASE(adaptive_weight_matches_finite_differences) {
    generator_step step;
    auto& [comm, ae, critics, x, z, x_hat, dx_hat, terms] = step;
    auto& conv_out = std::get<2>(ae.decoder.head.layers);

    const double s = 3.0 * 32 * 32;  // LDM adds the per-image LPIPS to each of the C·H·W pixels
    const auto nll = [&] {
        nn::no_grad off;
        const auto y = ae.decode(z);
        return reconstruction(x, y.view()) + 0.7 * s * mean_of(critics.perceptual_network()->forward(y.view(), x.view()));
    };
    const auto generator = [&] {
        nn::no_grad off;
        const auto y = ae.decode(z);
        return -mean_of(critics.discriminator()->forward(y.view()));
    };
    const auto w = conv_out.weight.value.view();
    const auto all = probe_indices(w.numel(), w.numel());
    const auto norm = [](const std::vector<double>& g) {
        double s2 = 0;
        for (const auto v : g) s2 += v * v;
        return std::sqrt(s2);
    };
    const double rec_norm = norm(numeric_gradient<double>(w, nll, all, 1e-6));
    const double g_norm = norm(numeric_gradient<double>(w, generator, all, 1e-6));
    const double ratio = rec_norm / (g_norm + 1e-4);
    BOOST_TEST_REQUIRE(ratio > 0.0);
    BOOST_TEST_REQUIRE(ratio < 1e4);  // not clamped: the value itself is compared
    BOOST_TEST(terms.d_weight == ratio * 0.5, boost::test_tools::tolerance(1e-6));
    BOOST_TEST(terms.g == generator(), boost::test_tools::tolerance(1e-12));
    BOOST_TEST(terms.adversarial == terms.d_weight * terms.g, boost::test_tools::tolerance(1e-12));
}

// What generator() leaves in dx̂ is the gradient of rec + w_p·s·LPIPS + λ_adv·L_G with respect to
// x̂ (λ_adv a constant, as LDM detaches it), here against central differences in x̂.
BOOST_AUTO_TEST_CASE(generator_gradient_is_the_whole_loss_gradient) {
    generator_step step;
    auto& [comm, ae, critics, x, z, x_hat, dx_hat, terms] = step;
    BOOST_TEST_REQUIRE(terms.d_weight > 0.0);
    BOOST_TEST(terms.perceptual == 0.7 * 3 * 32 * 32 * terms.lpips, boost::test_tools::tolerance(1e-12));
    BOOST_TEST(terms.lpips > 0.0);  // the random network's heads are made non-negative

    auto probe_input = x_hat.clone();
    const auto total = [&] {
        nn::no_grad off;
        return reconstruction(x, probe_input.view()) +
               0.7 * 3 * 32 * 32 * mean_of(critics.perceptual_network()->forward(probe_input.view(), x.view())) +
               terms.d_weight * -mean_of(critics.discriminator()->forward(probe_input.view()));
    };
    const auto probes = probe_indices(probe_input.numel(), 40);
    const auto numeric = numeric_gradient<double>(probe_input.view(), total, probes, 1e-6);
    const double err = relative_error(gather<double>(dx_hat.view(), probes), numeric);
    BOOST_TEST(err < 1e-5, "relative error " << err);
}

// Under element_mean the LPIPS term is w_p · mean LPIPS (no C·H·W factor), and before disc_start
// neither the adversarial term nor the discriminator's step runs.
BOOST_AUTO_TEST_CASE(element_mean_scale_and_disc_start) {
    distributed::single_process comm;
    auto cfg = tiny_critics();
    cfg.disc_start = 3;
    models::autoencoder_kl<double> ae(tiny_rgb_tokenizer(), 5);
    critics_type critics(cfg, 3, 11, comm);
    const auto x = random_tensor<double>({2, 3, 32, 32}, 1, 0, 0.5);
    const auto z = random_tensor<double>({2, 2, 16, 16}, 2);
    const auto x_hat = ae.decode(z);
    auto dx_hat = tensor<double>::zeros(x_hat.shape());
    const auto before = critics.discriminator()->main.template get<0>().weight.value.clone();
    const auto t = critics.generator(x.view(), x_hat.view(), dx_hat.view(), std::get<2>(ae.decoder.head.layers), 2,
                                     loss::reduction::element_mean);
    BOOST_TEST(t.perceptual == 0.7 * t.lpips, boost::test_tools::tolerance(1e-12));
    BOOST_TEST(t.d_weight == 0.0);
    BOOST_TEST(t.adversarial == 0.0);
    BOOST_TEST(!critics.train_discriminator(x.view(), x_hat.view(), 2).trained);
    BOOST_TEST(critics.discriminator()->main.template get<0>().weight.value.to_vector() == before.to_vector(),
               boost::test_tools::per_element());
    const auto d = critics.train_discriminator(x.view(), x_hat.view(), 3);
    BOOST_TEST(d.trained);
    BOOST_TEST(d.d > 0.0);
    BOOST_TEST(critics.discriminator()->main.template get<0>().weight.value.to_vector() != before.to_vector());
}

// The discriminator's step lowers its loss on a fixed pair of batches (it learns to tell them apart).
BOOST_AUTO_TEST_CASE(discriminator_steps_lower_its_loss) {
    distributed::single_process comm;
    auto cfg = tiny_critics();
    cfg.perceptual_weight = 0;
    critics_type critics(cfg, 3, 11, comm);
    const auto real = random_tensor<double>({4, 3, 32, 32}, 1, 0, 0.5);
    const auto fake = random_tensor<double>({4, 3, 32, 32}, 3, 0, 0.1);
    const double first = critics.train_discriminator(real.view(), fake.view(), 0).d;
    double last = first;
    for (int step = 1; step < 30; ++step) last = critics.train_discriminator(real.view(), fake.view(), step).d;
    BOOST_TEST(last < 0.5 * first, "first " << first << ", after 30 steps " << last);
}

BOOST_AUTO_TEST_CASE(bad_configurations_are_named) {
    distributed::single_process comm;
    const auto failure = [&](const train::critic_config& cfg, std::int64_t channels) {
        try {
            critics_type c(cfg, channels, 0, comm);
        } catch (const std::exception& e) {
            return std::string(e.what());
        }
        return std::string("<no error>");
    };
    auto cfg = tiny_critics();
    BOOST_TEST(contains(failure(cfg, 1), "1 channel"), failure(cfg, 1));
    cfg.lpips_weights.clear();
    BOOST_TEST(contains(failure(cfg, 3), "--lpips"), failure(cfg, 3));
    cfg = tiny_critics();
    cfg.disc_loss = "wasserstein";
    BOOST_TEST(contains(failure(cfg, 3), "wasserstein"), failure(cfg, 3));
    cfg = tiny_critics();
    cfg.lpips_weights = "/no/such/lpips.safetensors";
    BOOST_TEST(contains(failure(cfg, 3), "/no/such/lpips.safetensors"), failure(cfg, 3));
    cfg = tiny_critics();
    cfg.disc_start = -1;
    BOOST_TEST(contains(failure(cfg, 3), "--disc-start -1"), failure(cfg, 3));
}

// The recipe end to end on a generated 32×32 colour folder: VE + LPIPS + PatchGAN from step 2,
// interrupted after step 2 and resumed, equals the uninterrupted run in every logged term; the
// checkpoint carries the discriminator and its optimizer's moments.
BOOST_AUTO_TEST_CASE(recipe_trains_and_resumes_exactly) {
    scratch_dir dir("tokenizer_recipe");
    const auto folder = dir.path / "images";
    std::filesystem::create_directories(folder / "shapes");
    for (int i = 0; i < 24; ++i) {
        io::image img(32, 32, 3);
        for (std::int64_t y = 0; y < 32; ++y)
            for (std::int64_t xx = 0; xx < 32; ++xx) {
                const bool inside = (xx - 8 - i % 16) * (xx - 8 - i % 16) + (y - 16) * (y - 16) < 36 + i;
                for (int c = 0; c < 3; ++c)
                    img.pixels[static_cast<std::size_t>((y * 32 + xx) * 3 + c)] =
                        static_cast<std::uint8_t>(inside ? 40 + 70 * c : (y * 8 + xx * (c + 1) * 2 + i * 9) % 256);
            }
        io::write_png(folder / "shapes" / fmt::format("{:02d}.png", i), img);
    }
    jobs::tokenizer_job cfg;
    cfg.image_folder = folder.string();
    cfg.image_size = 32;
    cfg.channels = 3;
    cfg.model = tiny_rgb_tokenizer();
    cfg.critics = {.perceptual_weight = 1, .lpips_weights = "random", .lpips_width_divisor = 32, .disc_weight = 0.5, .disc_start = 2,
                   .disc_ndf = 4};
    cfg.steps = 4;
    cfg.batch = 4;
    cfg.warmup = 1;
    cfg.log_every = 1;
    cfg.checkpoint_every = 100;
    cfg.eval_images = 2;
    const loss::tokenizer_loss<loss::reconstruction<loss::l1>, loss::variance_expansion, loss::magnitude_regularizer> ve;
    distributed::single_process comm;

    cfg.out = (dir.path / "straight").string();
    (void)jobs::tokenizer_detail::train<cpu>(cfg, ve, comm);
    cfg.out = (dir.path / "resumed").string();
    cfg.stop_after = 2;
    (void)jobs::tokenizer_detail::train<cpu>(cfg, ve, comm);
    const io::safetensors_file halfway(dir.path / "resumed" / "checkpoint" / "train_state.safetensors");
    const auto disc_halfway = halfway.get<float>("discriminator.main.0.weight").to_vector();
    BOOST_TEST(halfway.contains("discriminator.main.3.running_mean"));
    cfg.stop_after = 0;
    cfg.resume = true;
    (void)jobs::tokenizer_detail::train<cpu>(cfg, ve, comm);

    const auto lines = [](const std::filesystem::path& p) {
        std::vector<nlohmann::json> v;
        std::ifstream in(p);
        for (std::string line; std::getline(in, line);) v.push_back(nlohmann::json::parse(line));
        return v;
    };
    const auto straight = lines(dir.path / "straight" / "log.jsonl"), resumed = lines(dir.path / "resumed" / "log.jsonl");
    BOOST_TEST_REQUIRE(straight.size() == 4u);
    BOOST_TEST_REQUIRE(resumed.size() == 4u);
    for (std::size_t i = 0; i < 4; ++i) {
        for (const char* key : {"loss", "rec_l1", "ve", "magnitude", "perceptual", "lpips", "g", "d_weight", "adversarial", "d",
                                "logits_real", "logits_fake", "sigma2_mean"})
            BOOST_TEST(straight[i].at(key) == resumed[i].at(key), "step " << i + 1 << " " << key);
        const bool adversarial = i >= 2;  // steps 3 and 4 (indices 2, 3 ≥ disc_start)
        BOOST_TEST((straight[i].at("d_weight").get<double>() > 0) == adversarial, "step " << i + 1);
        BOOST_TEST((straight[i].at("d").get<double>() > 0) == adversarial, "step " << i + 1);
        BOOST_TEST(straight[i].at("lpips").get<double>() > 0.0);
    }
    const io::safetensors_file final_state(dir.path / "resumed" / "checkpoint" / "train_state.safetensors");
    BOOST_TEST(final_state.get<float>("discriminator.main.0.weight").to_vector() != disc_halfway);
    BOOST_TEST(final_state.contains("discriminator_optimizer.main.0.weight.exp_avg"));

    // Export in both namings; each reloads to the trained weights.
    auto trained = train::load_tokenizer_run<cpu>(dir.path / "resumed");
    const auto weights = [](auto& model) {
        std::vector<std::vector<float>> v;
        for (auto& [name, p] : nn::named_parameters(model)) v.push_back(p->value.to_vector());
        return v;
    };
    (void)jobs::export_tokenizer({.tokenizer = (dir.path / "resumed").string(), .naming = "ldm", .out = (dir.path / "ve_ldm.safetensors").string()});
    const auto diffusers = jobs::export_tokenizer(
        {.tokenizer = (dir.path / "resumed").string(), .naming = "diffusers", .out = (dir.path / "ve_diffusers").string()});
    for (const auto& file : {dir.path / "ve_ldm.safetensors", dir.path / "ve_diffusers" / "diffusion_pytorch_model.safetensors"}) {
        models::autoencoder_kl<float> reloaded(cfg.model, 99);
        (void)io::load_autoencoder_weights(file, reloaded);
        BOOST_TEST(weights(reloaded) == weights(trained.model), file.string());
    }
    std::ifstream config_file(dir.path / "ve_diffusers" / "config.json");
    const auto config = nlohmann::json::parse(config_file);
    BOOST_TEST(config.at("_class_name").get<std::string>() == "AutoencoderKL");
    BOOST_TEST(config.at("block_out_channels") == nlohmann::json::array({8, 16}));
    BOOST_TEST(config.at("layers_per_block").get<int>() == 1);
    BOOST_TEST(config.at("latent_channels").get<int>() == 2);
    // SD's scaling_factor: 1/std of all the run's test latent elements (pooled from the metrics'
    // per-channel statistics over eval_images × 16 × 16 values each).
    std::ifstream metrics_file(dir.path / "resumed" / "metrics.json");
    const auto metrics = nlohmann::json::parse(metrics_file);
    const auto mean = metrics.at("latent_channel_mean").get<std::vector<double>>(), sd = metrics.at("latent_channel_std").get<std::vector<double>>();
    const std::int64_t per_channel = metrics.at("eval_images").get<std::int64_t>() * 16 * 16;
    BOOST_TEST(per_channel > 1);
    BOOST_TEST(config.at("scaling_factor").get<double>() == 1 / diffusion::pooled_stddev(mean, sd, per_channel),
               boost::test_tools::tolerance(1e-12));
    BOOST_TEST(config.at("scaling_factor").get<double>() != 1.0);
    BOOST_TEST(diffusers.at("scaling_factor").get<double>() == config.at("scaling_factor").get<double>());
}

// The paper's headline recipe at CI size: a "pretrained" f8 tokenizer (LDM's f8 layout, ch_mult
// 1,2,4,4 with attention in the mid block, narrow; random weights of seed 77) given in diffusers
// naming, fine-tuned with VE + LPIPS + PatchGAN on a generated 64×64 colour folder through
// init_from, then exported in LDM naming. Fine-tuning starts from the file: after 2 AdamW steps of
// lr 1e-4 every weight is within a few lr of the checkpoint's and far from the seed's own init.
BOOST_AUTO_TEST_CASE(fine_tunes_an_f8_checkpoint_given_in_diffusers_naming) {
    scratch_dir dir("tokenizer_finetune");
    const auto folder = dir.path / "images";
    std::filesystem::create_directories(folder / "colours");
    for (int i = 0; i < 24; ++i) {
        io::image img(64, 64, 3);
        for (std::int64_t y = 0; y < 64; ++y)
            for (std::int64_t xx = 0; xx < 64; ++xx)
                for (int c = 0; c < 3; ++c) {
                    const bool square = std::abs(xx - 20 - i) < 10 && std::abs(y - 32) < 8 + i % 12;
                    img.pixels[static_cast<std::size_t>((y * 64 + xx) * 3 + c)] =
                        static_cast<std::uint8_t>(square ? 200 - 60 * c : (xx * (c + 2) + y * 3 + i * 31) % 256);
                }
        io::write_png(folder / "colours" / fmt::format("{}.png", i), img);
    }
    models::autoencoder_config f8;
    f8.in_channels = f8.out_channels = 3;
    f8.ch = 32;
    f8.ch_mult = {1, 2, 4, 4};
    f8.z_channels = f8.embed_dim = 4;
    f8.resolution = 64;
    BOOST_TEST_REQUIRE(f8.downsampling_factor() == 8);
    models::autoencoder_kl<float> pretrained(f8, 77);
    const auto checkpoint = dir.path / "pretrained_diffusers.safetensors";
    io::save_autoencoder_weights(checkpoint, pretrained, io::weight_naming::diffusers);

    jobs::tokenizer_job cfg;
    cfg.image_folder = folder.string();
    cfg.image_size = 64;
    cfg.channels = 3;
    cfg.model = f8;
    cfg.init_from = checkpoint.string();
    cfg.critics = {.perceptual_weight = 1, .lpips_weights = "random", .lpips_width_divisor = 32, .disc_weight = 0.5, .disc_start = 0,
                   .disc_ndf = 8};
    cfg.lr = 1e-4;
    cfg.steps = 2;
    cfg.batch = 4;
    cfg.warmup = 0;
    cfg.log_every = 1;
    cfg.checkpoint_every = 100;
    cfg.eval_images = 2;
    cfg.out = (dir.path / "run").string();
    const loss::tokenizer_loss<loss::reconstruction<loss::l1>, loss::variance_expansion, loss::magnitude_regularizer> ve;
    distributed::single_process comm;
    (void)jobs::tokenizer_detail::train<cpu>(cfg, ve, comm);

    auto tuned = train::load_tokenizer_run<cpu>(dir.path / "run");
    models::autoencoder_kl<float> own_init(f8, cfg.seed);
    double from_checkpoint = 0, from_own_init = 0, moved = 0;
    auto p_tuned = nn::named_parameters(tuned.model);
    auto p_pre = nn::named_parameters(pretrained);
    auto p_own = nn::named_parameters(own_init);
    BOOST_TEST_REQUIRE(p_tuned.size() == p_pre.size());
    for (std::size_t k = 0; k < p_tuned.size(); ++k) {
        const auto t = p_tuned[k].second->value.to_vector(), a = p_pre[k].second->value.to_vector(), b = p_own[k].second->value.to_vector();
        for (std::size_t i = 0; i < t.size(); ++i) {
            from_checkpoint = std::max(from_checkpoint, double(std::abs(t[i] - a[i])));
            from_own_init = std::max(from_own_init, double(std::abs(t[i] - b[i])));
        }
        moved += t != a;
    }
    BOOST_TEST(from_checkpoint <= 5 * 2 * cfg.lr);
    BOOST_TEST(from_own_init > 0.05);
    BOOST_TEST(moved > 0.9 * double(p_tuned.size()));  // it did train

    const auto exported = dir.path / "ve_f8_ldm.safetensors";
    (void)jobs::export_tokenizer({.tokenizer = (dir.path / "run").string(), .naming = "ldm", .out = exported.string()});
    models::autoencoder_kl<float> reloaded(f8, 99);
    BOOST_TEST((io::load_autoencoder_weights(exported, reloaded) == io::weight_naming::ldm));
    auto p_reloaded = nn::named_parameters(reloaded);
    for (std::size_t k = 0; k < p_tuned.size(); ++k)
        BOOST_TEST(p_reloaded[k].second->value.to_vector() == p_tuned[k].second->value.to_vector(), p_tuned[k].first);
}

// The options added since (critics, architecture, init_from, latent_scaling) are written only when
// used: the paper experiment committed under docs/runs (made before they existed) still matches
// the preset, so `vediff experiment --preset paper --out docs/runs/experiment-paper` resumes it
// instead of refusing a directory "of another preset or version".
BOOST_AUTO_TEST_CASE(the_committed_paper_experiment_still_matches_its_preset) {
    const auto path = std::filesystem::path(VEDIFF_FIXTURE_DIR) / ".." / ".." / "docs" / "runs" / "experiment-paper" / "preset.json";
    std::ifstream in(path);
    BOOST_TEST_REQUIRE(in.good(), path.string());
    const auto committed = nlohmann::json::parse(in);
    const auto current = jobs::make_preset("paper").to_json();
    BOOST_TEST(committed == current, "docs/runs preset.json differs from make_preset(\"paper\"): " << nlohmann::json::diff(committed, current).dump());
    auto with_critics = jobs::make_preset("paper").tokenizer;
    with_critics.critics.disc_weight = 0.5;
    BOOST_TEST(with_critics.to_json().contains("critics"));
    BOOST_TEST(!jobs::make_preset("paper").tokenizer.to_json().contains("critics"));
}
