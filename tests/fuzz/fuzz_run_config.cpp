// Run configurations as JSON, as --resume, sample and load_tokenizer_run read them back from a
// checkpoint's metadata, and as the forward tool reads --config: the DiT run, the tokenizer's
// model and its σ-VAE noise, and the model configs of io/model_config.hpp.
#include "harness.hpp"
#include "vediff/backend/cpu.hpp"
#include "vediff/io/model_config.hpp"
#include "vediff/train/dit_run.hpp"
#include "vediff/train/tokenizer_run.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    nlohmann::json j;
    try {
        j = nlohmann::json::parse(data, data + size);
    } catch (const nlohmann::json::exception&) {
        return 0;
    }
    using vediff::fuzz::expect_named_errors;
    expect_named_errors([&] { (void)vediff::train::dit_run_config::from_json(j); });
    expect_named_errors([&] { (void)vediff::train::sigma_vae_noise_of(j); });
    expect_named_errors([&] { (void)j.at("model").get<vediff::models::autoencoder_config>(); });
    expect_named_errors([&] { (void)vediff::io::autoencoder_config_from_json(j, "fuzz"); });
    expect_named_errors([&] { (void)vediff::io::transformer_config_from_json(j, "fuzz"); });
    return 0;
}
