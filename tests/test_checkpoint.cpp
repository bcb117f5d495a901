#define BOOST_TEST_MODULE checkpoint
#include <boost/test/unit_test.hpp>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <functional>
#include <limits>
#include <map>
#include <string>
#include <vector>

#include <csignal>

#include <sys/resource.h>
#include <unistd.h>

#include "support/errors.hpp"
#include "support/gradcheck.hpp"
#include "vediff/backend/cpu.hpp"
#include "vediff/data/image_folder.hpp"
#include "vediff/data/loader.hpp"
#include "vediff/io/safetensors.hpp"
#include "vediff/nn/activation.hpp"
#include "vediff/nn/compose.hpp"
#include "vediff/nn/linear.hpp"
#include "vediff/ops/random.hpp"
#include "vediff/optim/adamw.hpp"
#include "vediff/train/checkpoint.hpp"

using namespace vediff;
using namespace vediff::testing;
namespace fs = std::filesystem;

namespace {

using tiny_model = nn::sequential<nn::linear<float>, nn::silu<float>, nn::linear<float>>;  // 16 → 8 → 16

tiny_model make_model(std::uint64_t seed) { return tiny_model(nn::linear<float>(16, 8, true, seed), {}, nn::linear<float>(8, 16, true, seed + 1)); }

const optim::adamw_config adamw_cfg{3e-2, 0.9, 0.95, 1e-8, 0.01};

/// Everything a run holds: model, optimizer, data loader, augmentation and a noise stream.
struct run {
    data::labeled_images<float>& data;
    tiny_model model;
    optim::adamw<float> opt;
    data::batch_loader<float> loader;
    data::random_horizontal_flip flip{11};
    train::train_state state;
    std::vector<double> losses;

    run(data::labeled_images<float>& d, std::uint64_t init_seed)
        : data(d), model(make_model(init_seed)), opt(model, adamw_cfg), loader(d, 6, 99) {
        state.generators["noise"] = philox_generator{5, 3, 0};
        state.config_json = R"({"lr": 0.03, "batch": 6})";
    }

    /// One step of denoising autoencoding: flip, add noise from the generator, MSE to the clean batch.
    void step() {
        auto b = loader.next();
        flip(b.images, static_cast<std::uint64_t>(state.step));
        const auto clean = b.images.reshape({b.images.dim(0), 16});
        auto noisy = tensor<float>::copy_of(clean);
        auto noise = ops::normal<float>(noisy.shape(), state.generators["noise"], 0.0f, 0.3f);
        ops::axpy(noisy.view(), noise.view());
        auto y = model.forward(noisy);
        auto dy = tensor<float>::empty(y.shape());
        double loss = 0;
        for (std::int64_t i = 0; i < y.numel(); ++i) {
            const double d = double(y.data()[i]) - double(clean.data()[i]);
            loss += d * d / static_cast<double>(y.numel());
            dy.data()[i] = static_cast<float>(2 * d / static_cast<double>(y.numel()));
        }
        opt.zero_grad();
        model.backward(dy);
        opt.step();
        losses.push_back(loss);
        ++state.step;
        state.loader_epoch = loader.epoch();
        state.loader_position = loader.position();
    }

    void save(const fs::path& dir) { train::save_checkpoint(dir, model, opt, state); }
    void load(const fs::path& dir) {
        train::load_checkpoint(dir, model, opt, state);
        loader.seek(state.loader_epoch, state.loader_position);
    }
    std::vector<float> parameters() {
        std::vector<float> all;
        for (auto& [name, p] : nn::named_parameters(model))
            for (float v : p->value.span()) all.push_back(v);
        return all;
    }
};

data::labeled_images<float> toy_data() {
    data::labeled_images<float> d;
    d.images = random_tensor<float>({20, 1, 4, 4}, 31);
    d.labels.assign(20, 0);
    return d;
}

std::string read_bytes(const fs::path& p) {
    std::ifstream in(p, std::ios::binary);
    return std::string(std::istreambuf_iterator<char>(in), {});
}
void write_bytes(const fs::path& p, const std::string& s) {
    std::ofstream out(p, std::ios::binary);
    out.write(s.data(), static_cast<std::streamsize>(s.size()));
}
/// Rewrites a safetensors file, metadata kept, with each tensor replaced by edit(name, tensor)
/// (dropped where that is an undefined tensor).
void rewrite(const fs::path& path, const std::function<tensor<float>(const std::string&, tensor<float>)>& edit) {
    io::safetensors_writer w;
    const io::safetensors_file f(path);
    for (auto& name : f.names())
        if (auto t = edit(name, f.get<float>(name)); t.defined()) w.add(name, t.view());
    for (auto& [k, v] : f.metadata())
        if (k != io::checksum_metadata_key) w.add_metadata(k, v);  // the writer sums the edited tensors anew
    w.write(path);
}
std::size_t entries_in(const fs::path& dir) { return static_cast<std::size_t>(std::distance(fs::directory_iterator(dir), {})); }

} // namespace

BOOST_AUTO_TEST_SUITE(resume)

BOOST_AUTO_TEST_CASE(interrupted_run_continues_bit_for_bit) {
    temp_dir dir("checkpoint");
    auto data = toy_data();
    constexpr int steps = 14;  // 20 samples, batches of 6 (drop last): crosses epoch boundaries

    run straight(data, 1);
    for (int s = 0; s < steps; ++s) straight.step();

    run first(data, 1);
    for (int s = 0; s < steps / 2; ++s) first.step();
    first.save(dir.path);

    run second(data, 777);  // other initial weights: everything must come from the checkpoint
    second.state.config_json = "{}";
    second.load(dir.path);
    BOOST_TEST(second.state.step == steps / 2);
    BOOST_TEST(second.opt.step_count() == steps / 2);
    BOOST_TEST(second.state.generators.at("noise").offset == first.state.generators.at("noise").offset);
    BOOST_TEST(second.state.generators.at("noise").offset > 0u);
    BOOST_TEST(second.state.config_json == first.state.config_json);
    BOOST_TEST(second.loader.epoch() == first.loader.epoch());
    BOOST_TEST(second.loader.position() == first.loader.position());
    for (int s = steps / 2; s < steps; ++s) second.step();

    BOOST_TEST(second.parameters() == straight.parameters());
    const std::vector<double> tail(straight.losses.begin() + steps / 2, straight.losses.end());
    BOOST_TEST(second.losses == tail);
    BOOST_TEST(straight.losses.back() < straight.losses.front());  // it trains

    // Without the optimizer state the continuation differs: the test can tell.
    run fresh_optimizer(data, 1);
    io::load_state_dict(dir / "model.safetensors", fresh_optimizer.model);
    fresh_optimizer.state = train::read_train_state(dir.path);
    fresh_optimizer.loader.seek(fresh_optimizer.state.loader_epoch, fresh_optimizer.state.loader_position);
    for (int s = steps / 2; s < steps; ++s) fresh_optimizer.step();
    BOOST_TEST(fresh_optimizer.parameters() != straight.parameters());
}

BOOST_AUTO_TEST_CASE(round_trip_of_every_field) {
    temp_dir dir("checkpoint");
    auto data = toy_data();
    run a(data, 2);
    for (int s = 0; s < 3; ++s) a.step();
    a.state.generators["posterior"] = philox_generator{~std::uint64_t{0}, 7, (std::uint64_t{1} << 60) + 3};
    a.save(dir.path);
    BOOST_TEST(train::checkpoint_exists(dir.path));
    BOOST_TEST(entries_in(dir.path) == 2u);  // no temporary is left behind

    const auto s = train::read_train_state(dir.path);
    BOOST_TEST(s.step == 3);
    BOOST_TEST(s.loader_epoch == a.loader.epoch());
    BOOST_TEST(s.loader_position == a.loader.position());
    BOOST_TEST(s.generators.size() == 2u);
    BOOST_TEST(s.generators.at("posterior").seed == ~std::uint64_t{0});  // 64-bit values survive exactly
    BOOST_TEST(s.generators.at("posterior").offset == (std::uint64_t{1} << 60) + 3);
    BOOST_TEST(s.config_json == a.state.config_json);

    // The weights file is a plain state_dict; the moments are named as for_each_state names them.
    io::safetensors_file model_file(dir / "model.safetensors");
    BOOST_TEST(model_file.contains("0.weight"));
    BOOST_TEST(model_file.metadata().at("format") == "pt");
    io::safetensors_file state_file(dir / "train_state.safetensors");
    BOOST_TEST(state_file.contains("2.bias.exp_avg_sq"));
    BOOST_TEST(state_file.entries().size() == 8u);
    BOOST_TEST(state_file.get<float>("0.weight.exp_avg").to_vector() == a.opt.find("0.weight")->exp_avg.to_vector());

    run b(data, 3);
    b.state.generators["posterior"] = {};
    b.load(dir.path);
    BOOST_TEST(b.parameters() == a.parameters());
    for (auto& sl : a.opt.slots()) {
        BOOST_TEST(b.opt.find(sl.name)->exp_avg.to_vector() == sl.exp_avg.to_vector());
        BOOST_TEST(b.opt.find(sl.name)->exp_avg_sq.to_vector() == sl.exp_avg_sq.to_vector());
    }
    BOOST_TEST(b.state.generators.at("posterior").stream == 7u);

    // Saving again replaces the pair, and the pair it replaces is kept as the previous one.
    a.step();
    a.save(dir.path);
    BOOST_TEST(train::read_train_state(dir.path).step == 4);
    BOOST_TEST(entries_in(dir.path) == 4u);
    BOOST_TEST(train::detail::parse_train_state(io::safetensors_file(dir / "train_state.previous.safetensors")).step == 3);
    BOOST_TEST(io::safetensors_file(dir / "model.previous.safetensors").metadata().at("checkpoint_id") ==
               io::safetensors_file(dir / "train_state.previous.safetensors").metadata().at("checkpoint_id"));
    a.state.config_json = "{not json";
    BOOST_CHECK_THROW(a.save(dir.path), std::invalid_argument);
}

BOOST_AUTO_TEST_SUITE_END()

/// A checkpoint of one step of a run, in a scratch directory.
struct saved_checkpoint {
    temp_dir dir{"checkpoint"};
    data::labeled_images<float> data = toy_data();
    run a{data, 2};
    saved_checkpoint() {
        a.step();
        a.save(dir.path);
    }
};

BOOST_FIXTURE_TEST_SUITE(errors, saved_checkpoint)

BOOST_AUTO_TEST_CASE(bad_state_files_name_file_and_tensor_and_change_nothing) {
    const auto state_path = dir / "train_state.safetensors";
    const auto good_state = read_bytes(state_path);

    run b(data, 9);
    const auto params_before = b.parameters();
    const auto moment_before = b.opt.find("0.weight")->exp_avg.to_vector();
    const auto unchanged = [&] {
        BOOST_TEST(b.parameters() == params_before);
        BOOST_TEST(b.opt.find("0.weight")->exp_avg.to_vector() == moment_before);
        BOOST_TEST(b.opt.step_count() == 0);
        BOOST_TEST(b.state.step == 0);
    };

    // Truncated.
    write_bytes(state_path, good_state.substr(0, good_state.size() - 40));
    auto msg = io_error_message([&] { b.load(dir.path); });
    BOOST_TEST(contains(msg, state_path.string()), msg);
    unchanged();

    // A moment missing.
    write_bytes(state_path, good_state);
    rewrite(state_path, [](const std::string& name, tensor<float> t) { return name == "2.weight.exp_avg_sq" ? tensor<float>() : std::move(t); });
    msg = io_error_message([&] { b.load(dir.path); });
    BOOST_TEST(contains(msg, state_path.string()), msg);
    BOOST_TEST(contains(msg, "'2.weight.exp_avg_sq' (16, 8) is missing"), msg);
    unchanged();

    // A moment of the wrong shape, and metadata that is not a train state's.
    write_bytes(state_path, good_state);
    rewrite(state_path, [](const std::string& name, tensor<float> t) { return name == "0.bias.exp_avg" ? tensor<float>::zeros({9}) : std::move(t); });
    msg = io_error_message([&] { b.load(dir.path); });
    BOOST_TEST(contains(msg, "'0.bias.exp_avg' has shape (9) in the file but (8) in the optimizer"), msg);
    unchanged();
    {
        io::safetensors_writer w;
        w.add("x", tensor<float>::zeros({1}).view());
        w.write(state_path);
    }
    msg = io_error_message([&] { b.load(dir.path); });
    BOOST_TEST((contains(msg, state_path.string()) && contains(msg, "not a train state file")), msg);
    unchanged();

    // A generator the run needs is not in the file.
    write_bytes(state_path, good_state);
    b.state.generators["dropout"] = {};
    msg = io_error_message([&] { b.load(dir.path); });
    BOOST_TEST(contains(msg, "generator 'dropout' is missing"), msg);
    b.state.generators.erase("dropout");
    unchanged();

    // Model and state from different saves (a crash between the renames of a save): the state
    // without its model is passed over, and the pair before it, kept as the previous one, loads.
    const auto first_parameters = a.parameters();
    const auto old_model = read_bytes(dir / "model.safetensors");
    a.step();
    a.save(dir.path);
    write_bytes(dir / "model.safetensors", old_model);
    {
        run c(data, 9);
        c.load(dir.path);
        BOOST_TEST(c.state.step == 1);
        BOOST_TEST(c.parameters() == first_parameters);
    }
    // Without the previous pair nothing pairs: the error names the state file and the model file it found.
    fs::remove(dir / "model.previous.safetensors");
    fs::remove(dir / "train_state.previous.safetensors");
    msg = io_error_message([&] { b.load(dir.path); });
    BOOST_TEST((contains(msg, state_path.string()) && contains(msg, "has no model file from the same save") &&
                contains(msg, "model.safetensors (checkpoint id step-1-")),
               msg);
    unchanged();

    // A missing file.
    fs::remove(dir / "model.safetensors");
    msg = io_error_message([&] { b.load(dir.path); });
    BOOST_TEST((contains(msg, "train_state.safetensors") && contains(msg, "has no model file")), msg);
    BOOST_TEST(!train::checkpoint_exists(dir.path));
    unchanged();
}

// One flipped bit in the latest checkpoint's weights (safetensors has no checksum of its own; the
// files vediff writes carry XXH3 sums) is found on loading: the run resumes from the previous
// checkpoint, and without one the error names the file and the tensor.
BOOST_AUTO_TEST_CASE(a_damaged_latest_checkpoint_falls_back_to_the_previous_one) {
    const auto first_parameters = a.parameters();
    a.step();
    a.save(dir.path);  // step 2; step 1 is now the previous pair
    auto bytes = read_bytes(dir / "model.safetensors");
    bytes[bytes.size() - 5] = char(bytes[bytes.size() - 5] ^ 0x10);  // inside the last tensor's data
    write_bytes(dir / "model.safetensors", bytes);
    run c(data, 9);
    c.load(dir.path);
    BOOST_TEST(c.state.step == 1);
    BOOST_TEST(c.parameters() == first_parameters);
    BOOST_TEST(train::read_train_state(dir.path).step == 1);
    fs::remove(dir / "model.previous.safetensors");
    const auto msg = io_error_message([&] { c.load(dir.path); });
    BOOST_TEST((contains(msg, (dir / "model.safetensors").string()) && contains(msg, "fails its checksum")), msg);
}

// A save stopped after any of its renames (a crash, kill -9) leaves a checkpoint that loads: the
// last one saved before, or the new one once its last rename is done.
BOOST_AUTO_TEST_CASE(a_save_stopped_after_any_rename_leaves_an_intact_checkpoint) {
    a.step();
    a.save(dir.path);  // the directory holds steps 2 (latest) and 1 (previous)
    std::map<std::string, std::string> before;
    for (const auto& e : fs::directory_iterator(dir.path)) before[e.path().filename().string()] = read_bytes(e.path());
    BOOST_TEST_REQUIRE(before.size() == 4u);
    // The next save's files as save_checkpoint has them before its renames: written by a save of step 3 elsewhere.
    temp_dir next("checkpoint_next");
    a.step();
    a.save(next.path);
    const auto pending_model = train::pending_path(dir / "model.safetensors"), pending_state = train::pending_path(dir / "train_state.safetensors");
    const auto renames = train::detail::checkpoint_renames(dir.path, pending_model, pending_state);
    for (std::size_t stop = 0; stop <= renames.size(); ++stop) {
        for (const auto& e : fs::directory_iterator(dir.path)) fs::remove(e.path());
        for (const auto& [name, content] : before) write_bytes(dir / name, content);
        fs::copy_file(next / "model.safetensors", pending_model);
        fs::copy_file(next / "train_state.safetensors", pending_state);
        for (std::size_t k = 0; k < stop; ++k) fs::rename(renames[k].from, renames[k].to);
        run c(data, 9);
        c.load(dir.path);
        BOOST_TEST(c.state.step == (stop == renames.size() ? 3 : 2), "stopped after " << stop << " renames");
    }
}

// A full disk, injected as a file-size limit (RLIMIT_FSIZE: a write past it fails with EFBIG, as
// one on a full disk fails with ENOSPC; the test cannot mount a small file system): the save is a
// named error, the checkpoint before it stays intact and loadable, and no partial file remains.
BOOST_AUTO_TEST_CASE(a_full_disk_keeps_the_previous_checkpoint) {
    const auto model_bytes = read_bytes(dir / "model.safetensors");
    const auto state_bytes = read_bytes(dir / "train_state.safetensors");
    a.step();
    rlimit saved{};
    BOOST_TEST_REQUIRE(::getrlimit(RLIMIT_FSIZE, &saved) == 0);
    const auto previous_handler = std::signal(SIGXFSZ, SIG_IGN);  // the limit's signal would end the test
    rlimit small = saved;
    small.rlim_cur = 1000;  // the model file alone is larger
    BOOST_TEST_REQUIRE(::setrlimit(RLIMIT_FSIZE, &small) == 0);
    const auto msg = io_error_message([&] { a.save(dir.path); });
    ::setrlimit(RLIMIT_FSIZE, &saved);
    std::signal(SIGXFSZ, previous_handler);
    BOOST_TEST((contains(msg, "model.safetensors") && contains(msg, "write failed")), msg);
    BOOST_TEST(read_bytes(dir / "model.safetensors") == model_bytes);
    BOOST_TEST(read_bytes(dir / "train_state.safetensors") == state_bytes);
    BOOST_TEST(entries_in(dir.path) == 2u);  // no pending or temporary file
    run c(data, 5);
    c.load(dir.path);
    BOOST_TEST(c.state.step == 1);
}

BOOST_AUTO_TEST_CASE(model_shape_mismatch_names_tensor_and_shapes) {
    // A model whose first layer is wider: the moments already disagree, and are reported first.
    using wide_model = nn::sequential<nn::linear<float>, nn::silu<float>, nn::linear<float>>;
    wide_model wide(nn::linear<float>(16, 9, true, 1), {}, nn::linear<float>(9, 16, true, 2));
    optim::adamw<float> opt(wide, adamw_cfg);
    train::train_state s;
    s.generators["noise"] = {};
    const auto msg = io_error_message([&] { train::load_checkpoint(dir.path, wide, opt, s); });
    BOOST_TEST(contains(msg, "'0.weight.exp_avg' has shape (8, 16) in the file but (9, 16)"), msg);
}

BOOST_AUTO_TEST_CASE(failed_saves_keep_the_previous_checkpoint) {
    const auto model_bytes = read_bytes(dir / "model.safetensors");
    const auto state_bytes = read_bytes(dir / "train_state.safetensors");
    const auto intact = [&] {
        BOOST_TEST(read_bytes(dir / "model.safetensors") == model_bytes);
        BOOST_TEST(read_bytes(dir / "train_state.safetensors") == state_bytes);
        BOOST_TEST(entries_in(dir.path) == 2u);
        run c(data, 5);
        c.load(dir.path);
        BOOST_TEST(c.state.step == 1);
    };

    // A diverged parameter: nothing is written.
    a.step();
    auto& w = nn::named_parameters(a.model)[2].second->value;  // "2.weight"
    const float saved = w.data()[3];
    w.data()[3] = std::numeric_limits<float>::quiet_NaN();
    const auto msg = error_message<numeric_error>([&] { a.save(dir.path); });
    BOOST_TEST((contains(msg, "'2.weight'") && contains(msg, "previous checkpoint is kept")), msg);
    intact();
    w.data()[3] = saved;

    // The second file cannot be written (its temporary name is taken by a directory): the first
    // temporary is removed and the pair stays as it was.
    fs::create_directories(train::pending_path(dir / "train_state.safetensors"));
    const auto io_msg = io_error_message([&] { a.save(dir.path); });
    BOOST_TEST(contains(io_msg, "train_state.safetensors"), io_msg);
    fs::remove(train::pending_path(dir / "train_state.safetensors"));
    intact();

    // A save that goes through replaces both.
    a.save(dir.path);
    BOOST_TEST(train::read_train_state(dir.path).step == 2);
}

BOOST_AUTO_TEST_SUITE_END()
