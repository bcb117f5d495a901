#define BOOST_TEST_MODULE image_stream
#include <boost/test/unit_test.hpp>

#include <cstdio>
#include <filesystem>
#include <fstream>

#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include <stb_image_write.h>

#include "support/errors.hpp"
#include "support/scratch_dir.hpp"
#include "vediff/backend/cpu.hpp"
#include "vediff/data/image_folder.hpp"
#include "vediff/data/image_stream.hpp"
#include "vediff/data/loader.hpp"
#include "vediff/io/image.hpp"
#include "vediff/jobs/encode_latents.hpp"
#include "vediff/jobs/train_tokenizer.hpp"

using namespace vediff;
using namespace vediff::testing;
namespace fs = std::filesystem;

namespace {

/// An image of its own per index, of a size other than the output's (so the crop resizes).
io::image numbered_image(int i, std::int64_t h = 20, std::int64_t w = 28) {
    io::image img(h, w, 3);
    for (std::int64_t y = 0; y < h; ++y)
        for (std::int64_t x = 0; x < w; ++x)
            for (int c = 0; c < 3; ++c) img.at(y, x, c) = static_cast<std::uint8_t>((y * (7 + i) + x * (3 + c) + 31 * i + 50 * c) % 256);
    return img;
}

/// A folder of n PNGs in two classes.
fs::path make_folder(const fs::path& root, int n) {
    for (int i = 0; i < n; ++i) {
        const auto sub = root / (i % 2 ? "odd" : "even");
        fs::create_directories(sub);
        io::write_png(sub / fmt::format("{:03d}.png", i), numbered_image(i));
    }
    return root;
}

void write_bytes(const fs::path& p, const std::string& s) {
    std::ofstream out(p, std::ios::binary);
    out.write(s.data(), static_cast<std::streamsize>(s.size()));
}

std::string jpeg_bytes(const io::image& img) {
    std::string out;
    const auto sink = [](void* ctx, void* data, int size) { static_cast<std::string*>(ctx)->append(static_cast<char*>(data), size); };
    BOOST_REQUIRE(stbi_write_jpg_to_func(sink, &out, static_cast<int>(img.width), static_cast<int>(img.height), img.channels,
                                         img.pixels.data(), 90));
    return out;
}

template <class Loader>
std::vector<std::pair<std::vector<float>, std::vector<std::int32_t>>> take(Loader& loader, int batches) {
    std::vector<std::pair<std::vector<float>, std::vector<std::int32_t>>> out;
    for (int k = 0; k < batches; ++k) {
        const auto b = loader.next();
        out.emplace_back(b.images.to_vector(), std::vector<std::int32_t>(b.labels.begin(), b.labels.end()));
    }
    return out;
}

const data::image_preprocessing resize_prep{.size = 16, .channels = 3, .crop = data::crop_policy::resize};

} // namespace

// With the stb crop, the stream's batches equal the in-memory loader's over load_image_folder
// (same order, same pixels, same labels) for three epochs, whatever the worker count.
BOOST_AUTO_TEST_CASE(streamed_batches_equal_the_in_memory_loaders) {
    scratch_dir dir("image_stream");
    const auto folder = make_folder(dir.path / "set", 11);
    const auto in_memory = data::load_image_folder<float>(folder, {.size = 16, .channels = 3});
    data::batch_loader<float> reference(in_memory.data, 4, 9);
    const auto expected = take(reference, 8);  // 2 batches per epoch: 4 epochs
    for (const int workers : {0, 1, 3}) {
        data::streaming_image_loader<float> stream(data::list_labeled_images(folder), resize_prep, 4, 9, {},
                                                   {.workers = workers, .prefetch_batches = 2});
        const auto got = take(stream, 8);
        for (std::size_t k = 0; k < got.size(); ++k) {
            BOOST_TEST(got[k].first == expected[k].first, "workers " << workers << " batch " << k);
            BOOST_TEST(got[k].second == expected[k].second, "workers " << workers << " batch " << k);
        }
        BOOST_TEST(stream.epoch() == reference.epoch());
        BOOST_TEST(stream.position() == reference.position());
        BOOST_TEST(stream.skipped_files().empty());
    }
}

// Two shards of a global batch of 4 hold its rows 0-1 and 2-3; a stream continued with
// seek(epoch(), position()) repeats the uninterrupted one.
BOOST_AUTO_TEST_CASE(shards_split_the_global_batch_and_seek_resumes) {
    scratch_dir dir("image_stream");
    const auto files = data::list_labeled_images(make_folder(dir.path / "set", 10));
    data::streaming_image_loader<float> whole(files, resize_prep, 4, 3, {}, {.workers = 2});
    data::streaming_image_loader<float> first(files, resize_prep, 4, 3, {0, 2}, {.workers = 1});
    data::streaming_image_loader<float> second(files, resize_prep, 4, 3, {1, 2}, {.workers = 2, .prefetch_batches = 3});
    const auto all = take(whole, 5), a = take(first, 5), b = take(second, 5);
    for (std::size_t k = 0; k < all.size(); ++k) {
        const std::size_t half = all[k].first.size() / 2;
        BOOST_TEST(std::vector<float>(all[k].first.begin(), all[k].first.begin() + half) == a[k].first);
        BOOST_TEST(std::vector<float>(all[k].first.begin() + half, all[k].first.end()) == b[k].first);
    }

    data::streaming_image_loader<float> straight(files, resize_prep, 4, 3, {}, {.workers = 2});
    const auto reference = take(straight, 7);
    data::streaming_image_loader<float> interrupted(files, resize_prep, 4, 3, {}, {.workers = 3});
    (void)take(interrupted, 3);
    data::streaming_image_loader<float> resumed(files, resize_prep, 4, 3, {}, {.workers = 1});
    resumed.seek(interrupted.epoch(), interrupted.position());
    const auto rest = take(resumed, 4);
    for (std::size_t k = 0; k < rest.size(); ++k) BOOST_TEST(rest[k].first == reference[3 + k].first, "batch " << 3 + k);
}

// A folder with a truncated JPEG, a PNG whose IDAT fails its CRC, an empty file and a text file
// named .jpg: the stream goes on through two epochs, names each bad file once, and puts the next
// readable file (in sorted order) in each one's place.
BOOST_AUTO_TEST_CASE(corrupt_files_are_skipped_and_named) {
    scratch_dir dir("image_stream");
    const auto folder = dir.path / "mixed";
    fs::create_directories(folder);
    for (int i = 0; i < 8; ++i) io::write_png(folder / fmt::format("{:02d}_good.png", i * 2), numbered_image(i));
    const auto jpeg = jpeg_bytes(numbered_image(20));
    write_bytes(folder / "01_truncated.jpg", jpeg.substr(0, jpeg.size() / 2));
    auto png = io::encode_png(numbered_image(21));
    std::string png_text(png.begin(), png.end());
    const std::size_t idat = png_text.find("IDAT");
    const std::size_t idat_length = (std::size_t(std::uint8_t(png_text[idat - 4])) << 24) | (std::size_t(std::uint8_t(png_text[idat - 3])) << 16) |
                                    (std::size_t(std::uint8_t(png_text[idat - 2])) << 8) | std::size_t(std::uint8_t(png_text[idat - 1]));
    png_text[idat + 4 + idat_length] ^= 0x5a;  // the chunk's CRC itself: the data are intact
    write_bytes(folder / "03_bad_crc.png", png_text);
    write_bytes(folder / "05_empty.png", "");
    write_bytes(folder / "07_text.jpg", "these are not the bytes of an image\n");
    const auto files = data::list_labeled_images(folder);
    BOOST_TEST_REQUIRE(files.size() == 12);

    data::streaming_image_loader<float> stream(files, resize_prep, 12, 1, {}, {.workers = 2, .prefetch_batches = 2});
    const auto batches = take(stream, 2);
    const auto skipped = stream.skipped_files();
    BOOST_TEST_REQUIRE(skipped.size() == 4u);
    for (const char* name : {"01_truncated.jpg", "03_bad_crc.png", "05_empty.png", "07_text.jpg"})
        BOOST_TEST((std::find(skipped.begin(), skipped.end(), folder / name) != skipped.end()), name);

    // Every row is one of the good images, and each bad file's slot holds the good file after it:
    // with the whole set in one batch, 00 and 02 appear twice (for 01 and 03 also 02 ... ), etc.
    std::vector<std::vector<float>> good;
    for (int i = 0; i < 8; ++i) {
        std::vector<float> v(static_cast<std::size_t>(resize_prep.values_per_image()));
        resize_prep.load(folder / fmt::format("{:02d}_good.png", i * 2), std::span<float>(v));
        good.push_back(v);
    }
    const std::size_t per = good[0].size();
    std::vector<int> count(8, 0);
    for (std::size_t r = 0; r < 12; ++r) {
        const std::vector<float> row(batches[0].first.begin() + r * per, batches[0].first.begin() + (r + 1) * per);
        const auto it = std::find(good.begin(), good.end(), row);
        BOOST_TEST_REQUIRE((it != good.end()), "row " << r << " is a good image");
        ++count[static_cast<std::size_t>(it - good.begin())];
    }
    // 01 → 02, 03 → 04, 05 → 06, 07 → 08 (sorted order): those four appear twice, the rest once.
    BOOST_TEST(count == std::vector<int>({1, 2, 2, 2, 2, 1, 1, 1}), boost::test_tools::per_element());

    data::streaming_image_loader<float> strict(files, resize_prep, 12, 1, {}, {.workers = 1, .skip_corrupt = false});
    const auto message = io_error_message([&] { (void)strict.next(); });
    BOOST_TEST(contains(message, "mixed/0"), message);
    BOOST_TEST(contains(message, "--fail-on-corrupt"), message);
}

// ADM's crop is the default, and the evaluation reader gives the stream's pixels in file order.
BOOST_AUTO_TEST_CASE(ranges_read_in_file_order_with_adm_crop) {
    scratch_dir dir("image_stream");
    const auto files = data::list_labeled_images(make_folder(dir.path / "set", 5));
    const data::image_preprocessing adm{.size = 16, .channels = 3};
    BOOST_TEST((adm.crop == data::crop_policy::adm));
    const auto range = data::load_image_range<float>(files, 1, 4, adm);
    BOOST_TEST_REQUIRE(range.images.dim(0) == 3);
    BOOST_TEST(range.labels == std::vector<std::int32_t>({0, 0, 1}));  // sorted files 1-3: even/002, even/004, odd/001
    for (std::int64_t i = 0; i < 3; ++i) {
        std::vector<float> v(static_cast<std::size_t>(adm.values_per_image()));
        const auto square = data::adm_center_crop(io::read_image(files.files[static_cast<std::size_t>(1 + i)], 3), 16);
        io::image_to_planar(square, std::span<float>(v));
        BOOST_TEST(range.images[i].to_vector() == v);
    }
    BOOST_TEST(contains(error_message<std::invalid_argument>([&] { (void)data::load_image_range<float>(files, 2, 9, adm); }), "[2, 9)"));
}

BOOST_AUTO_TEST_CASE(bad_settings_are_named) {
    scratch_dir dir("image_stream");
    const auto files = data::list_labeled_images(make_folder(dir.path / "set", 4));
    const auto message = [&](int batch, batch_shard shard, data::stream_options opt) {
        return error_message<std::invalid_argument>([&] { data::streaming_image_loader<float> s(files, resize_prep, batch, 0, shard, opt); });
    };
    BOOST_TEST(contains(message(5, {}, {}), "batch size 5 exceeds the 4 files"));
    BOOST_TEST(contains(message(3, {0, 2}, {}), "does not split into 2"));
    BOOST_TEST(contains(message(2, {}, {.workers = -1}), "-1 workers"));
    BOOST_TEST(contains(message(2, {}, {.prefetch_batches = 0}), "prefetch 0"));
    BOOST_TEST(contains(error_message<std::invalid_argument>([] { (void)data::parse_crop_policy("squash"); }), "squash"));
}

BOOST_AUTO_TEST_SUITE(jobs_on_folders)

namespace {

jobs::tokenizer_job tiny_folder_tokenizer(const fs::path& folder, const fs::path& out) {
    jobs::tokenizer_job cfg;
    cfg.image_folder = folder.string();
    cfg.image_size = 16;
    cfg.channels = 3;
    cfg.model.ch = 8;
    cfg.model.ch_mult = {1, 2};
    cfg.model.num_res_blocks = 1;
    cfg.model.norm_groups = 4;
    cfg.model.z_channels = cfg.model.embed_dim = 2;
    cfg.steps = 2;
    cfg.batch = 4;
    cfg.warmup = 1;
    cfg.log_every = 1;
    cfg.checkpoint_every = 100;
    cfg.eval_images = 2;
    cfg.out = out.string();
    return cfg;
}

} // namespace

// Training on a folder with a truncated JPEG, a PNG with a bad CRC, an empty file and a text file
// named .jpg: the run finishes, the log counts the skipped files, and with --fail-on-corrupt the
// run stops at one, naming it.
BOOST_AUTO_TEST_CASE(training_goes_on_past_corrupt_files) {
    scratch_dir dir("image_stream");
    const auto folder = make_folder(dir.path / "set", 36);
    const auto jpeg = jpeg_bytes(numbered_image(40));
    write_bytes(folder / "even" / "001_truncated.jpg", jpeg.substr(0, jpeg.size() / 2));
    auto png = io::encode_png(numbered_image(41));
    std::string png_text(png.begin(), png.end());
    png_text[png_text.size() - 20] ^= 0x21;  // inside the last IDAT or its CRC
    write_bytes(folder / "odd" / "003_bad.png", png_text);
    write_bytes(folder / "odd" / "005_empty.png", "");
    write_bytes(folder / "even" / "007_text.jpg", "not an image\n");
    auto cfg = tiny_folder_tokenizer(folder, dir.path / "run");
    cfg.steps = 12;  // three epochs of the 38 training files (every 20th of the 40 is held out)
    cfg.batch = 8;
    cfg.log_every = 12;
    const auto metrics = jobs::train_tokenizer(cfg);
    BOOST_TEST(metrics.at("steps").get<std::int64_t>() == 12);
    std::ifstream log(dir.path / "run" / "log.jsonl");
    std::string last;
    for (std::string line; std::getline(log, line);) last = line;
    const auto entry = nlohmann::json::parse(last);
    BOOST_TEST(entry.at("skipped_files").get<std::size_t>() >= 3u);  // 4 bad files, one may sit in the test split
    BOOST_TEST(entry.contains("data_wait_s"));

    cfg.out = (dir.path / "strict").string();
    cfg.fail_on_corrupt = true;
    const auto message = io_error_message([&] { (void)jobs::train_tokenizer(cfg); });
    BOOST_TEST(contains(message, "--fail-on-corrupt"), message);
}

// encode --image-folder --flip: each batch's latents, then its mirror images', with their labels;
// the statistics are those of every latent written; the cache maps back.
BOOST_AUTO_TEST_CASE(encode_streams_a_folder_with_mirror_images) {
    scratch_dir dir("image_stream");
    const auto folder = make_folder(dir.path / "set", 20);
    (void)jobs::train_tokenizer(tiny_folder_tokenizer(folder, dir.path / "tok"));
    const auto cache = jobs::encode_latents({.tokenizer = dir.path / "tok", .out = dir.path / "latents.safetensors", .image_folder = folder.string(),
                                             .image_size = 16, .channels = 3, .flip = true, .max_images = 7, .posterior_mean = true});
    BOOST_TEST_REQUIRE(cache.size() == 14);
    const auto files = data::list_labeled_images(folder);
    const data::image_preprocessing prep{.size = 16, .channels = 3};
    auto run = train::load_tokenizer_run<cpu>(dir.path / "tok");
    auto images = data::load_image_range<float>(files, 0, 7, prep);
    const auto expected = run.posterior(images.images.view(), 0, 0, 0).mean;
    (void)data::random_horizontal_flip{.probability = 1.0}(images.images.view(), 0);
    const auto expected_flipped = run.posterior(images.images.view(), 0, 0, 0).mean;
    for (std::int64_t i = 0; i < 7; ++i) {
        BOOST_TEST(cache.latents[i].to_vector() == expected[i].to_vector(), "image " << i);
        BOOST_TEST(cache.latents[7 + i].to_vector() == expected_flipped[i].to_vector(), "mirrored image " << i);
        BOOST_TEST(cache.labels[static_cast<std::size_t>(i)] == files.labels[static_cast<std::size_t>(i)]);
        BOOST_TEST(cache.labels[static_cast<std::size_t>(7 + i)] == files.labels[static_cast<std::size_t>(i)]);
    }
    BOOST_TEST(cache.latents[0].to_vector() != cache.latents[7].to_vector());
    diffusion::latent_moments all;
    all.add(cache.latents);
    for (std::size_t c = 0; c < 2; ++c) {
        BOOST_TEST(cache.channel_mean[c] == all.mean()[c], boost::test_tools::tolerance(1e-12));
        BOOST_TEST(cache.channel_std[c] == all.stddev()[c], boost::test_tools::tolerance(1e-12));
    }
}

BOOST_AUTO_TEST_SUITE_END()
