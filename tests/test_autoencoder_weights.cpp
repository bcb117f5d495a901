#define BOOST_TEST_MODULE autoencoder_weights
#include <boost/test/unit_test.hpp>

#include <set>
#include <string>
#include <vector>

#include "support/errors.hpp"
#include "support/fixture.hpp"
#include "support/scratch_dir.hpp"
#include "vediff/backend/cpu.hpp"
#include "vediff/io/autoencoder_weights.hpp"
#include "vediff/models/autoencoder.hpp"

using namespace vediff;
using namespace vediff::testing;

namespace {
// Three levels, two res blocks, channel changes (nin_shortcut), mid attention, no level attention.
models::autoencoder_config small_rgb() {
    models::autoencoder_config c;
    c.in_channels = c.out_channels = 3;
    c.ch = 8;
    c.ch_mult = {1, 2, 2};
    c.num_res_blocks = 2;
    c.norm_groups = 4;
    c.z_channels = c.embed_dim = 4;
    c.resolution = 16;
    return c;
}

std::vector<std::vector<float>> all_values(models::autoencoder_kl<float>& ae) {
    std::vector<std::vector<float>> v;
    for (auto& [name, p] : nn::named_parameters(ae)) v.push_back(p->value.to_vector());
    return v;
}
} // namespace

// Names checked by hand against diffusers' AutoencoderKL state_dict (SD's VAE: 4 levels).
BOOST_AUTO_TEST_CASE(diffusers_names_by_hand) {
    const std::vector<std::pair<std::string, std::string>> cases{
        {"encoder.conv_in.weight", "encoder.conv_in.weight"},
        {"encoder.down.0.block.1.conv2.bias", "encoder.down_blocks.0.resnets.1.conv2.bias"},
        {"encoder.down.1.block.0.nin_shortcut.weight", "encoder.down_blocks.1.resnets.0.conv_shortcut.weight"},
        {"encoder.down.2.downsample.conv.weight", "encoder.down_blocks.2.downsamplers.0.conv.weight"},
        {"encoder.mid.block_1.norm1.weight", "encoder.mid_block.resnets.0.norm1.weight"},
        {"encoder.mid.block_2.conv2.weight", "encoder.mid_block.resnets.1.conv2.weight"},
        {"encoder.mid.attn_1.norm.bias", "encoder.mid_block.attentions.0.group_norm.bias"},
        {"encoder.mid.attn_1.q.weight", "encoder.mid_block.attentions.0.to_q.weight"},
        {"decoder.mid.attn_1.proj_out.bias", "decoder.mid_block.attentions.0.to_out.0.bias"},
        {"encoder.norm_out.weight", "encoder.conv_norm_out.weight"},
        {"decoder.up.0.block.2.conv1.weight", "decoder.up_blocks.3.resnets.2.conv1.weight"},
        {"decoder.up.1.block.0.nin_shortcut.bias", "decoder.up_blocks.2.resnets.0.conv_shortcut.bias"},
        {"decoder.up.3.upsample.conv.bias", "decoder.up_blocks.0.upsamplers.0.conv.bias"},
        {"decoder.conv_out.weight", "decoder.conv_out.weight"},
        {"post_quant_conv.weight", "post_quant_conv.weight"},
    };
    for (const auto& [ldm, diffusers] : cases) BOOST_TEST(io::diffusers_name(ldm, 4) == diffusers, ldm);
    BOOST_TEST(contains(error_message<std::invalid_argument>([] { (void)io::diffusers_name("encoder.down.3.attn.0.q.weight", 4); }),
                        "attention inside a level"));
    BOOST_TEST(contains(error_message<std::invalid_argument>([] { (void)io::diffusers_name("decoder.up.4.block.0.conv1.weight", 4); }),
                        "beyond"));
}

// Every parameter of a real-sized tokenizer has a distinct diffusers name (the map is one to one).
BOOST_AUTO_TEST_CASE(diffusers_names_are_distinct_for_f8c4) {
    models::autoencoder_kl<float> ae(models::published_autoencoder("f8c4", 32), 0);
    std::set<std::string> names;
    std::size_t count = 0;
    for (auto& [name, p] : nn::named_parameters(ae)) {
        names.insert(io::diffusers_name(name, 4));
        ++count;
    }
    BOOST_TEST(names.size() == count);
    BOOST_TEST(names.count("decoder.up_blocks.0.upsamplers.0.conv.weight") == 1u);
    BOOST_TEST(names.count("decoder.up_blocks.3.resnets.2.conv2.weight") == 1u);  // the decoder has num_res_blocks + 1
}

// Saved in either naming and loaded into a model of another seed: every weight comes back; the
// diffusers file holds the attention projections as (C, C) linear weights.
BOOST_AUTO_TEST_CASE(round_trips_in_both_namings) {
    scratch_dir dir("autoencoder_weights");
    models::autoencoder_kl<float> source(small_rgb(), 1);
    for (const auto naming : {io::weight_naming::ldm, io::weight_naming::diffusers}) {
        BOOST_TEST_CONTEXT(io::to_string(naming)) {
            const auto path = dir.path / fmt::format("{}.safetensors", io::to_string(naming));
            io::save_autoencoder_weights(path, source, naming);
            const io::safetensors_file f(path);
            BOOST_TEST((io::detect_weight_naming(f) == naming));
            if (naming == io::weight_naming::diffusers)
                BOOST_TEST(f.entry("encoder.mid_block.attentions.0.to_q.weight").shape == (tensor_shape{16, 16}));
            models::autoencoder_kl<float> target(small_rgb(), 2);
            BOOST_TEST_REQUIRE(all_values(target) != all_values(source));
            BOOST_TEST((io::load_autoencoder_weights(path, target) == naming));
            BOOST_TEST(all_values(target) == all_values(source));
        }
    }
}

// LDM checkpoints carry their loss module (loss.discriminator.*, loss.perceptual_loss.*): skipped.
// A tensor that belongs to neither, a missing one and a mis-shaped one are named, and the model
// is left as it was.
BOOST_AUTO_TEST_CASE(foreign_missing_and_misshaped_tensors_are_named) {
    scratch_dir dir("autoencoder_weights_bad");
    models::autoencoder_kl<float> source(small_rgb(), 1);
    auto tensors = io::load_tensors<float>([&] {
        const auto p = dir.path / "all.safetensors";
        io::save_autoencoder_weights(p, source, io::weight_naming::ldm);
        return p;
    }());
    tensors.emplace("loss.discriminator.main.0.weight", tensor<float>::zeros({2, 3, 4, 4}));
    io::save_tensors(dir.path / "with_loss.safetensors", tensors);
    models::autoencoder_kl<float> target(small_rgb(), 2);
    (void)io::load_autoencoder_weights(dir.path / "with_loss.safetensors", target);
    BOOST_TEST(all_values(target) == all_values(source));

    auto bad = io::load_tensors<float>(dir.path / "all.safetensors");
    bad.emplace("model_ema.decay", tensor<float>::zeros({1}));
    bad.erase("decoder.conv_out.bias");
    bad["encoder.conv_in.weight"] = tensor<float>::zeros({8, 3, 1, 1});
    io::save_tensors(dir.path / "bad.safetensors", bad);
    models::autoencoder_kl<float> untouched(small_rgb(), 3);
    const auto before = all_values(untouched);
    const auto message = io_error_message([&] { (void)io::load_autoencoder_weights(dir.path / "bad.safetensors", untouched); });
    BOOST_TEST(contains(message, "'model_ema.decay'"), message);
    BOOST_TEST(contains(message, "'decoder.conv_out.bias'"), message);
    BOOST_TEST(contains(message, "'encoder.conv_in.weight' has shape (8, 3, 1, 1)"), message);
    BOOST_TEST(contains(message, "bad.safetensors (ldm naming)"), message);
    BOOST_TEST(all_values(untouched) == before);
}

// VA-VAE's attention at 16×16 sits inside a level: such a tokenizer has no diffusers naming.
BOOST_AUTO_TEST_CASE(level_attention_cannot_be_saved_in_diffusers_naming) {
    scratch_dir dir("autoencoder_weights_attention");
    auto c = small_rgb();
    c.attn_resolutions = {8};
    models::autoencoder_kl<float> ae(c, 0);
    const auto message = error_message<std::invalid_argument>(
        [&] { io::save_autoencoder_weights(dir.path / "x.safetensors", ae, io::weight_naming::diffusers); });
    BOOST_TEST(contains(message, ".attn.0."), message);
    BOOST_TEST(!std::filesystem::exists(dir.path / "x.safetensors"));
}

BOOST_AUTO_TEST_CASE(published_architectures) {
    const auto f8 = models::published_autoencoder("f8c4");
    BOOST_TEST(f8.downsampling_factor() == 8);
    BOOST_TEST(f8.latent_resolution() == 32);
    BOOST_TEST(f8.z_channels == 4);
    BOOST_TEST(f8.attn_resolutions.empty());
    const auto f16 = models::published_autoencoder("f16d32");
    BOOST_TEST(f16.downsampling_factor() == 16);
    BOOST_TEST(f16.embed_dim == 32);
    BOOST_TEST(f16.attn_resolutions == std::vector<std::int64_t>{16});
    BOOST_TEST(contains(error_message<std::invalid_argument>([] { (void)models::published_autoencoder("f4"); }), "'f4'"));
    // SD's VAE: 83.65 M parameters (diffusers' AutoencoderKL of stabilityai/sd-vae-ft-mse).
    models::autoencoder_kl<float> sd(f8, 0);
    BOOST_TEST(nn::parameter_count(sd) == 83653863);
}

// The published architectures at 1/16 width against PyTorch (tests/fixtures/make_published_tokenizers.py):
// the LDM-named state_dict PyTorch wrote loads (strictly), encode and decode agree within 1e-4 of
// the largest magnitude, and the diffusers export of f8c4 reloads to the same outputs.
BOOST_AUTO_TEST_CASE(published_architectures_match_pytorch) {
    const auto f = load_fixture("published_tokenizers.txt");
    scratch_dir dir("published_tokenizers");
    for (const std::string name : {"f8c4", "f16d32"}) {
        BOOST_TEST_CONTEXT(name) {
            auto c = models::published_autoencoder(name, 32);
            c.ch = 8;
            c.norm_groups = 4;
            if (name == "f16d32") c.attn_resolutions = {2};  // the coarsest level, as 16 is at 256 px
            models::autoencoder_kl<float> ae(c, 0);
            BOOST_TEST((io::load_autoencoder_weights(std::string(VEDIFF_FIXTURE_DIR) + "/" + name + "_ldm.safetensors", ae) ==
                        io::weight_naming::ldm));
            const auto run = [&](models::autoencoder_kl<float>& model) {
                nn::no_grad off;
                const auto x = f.get<float>(name + ".x");
                const auto z = f.get<float>(name + ".z");
                return std::make_pair(model.encode(x.view()), model.decode(z.view()));
            };
            const auto scale = [&](const std::string& key) {
                double m = 0;
                for (const double v : f.entries.at(key).second) m = std::max(m, std::abs(v));
                return m;
            };
            const auto [moments, x_hat] = run(ae);
            check_close(moments, f.get<double>(name + ".moments"), 0, 1e-4 * scale(name + ".moments"), name + " moments");
            check_close(x_hat, f.get<double>(name + ".x_hat"), 0, 1e-4 * scale(name + ".x_hat"), name + " x_hat");
            if (name == "f8c4") {
                const auto path = dir.path / "f8c4_diffusers.safetensors";
                io::save_autoencoder_weights(path, ae, io::weight_naming::diffusers);
                models::autoencoder_kl<float> reloaded(c, 7);
                BOOST_TEST((io::load_autoencoder_weights(path, reloaded) == io::weight_naming::diffusers));
                const auto [moments2, x_hat2] = run(reloaded);
                BOOST_TEST(moments2.to_vector() == moments.to_vector());
                BOOST_TEST(x_hat2.to_vector() == x_hat.to_vector());
            }
        }
    }
}
