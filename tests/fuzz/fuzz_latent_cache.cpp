// Loading a latent cache (a mapped safetensors file with its own consistency rules), then reading
// its first and last latent as a DiT trainer's batches would.
#include "harness.hpp"
#include "vediff/backend/cpu.hpp"
#include "vediff/train/latent_cache.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    const auto path = vediff::fuzz::input_file(data, size, ".latents.safetensors");
    vediff::fuzz::expect_named_errors([&] {
        const auto cache = vediff::train::load_latent_cache(path);
        volatile float sink = 0;
        if (cache.latents.numel() > 0) sink = cache.latents.data()[0] + cache.latents.data()[cache.latents.numel() - 1];
        (void)sink;
    });
    return 0;
}
