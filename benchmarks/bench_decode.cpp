// Streaming decode throughput (issue 18): JPEG photos of ImageNet's typical sizes decoded with
// libjpeg-turbo, cut with ADM's center_crop_arr to 256 and scaled to [−1, 1] by
// data::streaming_image_loader's worker threads, against the field's pipeline in PyTorch (PIL +
// center_crop_arr + a DataLoader with worker processes, benchmarks/torch_decode.py) in the same
// invocation. Then the stall: how long a training loop whose step takes S ms per batch waits for
// data once the prefetch ring is warm.
//   bench_decode [--images 320] [--size 256] [--workers 2] [--batch 32] [--batches 30] [--keep DIR]
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <thread>
#include <vector>

#include <cxxopts.hpp>
#include <fmt/format.h>
#include <stb_image_write.h>

#include "peer.hpp"
#include "vediff/core/random.hpp"
#include "vediff/data/image_stream.hpp"
#include "vediff/io/atomic_file.hpp"

using namespace vediff;
namespace fs = std::filesystem;
using bench::clock_type;

namespace {

double seconds_since(clock_type::time_point t) { return std::chrono::duration<double>(clock_type::now() - t).count(); }

/// A photo-like image: smooth colour fields, a few discs and sensor-like noise (JPEG's work depends
/// on the content; flat synthetic images decode unrealistically fast).
io::image photo(std::int64_t h, std::int64_t w, std::uint64_t seed) {
    io::image img(h, w, 3);
    const auto u = [&](std::uint64_t i) { return philox_uniform<double>(seed, 0, 0, i); };
    const double fx = 2 + 6 * u(0), fy = 2 + 6 * u(1), phase = 6.28 * u(2);
    for (std::int64_t y = 0; y < h; ++y)
        for (std::int64_t x = 0; x < w; ++x) {
            double v[3];
            for (int c = 0; c < 3; ++c)
                v[c] = 128 + 70 * std::sin(fx * double(x) / double(w) + phase + c) * std::cos(fy * double(y) / double(h) - c);
            for (int d = 0; d < 5; ++d) {
                const double cx = u(10 + d) * double(w), cy = u(20 + d) * double(h), r = (0.05 + 0.2 * u(30 + d)) * double(std::min(h, w));
                if ((double(x) - cx) * (double(x) - cx) + (double(y) - cy) * (double(y) - cy) < r * r)
                    for (int c = 0; c < 3; ++c) v[c] = 0.5 * v[c] + 127 * u(40 + 3 * d + c);
            }
            for (int c = 0; c < 3; ++c) {
                const double noise = 48 * (philox_uniform<double>(seed, 1, 0, static_cast<std::uint64_t>((y * w + x) * 3 + c)) - 0.5);
                img.at(y, x, c) = static_cast<std::uint8_t>(std::clamp(v[c] + noise, 0.0, 255.0));
            }
        }
    return img;
}

/// Writes n JPEGs (quality 90) of ImageNet's common sizes into dir; returns their total bytes.
std::size_t make_photos(const fs::path& dir, int n) {
    static constexpr std::int64_t sizes[][2] = {{375, 500}, {500, 375}, {333, 500}, {480, 640}, {400, 400}, {375, 500}, {500, 333}, {427, 640}};
    fs::create_directories(dir);
    std::size_t bytes = 0;
    for (int i = 0; i < n; ++i) {
        const auto [h, w] = sizes[i % 8];
        const auto img = photo(h, w, static_cast<std::uint64_t>(i));
        std::string out;
        const auto sink = [](void* ctx, void* data, int size) { static_cast<std::string*>(ctx)->append(static_cast<char*>(data), size); };
        if (!stbi_write_jpg_to_func(sink, &out, static_cast<int>(w), static_cast<int>(h), 3, img.pixels.data(), 90))
            throw std::runtime_error("bench_decode: stb_image_write failed");
        io::write_file_atomically(dir / fmt::format("{:05d}.jpg", i), [&](io::atomic_file& f) { f.write(out); });
        bytes += out.size();
    }
    return bytes;
}

} // namespace

int main(int argc, char** argv) {
    cxxopts::Options options("bench_decode", "Streaming JPEG decode + ADM crop throughput, and the training loop's stall, against PyTorch");
    options.add_options()("images", "JPEG files to generate", cxxopts::value<int>()->default_value("320"))(
        "size", "output side", cxxopts::value<std::int64_t>()->default_value("256"))(
        "workers", "decoding threads (and the peer's worker processes)", cxxopts::value<int>()->default_value("2"))(
        "batch", "batch size", cxxopts::value<std::int64_t>()->default_value("32"))(
        "batches", "timed batches", cxxopts::value<int>()->default_value("30"))(
        "step-ms", "simulated training step times for the stall, per batch", cxxopts::value<std::string>()->default_value("0,250,500,1000"))(
        "no-peer", "skip PyTorch")("keep", "write the JPEGs to this folder and keep them (e.g. to train on)", cxxopts::value<std::string>()->default_value(""));
    const auto a = options.parse(argc, argv);
    const int n = a["images"].as<int>(), workers = a["workers"].as<int>(), batches = a["batches"].as<int>();
    const std::int64_t size = a["size"].as<std::int64_t>(), batch = a["batch"].as<std::int64_t>();
    if (n < 1 || workers < 0 || batches < 1 || size < 1 || batch < 1 || batch > n) {
        fmt::print(stderr, "bench_decode: --images, --batches, --size and --batch must be ≥ 1 (batch ≤ images), --workers ≥ 0\n");
        return 2;
    }

    const bool keep = !a["keep"].as<std::string>().empty();
    const fs::path dir = keep ? fs::path(a["keep"].as<std::string>()) : fs::temp_directory_path() / fmt::format("vediff_bench_decode_{}", ::getpid());
    const auto made = clock_type::now();
    const std::size_t bytes = make_photos(dir / "photos", n);
    fmt::print("{} JPEGs (quality 90, 333×500 to 480×640, {:.1f} KiB average) made in {:.1f} s; load average {}\n", n,
               double(bytes) / n / 1024.0, seconds_since(made), bench::load_average());

    const auto files = data::list_labeled_images(dir / "photos");
    const data::image_preprocessing prep{.size = size, .channels = 3, .crop = data::crop_policy::adm};
    // One image at a time on this thread: decode alone, then decode + crop + scale.
    {
        const int k = std::min(n, 64);
        auto t = clock_type::now();
        for (int i = 0; i < k; ++i) (void)io::read_image(files.files[static_cast<std::size_t>(i)], 3);
        const double decode_ms = seconds_since(t) * 1000 / k;
        std::vector<float> out(static_cast<std::size_t>(prep.values_per_image()));
        t = clock_type::now();
        for (int i = 0; i < k; ++i) prep.load(files.files[static_cast<std::size_t>(i)], std::span<float>(out));
        const double load_ms = seconds_since(t) * 1000 / k;
        fmt::print("one thread: decode {:.2f} ms/image, decode + ADM crop to {} + scale {:.2f} ms/image\n", decode_ms, size, load_ms);
    }

    // Throughput: the loader's consumer takes batches as fast as they come (after the first).
    double ours = 0;
    {
        data::streaming_image_loader<float> loader(files, prep, batch, 0, {}, {.workers = workers, .prefetch_batches = 4});
        (void)loader.next();
        const auto t = clock_type::now();
        for (int b = 0; b < batches; ++b) (void)loader.next();
        ours = double(batches * batch) / seconds_since(t);
        fmt::print("vediff streaming_image_loader, {} workers, batch {}: {:.1f} images/s\n", workers, batch, ours);
    }
    double theirs = 0;
    if (!a.count("no-peer")) {
        bench::pause_between_libraries();
        const std::string cmd = fmt::format("/usr/bin/python3 {}/torch_decode.py {} {} {} {} {}", VEDIFF_BENCH_DIR, (dir / "photos").string(), size,
                                            workers, batch, batches);
        if (FILE* p = ::popen(cmd.c_str(), "r")) {
            char line[256];
            double value;
            while (std::fgets(line, sizeof line, p)) {
                if (std::sscanf(line, "per_image_ms %lf", &value) == 1) fmt::print("PyTorch, one process: PIL decode + center_crop_arr {:.2f} ms/image\n", value);
                if (std::sscanf(line, "images_per_s %lf", &value) == 1) theirs = value;
            }
            ::pclose(p);
        }
        if (theirs > 0)
            fmt::print("PyTorch DataLoader, {} workers, batch {}: {:.1f} images/s; vediff {:.2f}×\n", workers, batch, theirs, ours / theirs);
        else
            fmt::print("PyTorch peer: no result (is python3-torch installed?)\n");
    }

    // The stall: a loop whose step takes step_ms per batch (sleeping, so the workers have the
    // cores; a real step computes on them too). After the first batch (the ring filling), how
    // long next() waited on average.
    std::string list = a["step-ms"].as<std::string>();
    for (std::size_t at = 0; at < list.size();) {
        const std::size_t comma = std::min(list.find(',', at), list.size());
        const double step_ms = std::stod(list.substr(at, comma - at));
        at = comma + 1;
        data::streaming_image_loader<float> loader(files, prep, batch, 1, {}, {.workers = workers, .prefetch_batches = 4});
        (void)loader.next();
        const double warm = loader.stall_seconds();
        const int steps = std::min(batches, 12);
        for (int b = 0; b < steps; ++b) {
            std::this_thread::sleep_for(std::chrono::duration<double, std::milli>(step_ms));
            (void)loader.next();
        }
        fmt::print("step {:.0f} ms/batch: first batch waited {:.0f} ms, then {:.1f} ms per step on average ({} steps)\n", step_ms, warm * 1000,
                   (loader.stall_seconds() - warm) * 1000 / steps, steps);
    }
    if (!keep) fs::remove_all(dir);
    return 0;
}
