#define BOOST_TEST_MODULE data
#include <boost/test/unit_test.hpp>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <set>
#include <string>
#include <vector>

#include <unistd.h>
#include <zlib.h>

#include "vediff/backend/cpu.hpp"
#include "vediff/data/fashion_mnist.hpp"
#include "vediff/data/loader.hpp"
#include "vediff/util/progress.hpp"

#include "support/errors.hpp"

using namespace vediff;
using namespace vediff::testing;
namespace fs = std::filesystem;

namespace {

/// A gzip-compressed IDX file of unsigned bytes.
void write_idx_gz(const fs::path& p, std::vector<std::uint32_t> dims, const std::vector<std::uint8_t>& data) {
    std::vector<std::uint8_t> b = {0, 0, 8, static_cast<std::uint8_t>(dims.size())};
    for (auto d : dims)
        for (int shift = 24; shift >= 0; shift -= 8) b.push_back(static_cast<std::uint8_t>(d >> shift));
    b.insert(b.end(), data.begin(), data.end());
    gzFile f = gzopen(p.c_str(), "wb");
    BOOST_REQUIRE(f != nullptr);
    gzwrite(f, b.data(), static_cast<unsigned>(b.size()));
    gzclose(f);
}

/// Writes a small Fashion-MNIST-shaped train split: n images of 28×28, pixel (r, c) of image i = (i + r + c) % 256.
void write_fake_split(const fs::path& dir, std::uint32_t n_images, std::uint32_t n_labels, std::uint8_t max_label = 9,
                      std::uint32_t side = 28) {
    std::vector<std::uint8_t> pixels(n_images * side * side), labels(n_labels);
    for (std::uint32_t i = 0; i < n_images; ++i)
        for (std::uint32_t r = 0; r < side; ++r)
            for (std::uint32_t c = 0; c < side; ++c) pixels[(i * side + r) * side + c] = static_cast<std::uint8_t>((i + r + c) % 256);
    for (std::uint32_t i = 0; i < n_labels; ++i) labels[i] = static_cast<std::uint8_t>(std::min<std::uint32_t>(i, max_label));
    write_idx_gz(dir / "train-images-idx3-ubyte.gz", {n_images, side, side}, pixels);
    write_idx_gz(dir / "train-labels-idx1-ubyte.gz", {n_labels}, labels);
}

const fs::path real_dir = VEDIFF_TEST_DATA_DIR;

struct dataset_present {
    boost::test_tools::assertion_result operator()(boost::unit_test::test_unit_id) {
        boost::test_tools::assertion_result r = data::fashion_mnist_available(real_dir);
        r.message() << "Fashion-MNIST not found in " << real_dir.string() << " (Debian package dataset-fashion-mnist; CI installs it)";
        return r;
    }
};

/// Images (n, 1, 2, 2) whose pixels all equal the sample index, labels = index.
data::labeled_images<float> indexed_set(std::int64_t n) {
    data::labeled_images<float> d;
    d.images = tensor<float>::empty({n, 1, 2, 2});
    for (std::int64_t i = 0; i < n; ++i) {
        for (int k = 0; k < 4; ++k) d.images.data()[i * 4 + k] = float(i);
        d.labels.push_back(static_cast<std::int32_t>(i));
    }
    return d;
}

std::vector<std::int32_t> labels_of(const data::batch<float, cpu>& b) { return {b.labels.begin(), b.labels.end()}; }

} // namespace

BOOST_AUTO_TEST_SUITE(fashion_mnist)

BOOST_AUTO_TEST_CASE(class_names) {
    BOOST_TEST(data::fashion_mnist_classes.size() == 10u);
    BOOST_TEST(data::fashion_mnist_classes[0] == "T-shirt/top");
    BOOST_TEST(data::fashion_mnist_classes[9] == "Ankle boot");
}

BOOST_AUTO_TEST_CASE(real_train_and_test_splits, *boost::unit_test::precondition(dataset_present{})) {
    data::fashion_mnist_options opt;
    opt.directory = real_dir;
    const auto train = data::load_fashion_mnist(data::split::train, opt);
    BOOST_TEST((train.images.shape() == tensor_shape{60000, 1, 28, 28}));
    BOOST_TEST(train.size() == 60000);
    std::vector<int> counts(10, 0);
    for (auto l : train.labels) {
        BOOST_REQUIRE(l >= 0);
        BOOST_REQUIRE(l <= 9);
        ++counts[static_cast<std::size_t>(l)];
    }
    for (int c : counts) BOOST_TEST(c == 6000);  // the published split is balanced
    const auto px = train.images.span();
    BOOST_TEST(*std::min_element(px.begin(), px.end()) == 0.0f);
    BOOST_TEST(*std::max_element(px.begin(), px.end()) == 1.0f);
    double sum = 0;
    for (float v : px) sum += v;
    // The widely quoted normalization constant of the training images: mean 0.2860.
    BOOST_TEST(sum / double(px.size()) == 0.2860, boost::test_tools::tolerance(0.002));

    const auto test = data::load_fashion_mnist<double>(data::split::test, opt);
    BOOST_TEST((test.images.shape() == tensor_shape{10000, 1, 28, 28}));
    BOOST_TEST(std::count(test.labels.begin(), test.labels.end(), 3) == 1000);
}

BOOST_AUTO_TEST_CASE(real_tokenizer_format, *boost::unit_test::precondition(dataset_present{})) {
    const auto unit = data::load_fashion_mnist(data::split::test, {real_dir, false, false});
    const auto tok = data::load_fashion_mnist(data::split::test, data::fashion_mnist_tokenizer_format(real_dir));
    BOOST_TEST((tok.images.shape() == tensor_shape{10000, 1, 32, 32}));
    BOOST_TEST(tok.labels == unit.labels);
    for (std::int64_t i : {0, 4321, 9999}) {
        for (int k = 0; k < 32; ++k) {  // the 2-pixel border is background, −1
            BOOST_REQUIRE(tok.images.at(i, 0, 0, k) == -1.0f);
            BOOST_REQUIRE(tok.images.at(i, 0, 31, k) == -1.0f);
            BOOST_REQUIRE(tok.images.at(i, 0, k, 1) == -1.0f);
            BOOST_REQUIRE(tok.images.at(i, 0, k, 30) == -1.0f);
        }
        for (int r = 0; r < 28; ++r)
            for (int c = 0; c < 28; ++c)
                BOOST_REQUIRE(std::abs(tok.images.at(i, 0, r + 2, c + 2) - (2 * unit.images.at(i, 0, r, c) - 1)) < 1e-6f);
    }
    const auto px = tok.images.span();
    BOOST_TEST(*std::max_element(px.begin(), px.end()) == 1.0f);
}

BOOST_AUTO_TEST_CASE(synthetic_files_and_their_errors) {
    temp_dir dir("data");
    write_fake_split(dir.path, 5, 5);
    data::fashion_mnist_options opt;
    opt.directory = dir.path;
    const auto d = data::load_fashion_mnist(data::split::train, opt);
    BOOST_TEST((d.images.shape() == tensor_shape{5, 1, 28, 28}));
    BOOST_TEST(d.images.at(3, 0, 10, 20) == float((3 + 10 + 20) % 256) / 255.0f);
    BOOST_TEST((d.labels == std::vector<std::int32_t>{0, 1, 2, 3, 4}));
    BOOST_TEST(!data::fashion_mnist_available(dir.path));  // no test split here

    write_fake_split(dir.path, 5, 4);
    auto msg = error_message<io_error>([&] { data::load_fashion_mnist(data::split::train, opt); });
    BOOST_TEST(contains(msg, "5 images"), msg);
    BOOST_TEST(contains(msg, "4 labels"), msg);
    BOOST_TEST(contains(msg, "train-labels-idx1-ubyte.gz"), msg);

    write_fake_split(dir.path, 3, 3);
    write_idx_gz(dir.path / "train-labels-idx1-ubyte.gz", {3}, {1, 10, 2});
    msg = error_message<io_error>([&] { data::load_fashion_mnist(data::split::train, opt); });
    BOOST_TEST(contains(msg, "label 10 of sample 1"), msg);

    write_fake_split(dir.path, 2, 2, 9, 16);
    msg = error_message<io_error>([&] { data::load_fashion_mnist(data::split::train, opt); });
    BOOST_TEST(contains(msg, "16×16"), msg);

    msg = error_message<io_error>([&] { data::load_fashion_mnist(data::split::test, opt); });
    BOOST_TEST(contains(msg, "t10k-images-idx3-ubyte.gz"), msg);
}

BOOST_AUTO_TEST_SUITE_END()

BOOST_AUTO_TEST_SUITE(loader)

BOOST_AUTO_TEST_CASE(philox_fisher_yates_known_values) {
    // From an independent Python implementation of Philox4x32-10 and the documented draw rule.
    BOOST_TEST((data::shuffled_indices(10, 42, 0) == std::vector<std::int64_t>{5, 8, 1, 2, 9, 4, 3, 7, 0, 6}));
    BOOST_TEST((data::shuffled_indices(10, 42, 1) == std::vector<std::int64_t>{4, 5, 3, 6, 8, 7, 9, 1, 2, 0}));
    BOOST_TEST((data::shuffled_indices(16, 2024, 7) ==
                std::vector<std::int64_t>{15, 2, 10, 3, 7, 14, 6, 12, 5, 8, 11, 0, 9, 1, 13, 4}));
    BOOST_TEST(data::shuffled_indices(0, 1, 0).empty());
    BOOST_TEST((data::shuffled_indices(1, 1, 0) == std::vector<std::int64_t>{0}));
}

BOOST_AUTO_TEST_CASE(shuffle_is_uniform_enough) {
    // Position of element 0 over many streams: each of 5 slots about 1/5 of the time.
    std::vector<int> hits(5, 0);
    for (std::uint64_t s = 0; s < 5000; ++s) {
        const auto p = data::shuffled_indices(5, 9, s);
        ++hits[static_cast<std::size_t>(std::find(p.begin(), p.end(), 0) - p.begin())];
    }
    for (int h : hits) BOOST_TEST(std::abs(h - 1000) < 120, "slot count " << h);
}

BOOST_AUTO_TEST_CASE(each_epoch_covers_every_sample_once) {
    const auto d = indexed_set(10);
    data::batch_loader<float> loader(d, 3, 7, /*drop_last=*/false);
    BOOST_TEST(loader.batches_per_epoch() == 4);
    for (int epoch = 0; epoch < 3; ++epoch) {
        std::multiset<std::int32_t> seen;
        for (int b = 0; b < 4; ++b) {
            const auto batch = loader.next();
            BOOST_TEST(batch.epoch == epoch);
            BOOST_TEST(batch.labels.size() == (b < 3 ? 3u : 1u));
            BOOST_TEST((batch.images.shape() == tensor_shape{std::int64_t(batch.labels.size()), 1, 2, 2}));
            for (std::size_t r = 0; r < batch.labels.size(); ++r) {
                seen.insert(batch.labels[r]);
                // The gathered image belongs to the label beside it.
                BOOST_TEST(batch.images.at(std::int64_t(r), 0, 1, 1) == float(batch.labels[r]));
            }
        }
        BOOST_TEST(seen.size() == 10u);
        BOOST_TEST(std::set<std::int32_t>(seen.begin(), seen.end()).size() == 10u);
    }
}

BOOST_AUTO_TEST_CASE(same_seed_same_order_epochs_differ) {
    const auto d = indexed_set(12);
    data::batch_loader<float> a(d, 4, 99), b(d, 4, 99), c(d, 4, 100);
    std::vector<std::vector<std::int32_t>> epochs(2);
    bool differs_from_other_seed = false;
    for (int e = 0; e < 2; ++e)
        for (int k = 0; k < 3; ++k) {
            const auto ba = labels_of(a.next());
            BOOST_TEST(ba == labels_of(b.next()));
            differs_from_other_seed |= ba != labels_of(c.next());
            epochs[static_cast<std::size_t>(e)].insert(epochs[static_cast<std::size_t>(e)].end(), ba.begin(), ba.end());
        }
    BOOST_TEST(epochs[0] != epochs[1]);
    BOOST_TEST(differs_from_other_seed);
    BOOST_TEST((std::vector<std::int64_t>(a.order().begin(), a.order().end()) == data::shuffled_indices(12, 99, 1)));
}

BOOST_AUTO_TEST_CASE(drop_last_and_resume) {
    const auto d = indexed_set(10);
    data::batch_loader<float> a(d, 3, 5);  // drop_last: 3 batches, one sample left out per epoch
    BOOST_TEST(a.batches_per_epoch() == 3);
    for (int k = 0; k < 3; ++k) BOOST_TEST(a.next().epoch == 0);
    const auto first_of_epoch1 = a.next();
    BOOST_TEST(first_of_epoch1.epoch == 1);
    BOOST_TEST(first_of_epoch1.position == 0);
    a.next();
    // Save (epoch, position), resume in a fresh loader: the same batches follow.
    const auto epoch = a.epoch(), position = a.position();
    BOOST_TEST(epoch == 1);
    BOOST_TEST(position == 6);
    data::batch_loader<float> b(d, 3, 5);
    b.seek(epoch, position);
    for (int k = 0; k < 5; ++k) BOOST_TEST(labels_of(a.next()) == labels_of(b.next()));

    BOOST_CHECK_THROW((data::batch_loader<float>(d, 11, 5)), std::invalid_argument);
    BOOST_CHECK_THROW((data::batch_loader<float>(d, 0, 5)), std::invalid_argument);
    BOOST_CHECK_THROW(b.seek(0, 11), std::invalid_argument);
    std::vector<std::int32_t> short_labels(9);
    const auto msg = error_message<shape_error>([&] { data::batch_loader<float>(d.images, short_labels, 2, 1); });
    BOOST_TEST(contains(msg, "(10, 1, 2, 2)"), msg);
    BOOST_TEST(contains(msg, "9 labels"), msg);
}

// Data parallel: with shard {r, 3} a loader of global batch 6 gathers rows 2r, 2r + 1 of each
// global batch, so that the three shards of a step, in rank order, are the one-process batch,
// across epoch boundaries and after a seek.
BOOST_AUTO_TEST_CASE(shards_partition_each_global_batch) {
    const auto d = indexed_set(20);
    data::batch_loader<float> whole(d, 6, 9);
    std::vector<data::batch_loader<float>> shards;
    for (std::uint64_t r = 0; r < 3; ++r) shards.emplace_back(d, 6, 9, true, batch_shard{r, 3});
    for (int step = 0; step < 7; ++step) {  // 3 batches per epoch: crosses two epoch boundaries
        const auto expected = labels_of(whole.next());
        std::vector<std::int32_t> joined;
        for (std::size_t r = 0; r < 3; ++r) {
            const auto b = shards[r].next();
            BOOST_TEST(b.labels.size() == 2u);
            BOOST_TEST(b.first_row == std::int64_t(2 * r));
            BOOST_TEST(b.epoch == step / 3);
            for (std::size_t k = 0; k < b.labels.size(); ++k) BOOST_TEST(b.images.at(std::int64_t(k), 0, 1, 1) == float(b.labels[k]));
            joined.insert(joined.end(), b.labels.begin(), b.labels.end());
        }
        BOOST_TEST(joined == expected);
        // Every rank counts the global position, so a checkpoint of any rank resumes any world size.
        BOOST_TEST(shards[1].position() == whole.position());
    }
    data::batch_loader<float> resumed(d, 6, 9, true, batch_shard{2, 3});
    resumed.seek(whole.epoch(), whole.position());
    const auto expected = labels_of(whole.next());
    const auto tail = labels_of(resumed.next());
    BOOST_TEST((tail == std::vector<std::int32_t>(expected.begin() + 4, expected.end())));

    const auto uneven = error_message<std::invalid_argument>([&] { data::batch_loader<float>(d, 7, 9, true, batch_shard{0, 3}); });
    BOOST_TEST(contains(uneven, "global batch 7 does not split into 3 equal shards"), uneven);
    BOOST_CHECK_THROW((data::batch_loader<float>(d, 6, 9, false, batch_shard{0, 3})), std::invalid_argument);
    BOOST_CHECK_THROW((data::batch_loader<float>(d, 6, 9, true, batch_shard{3, 3})), std::invalid_argument);
}

BOOST_AUTO_TEST_SUITE_END()

BOOST_AUTO_TEST_SUITE(progress)

std::string read_all(std::FILE* f) {
    std::fflush(f);
    std::rewind(f);
    std::string s;
    for (int c; (c = std::fgetc(f)) != EOF;) s.push_back(static_cast<char>(c));
    return s;
}

BOOST_AUTO_TEST_CASE(line_contents) {
    util::progress_options opt;
    opt.label = "train";
    opt.items_per_step = 4;
    opt.unit = "img";
    opt.style = util::progress_style::lines;
    std::FILE* f = std::tmpfile();
    util::progress_bar bar(10, opt, f);
    BOOST_TEST(!bar.redraws());
    const std::vector<util::progress_field> fields = {{"loss", 0.123456}, {"lr", 2e-4}, {"phase", "warmup"}, {"epoch", 3}};
    // 5 steps in 2 s: 2.5 steps/s = 10 img/s, 5 steps left = 2 s.
    BOOST_TEST(bar.format_line(5, fields, 2.0) == "train  5/10  50% loss=0.1235 lr=0.0002 phase=warmup epoch=3 | 10.00 img/s ETA 0:02 elapsed 0:02");
    BOOST_TEST(contains(bar.format_line(0, {}, 0.0), "ETA ?"));
    BOOST_TEST(util::progress_bar::format_duration(59.6) == "1:00");
    BOOST_TEST(util::progress_bar::format_duration(3725) == "1:02:05");
    std::fclose(f);
}

BOOST_AUTO_TEST_CASE(plain_lines_when_not_a_terminal) {
    std::FILE* f = std::tmpfile();
    {
        util::progress_options opt;
        opt.line_interval_s = 0;  // a line per update
        util::progress_bar bar(3, opt, f);  // a temporary file is not a TTY: automatic → lines
        BOOST_TEST(!bar.redraws());
        for (int s = 1; s <= 3; ++s) bar.update(s, {{"loss", 1.0 / s}});
        bar.finish();
    }
    const auto out = read_all(f);
    BOOST_TEST(std::count(out.begin(), out.end(), '\n') == 3);
    BOOST_TEST(!contains(out, "\r"));
    BOOST_TEST(contains(out, "1/3  33% loss=1 |"), out);
    BOOST_TEST(contains(out, "3/3 100% loss=0.3333 |"), out);
    std::fclose(f);

    // With the default interval only the first line and the final one appear.
    f = std::tmpfile();
    {
        util::progress_bar bar(1000, {}, f);
        for (int s = 1; s <= 1000; ++s) bar.update(s);
    }
    const auto out2 = read_all(f);
    BOOST_TEST(std::count(out2.begin(), out2.end(), '\n') == 2, out2);
    std::fclose(f);
}

BOOST_AUTO_TEST_CASE(redraws_in_place_on_a_terminal) {
    std::FILE* f = std::tmpfile();
    {
        util::progress_options opt;
        opt.style = util::progress_style::redraw;
        opt.bar_width = 10;
        util::progress_bar bar(4, opt, f);
        BOOST_TEST(bar.redraws());
        for (int s = 1; s <= 4; ++s) bar.update(s, {{"loss", 0.5}});
    }  // the destructor ends the line
    const auto out = read_all(f);
    BOOST_TEST(contains(out, "\r1/4 [##........]  25% loss=0.5"), out);  // the first draw is immediate
    BOOST_TEST(contains(out, "\r4/4 [##########] 100% loss=0.5"), out);  // the last step always draws
    BOOST_TEST(out.back() == '\n');
    BOOST_TEST(std::count(out.begin(), out.end(), '\n') == 1);
    std::fclose(f);
}

BOOST_AUTO_TEST_SUITE_END()
