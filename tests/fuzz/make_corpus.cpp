// Writes the seed corpora of tests/fuzz that vediff itself makes (small valid files; committed):
// safetensors files with and without checksums, a streamed latent cache, IDX files plain and
// gzip-compressed, and run configurations as vediff writes them. The image and .npz seeds are
// copies of tests/fixtures files (made by Pillow and NumPy). Run from the repository root:
//   g++ -std=c++20 -Iinclude -isystem /usr/include/eigen3 $(pkg-config --cflags libpng libjpeg libzip libxxhash stb) \
//       tests/fuzz/make_corpus.cpp -o /tmp/make_corpus $(pkg-config --libs libpng libjpeg libzip libxxhash stb) -lfmt -lz \
//       && /tmp/make_corpus tests/fuzz/corpus
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <span>
#include <string>
#include <vector>

#include <zlib.h>

#include "vediff/backend/cpu.hpp"
#include "vediff/io/safetensors.hpp"
#include "vediff/train/dit_run.hpp"
#include "vediff/train/latent_cache.hpp"

namespace fs = std::filesystem;
using namespace vediff;

namespace {
void write_bytes(const fs::path& p, const std::string& bytes) {
    std::ofstream out(p, std::ios::binary);
    out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}
tensor<float> ramp(const tensor_shape& shape) {
    tensor<float> t(shape);
    for (std::int64_t i = 0; i < t.numel(); ++i) t.data()[i] = 0.25f * float(i % 7) - 0.5f;
    return t;
}
} // namespace

int main(int argc, char** argv) {
    if (argc != 2) {
        std::fprintf(stderr, "usage: make_corpus CORPUS_DIR\n");
        return 2;
    }
    const fs::path root = argv[1];
    for (const char* h : {"safetensors", "latent_cache", "idx", "run_config"}) fs::create_directories(root / h);

    // safetensors: F32, F64, I32 and I64 tensors with metadata and checksums; one without checksums.
    {
        io::safetensors_writer w;
        const auto a = ramp({2, 3});
        w.add("encoder.conv_in.weight", a.view());
        tensor<double> b({4});
        for (int i = 0; i < 4; ++i) b.data()[i] = 0.5 * i;
        w.add("latent_mean", b.view());
        tensor<std::int32_t> c({3});
        for (int i = 0; i < 3; ++i) c.data()[i] = i;
        w.add("labels", c.view());
        tensor<std::int64_t> d({1});
        d.data()[0] = 7;
        w.add("count", d.view());
        w.add_metadata("format", "pt");
        w.write(root / "safetensors" / "checksummed.safetensors");
        const std::string data(2 * 4, '\0');
        write_bytes(root / "safetensors" / "plain.safetensors", io::safetensors_header({{"x", "F32", tensor_shape{2}}}, {{"format", "pt"}}) + data);
        std::string half = io::safetensors_header({{"h", "F16", tensor_shape{2}}, {"g", "BF16", tensor_shape{1}}}) + std::string(6, '\x3c');
        write_bytes(root / "safetensors" / "half.safetensors", half);
    }
    // A latent cache of 4 latents (2, 2, 2), written as encode streams it.
    (void)train::write_latent_cache(root / "latent_cache" / "cache.safetensors", 4, tensor_shape{2, 2, 2}, "tokenizer", "{}", [](auto&& append) {
        const auto z = ramp({2, 2, 2, 2});
        const std::vector<std::int32_t> labels{0, 1};
        append(z.view(), std::span<const std::int32_t>(labels));
        append(z.view(), std::span<const std::int32_t>(labels));
    });
    // IDX: images (3, 2, 2) and labels (3), plain and gzip-compressed.
    {
        const std::string images = std::string("\0\0\x08\x03", 4) + std::string("\0\0\0\x03\0\0\0\x02\0\0\0\x02", 12) + std::string("\x01\x02\x03\x04\x05\x06\x07\x08\x09\x0a\x0b\x0c", 12);
        const std::string labels = std::string("\0\0\x08\x01", 4) + std::string("\0\0\0\x03", 4) + std::string("\x00\x01\x09", 3);
        write_bytes(root / "idx" / "images.idx", images);
        write_bytes(root / "idx" / "labels.idx", labels);
        gzFile gz = gzopen((root / "idx" / "images.idx.gz").c_str(), "wb");
        gzwrite(gz, images.data(), static_cast<unsigned>(images.size()));
        gzclose(gz);
    }
    // Run configurations as vediff writes them.
    write_bytes(root / "run_config" / "dit_run.json", train::dit_run_config{}.to_json().dump());
    write_bytes(root / "run_config" / "tokenizer.json",
                R"({"model":{"in_channels":3,"out_channels":3,"ch":32,"ch_mult":[1,2,4,4],"num_res_blocks":1,"z_channels":4,"embed_dim":4,"resolution":64,"attn_resolutions":[],"norm_groups":32,"norm_eps":1e-06},"loss":"sigma-vae","sigma_vae_scale":2.5,"sigma_vae_law":"normal"})");
    write_bytes(root / "run_config" / "forward_dit.json", R"({"input_size":8,"patch_size":2,"in_channels":4,"hidden_size":64,"depth":2,"num_heads":4,"num_classes":10,"learn_sigma":false})");
    write_bytes(root / "run_config" / "forward_autoencoder.json", R"({"double_z":true,"z_channels":4,"resolution":64,"in_channels":3,"out_ch":3,"ch":32,"ch_mult":[1,2,4,4],"num_res_blocks":1,"attn_resolutions":[],"embed_dim":4})");
    return 0;
}
