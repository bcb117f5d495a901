#pragma once
// Checkpoints for an exact resume. A checkpoint is a directory holding
//   model.safetensors        the model's state_dict (loads in PyTorch, and with io::load_state_dict)
//   train_state.safetensors  the optimizer's state (tensors named as its for_each_state names them:
//                            adamw's moments, or muon's momentum buffers and moments)
//                            and, in __metadata__, the step, the optimizer's step count, the
//                            Philox generators by name, the loader's epoch and position, and the
//                            run's configuration as a JSON string.
// With the same program, thread count and data, a run resumed from a checkpoint continues bit for
// bit as the uninterrupted run would have.
//
// Saving never harms the checkpoint already there: nothing is written when a parameter or moment
// is not finite; both files are first written completely (and flushed) under temporary names,
// then renamed over the old pair, one rename right after the other. Both files carry the same
// checkpoint id, and loading refuses a pair whose ids differ (left by a crash between the two
// renames) instead of resuming from mixed states. Loading validates both files completely
// before it changes anything; every problem is an io_error naming the file and the tensor.
//
// The last two checkpoints are kept: a save first renames the current pair to
// model.previous.safetensors and train_state.previous.safetensors. Every file carries checksums
// (io/safetensors.hpp), and loading pairs the files present by checkpoint id and takes the newest
// pair that is intact: a damaged or half-replaced latest checkpoint is named in a warning and the
// run resumes from the one before it. At every moment of a save (and of a kill −9 during one) the
// directory holds at least one intact pair.
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <algorithm>
#include <initializer_list>
#include <map>
#include <memory>
#include <random>
#include <stdexcept>
#include <string>
#include <string_view>
#include <system_error>
#include <vector>

#include <fcntl.h>
#include <unistd.h>

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <nlohmann/json.hpp>

#include "vediff/core/error.hpp"
#include "vediff/core/random.hpp"
#include "vediff/io/safetensors.hpp"
#include "vediff/nn/layer.hpp"
#include "vediff/optim/adamw.hpp"

namespace vediff::train {

inline constexpr std::string_view model_file_name = "model.safetensors";
inline constexpr std::string_view state_file_name = "train_state.safetensors";
/// The previous checkpoint's files, kept beside the latest.
inline constexpr std::string_view previous_model_file_name = "model.previous.safetensors";
inline constexpr std::string_view previous_state_file_name = "train_state.previous.safetensors";
/// The value of the "format" metadata key of a train state file.
inline constexpr std::string_view train_state_format = "vediff.train_state.v1";

/// What besides weights and optimizer moments an exact resume needs.
struct train_state {
    std::int64_t step = 0;                               // training steps completed
    std::map<std::string, philox_generator> generators;  // random streams by name, e.g. "posterior"
    std::int64_t loader_epoch = 0;                       // batch_loader::epoch()
    std::int64_t loader_position = 0;                    // batch_loader::position()
    std::string config_json = "{}";                      // the run's configuration (a JSON text)
};

namespace detail {

inline const std::vector<std::string>& required_state_keys() {
    static const std::vector<std::string> keys = {"format", "checkpoint_id", "step", "optimizer.step_count", "loader.epoch",
                                                  "loader.position", "generators", "config"};
    return keys;
}

/// A non-negative integer from the metadata; throws io_error naming the file and the key.
inline std::int64_t metadata_integer(const io::safetensors_file& f, const std::string& key) {
    const auto it = f.metadata().find(key);
    if (it == f.metadata().end()) f.fail(fmt::format("metadata key '{}' is missing", key));
    std::size_t used = 0;
    long long v = -1;
    try {
        v = std::stoll(it->second, &used);
    } catch (const std::exception&) {
        used = 0;
    }
    if (used == 0 || used != it->second.size() || v < 0)
        f.fail(fmt::format("metadata '{}' is '{}', not a non-negative integer", key, it->second));
    return static_cast<std::int64_t>(v);
}

/// Metadata of the train state, parsed and checked; throws io_error naming the file and the key.
inline train_state parse_train_state(const io::safetensors_file& f) {
    const auto fail = [&](const std::string& cause) { f.fail(cause); };
    const auto& meta = f.metadata();
    for (const auto& key : required_state_keys())
        if (!meta.count(key)) fail(fmt::format("not a train state file: metadata key '{}' is missing", key));
    if (meta.at("format") != train_state_format)
        fail(fmt::format("metadata 'format' is '{}', expected '{}'", meta.at("format"), train_state_format));
    const auto integer = [&](const char* key) { return metadata_integer(f, key); };
    train_state s;
    s.step = integer("step");
    s.loader_epoch = integer("loader.epoch");
    s.loader_position = integer("loader.position");
    s.config_json = meta.at("config");
    try {
        [[maybe_unused]] const auto config = nlohmann::json::parse(s.config_json);
        const auto gens = nlohmann::json::parse(meta.at("generators"));
        if (!gens.is_object()) fail("metadata 'generators' is not a JSON object");
        for (auto& [name, g] : gens.items()) {
            for (const char* field : {"seed", "stream", "offset"})
                if (!g.is_object() || !g.contains(field) || !g[field].is_number_unsigned())
                    fail(fmt::format("generator '{}' lacks a non-negative integer '{}'", name, field));
            s.generators[name] = {g["seed"].get<std::uint64_t>(), g["stream"].get<std::uint64_t>(), g["offset"].get<std::uint64_t>()};
        }
    } catch (const nlohmann::json::exception& e) {
        fail(fmt::format("malformed JSON in the metadata: {}", e.what()));
    }
    return s;
}

template <class T, device D>
void require_finite(const char* what, const std::string& name, const tensor_view<T, D>& t) {
    for (const T v : t.to_vector())
        if (!std::isfinite(static_cast<double>(v)))
            throw numeric_error(fmt::format("save_checkpoint: {} '{}' {} holds a non-finite value ({}); the previous checkpoint is kept",
                                            what, name, t.shape(), static_cast<double>(v)));
}

/// Removes the temporary files of an unfinished save.
struct pending_files {
    std::vector<std::filesystem::path> paths;
    ~pending_files() {
        std::error_code ec;
        for (auto& p : paths) std::filesystem::remove(p, ec);
    }
};

inline std::string new_checkpoint_id(std::int64_t step) {
    std::random_device rd;
    const auto now = std::chrono::steady_clock::now().time_since_epoch().count();
    const std::uint64_t nonce = (std::uint64_t{rd()} << 32) ^ rd() ^ static_cast<std::uint64_t>(now) ^ static_cast<std::uint64_t>(::getpid());
    return fmt::format("step-{}-{:016x}", step, nonce);
}

} // namespace detail

namespace detail {

struct rename_step {
    std::filesystem::path from, to;
    bool must_exist;  // false: skipped when `from` is absent (the first save has no current pair)
};

/// The renames that end a save, in order: the current pair becomes the previous one, state first,
/// then the new pair comes in, state first. Wherever the sequence stops (a crash, kill −9), one
/// pair of the four files shares a checkpoint id and is intact (intact_checkpoints pairs them).
inline std::vector<rename_step> checkpoint_renames(const std::filesystem::path& dir, const std::filesystem::path& pending_model,
                                                   const std::filesystem::path& pending_state) {
    return {{dir / state_file_name, dir / previous_state_file_name, false},
            {dir / model_file_name, dir / previous_model_file_name, false},
            {pending_state, dir / state_file_name, true},
            {pending_model, dir / model_file_name, true}};
}

} // namespace detail

/// The temporary name a file of the checkpoint has while a save is under way.
inline std::filesystem::path pending_path(const std::filesystem::path& file) {
    return file.string() + ".pending." + std::to_string(::getpid());
}

/// True when `dir` holds a model file and a train state file (latest or previous).
inline bool checkpoint_exists(const std::filesystem::path& dir) {
    std::error_code ec;
    const auto present = [&](std::string_view name) { return std::filesystem::is_regular_file(dir / name, ec); };
    return (present(model_file_name) || present(previous_model_file_name)) && (present(state_file_name) || present(previous_state_file_name));
}

/// The files of one checkpoint, opened (so verified) and its train state parsed.
struct checkpoint_pair {
    std::filesystem::path model_path, state_path;
    std::shared_ptr<const io::safetensors_file> model, state;
    train_state meta;
};

/// The checkpoints in `dir` whose two files open, verify and carry the same checkpoint id, newest
/// step first; `problems` collects why each other file was passed over (a damaged file, a lone
/// file of an interrupted save).
inline std::vector<checkpoint_pair> intact_checkpoints(const std::filesystem::path& dir, std::vector<std::string>& problems) {
    namespace fs = std::filesystem;
    struct opened {
        fs::path path;
        std::shared_ptr<const io::safetensors_file> file;
        std::string id;
    };
    const auto open_all = [&](std::initializer_list<std::string_view> names) {
        std::vector<opened> out;
        for (const auto name : names) {
            const fs::path path = dir / name;
            std::error_code ec;
            if (!fs::is_regular_file(path, ec)) continue;
            try {
                // Mapped: the four files of two checkpoints (several GB for a large DiT) are verified by
                // reading them through, and stay out of memory until a tensor is read.
                auto f = std::make_shared<const io::safetensors_file>(path, io::safetensors_access::map);
                io::note_if_unverified(*f);
                const auto it = f->metadata().find("checkpoint_id");
                out.push_back({path, f, it == f->metadata().end() ? std::string("<none>") : it->second});
            } catch (const io_error& e) {
                problems.push_back(e.what());
            }
        }
        return out;
    };
    const auto models = open_all({model_file_name, previous_model_file_name});
    const auto states = open_all({state_file_name, previous_state_file_name});
    std::vector<checkpoint_pair> pairs;
    for (const auto& s : states) {
        train_state meta;
        try {
            meta = detail::parse_train_state(*s.file);
        } catch (const io_error& e) {
            problems.push_back(e.what());
            continue;
        }
        const auto m = std::find_if(models.begin(), models.end(), [&](const opened& o) { return o.id == s.id; });
        if (m == models.end()) {
            std::vector<std::string> ids;
            for (const auto& o : models) ids.push_back(fmt::format("{} (checkpoint id {})", o.path.string(), o.id));
            problems.push_back(fmt::format("{} (checkpoint id {}) has no model file from the same save{}{}", s.path.string(), s.id,
                                           ids.empty() ? "" : ": there is only ", fmt::join(ids, ", ")));
            continue;
        }
        pairs.push_back({m->path, s.path, m->file, s.file, std::move(meta)});
    }
    std::stable_sort(pairs.begin(), pairs.end(), [](const checkpoint_pair& a, const checkpoint_pair& b) { return a.meta.step > b.meta.step; });
    return pairs;
}

/// The newest intact checkpoint of `dir`; a warning on stderr names what was passed over to reach
/// it. io_error lists every problem when there is none.
inline checkpoint_pair newest_intact_checkpoint(const std::filesystem::path& dir) {
    std::vector<std::string> problems;
    auto pairs = intact_checkpoints(dir, problems);
    if (pairs.empty()) {
        if (problems.empty())
            throw io_error(fmt::format("load_checkpoint: {}: no checkpoint (a checkpoint directory holds {} and {})", dir.string(),
                                       model_file_name, state_file_name));
        throw io_error(fmt::format("load_checkpoint: {}: no intact checkpoint: {}", dir.string(), fmt::join(problems, "; ")));
    }
    for (const auto& p : problems)
        fmt::print(stderr, "warning: {}; using the checkpoint of step {} ({})\n", p, pairs.front().meta.step, pairs.front().state_path.string());
    return std::move(pairs.front());
}

/// Saves model, optimizer and state into `dir` (created if needed), replacing the checkpoint there.
template <class Model, class Optimizer, class T = typename Optimizer::value_type, device D = typename Optimizer::device_type>
void save_checkpoint(const std::filesystem::path& dir, Model& model, Optimizer& optimizer, const train_state& state) {
    namespace fs = std::filesystem;
    try {
        [[maybe_unused]] const auto config = nlohmann::json::parse(state.config_json);
    } catch (const nlohmann::json::exception& e) {
        throw std::invalid_argument(fmt::format("save_checkpoint: the run configuration is not JSON: {}", e.what()));
    }
    if (state.step < 0 || state.loader_epoch < 0 || state.loader_position < 0)
        throw std::invalid_argument(fmt::format("save_checkpoint: negative step {}, loader epoch {} or position {}", state.step,
                                                state.loader_epoch, state.loader_position));
    // A diverged run must not replace the last good checkpoint.
    for (auto& [name, p] : nn::named_parameters(model)) detail::require_finite("parameter", name, p->value.view());
    io::safetensors_writer moments;
    optimizer.for_each_state([&](const std::string& name, tensor<T, D>& t) {
        detail::require_finite("optimizer state", name, t.view());
        moments.add(name, t.view());
    });

    std::error_code ec;
    fs::create_directories(dir, ec);
    if (ec) throw io_error(fmt::format("save_checkpoint: cannot create the directory {}: {}", dir.string(), ec.message()));

    const std::string id = detail::new_checkpoint_id(state.step);
    nlohmann::json gens = nlohmann::json::object();
    for (auto& [name, g] : state.generators) gens[name] = {{"seed", g.seed}, {"stream", g.stream}, {"offset", g.offset}};
    moments.add_metadata("format", std::string(train_state_format));
    moments.add_metadata("checkpoint_id", id);
    moments.add_metadata("step", std::to_string(state.step));
    moments.add_metadata("optimizer.step_count", std::to_string(optimizer.step_count()));
    moments.add_metadata("loader.epoch", std::to_string(state.loader_epoch));
    moments.add_metadata("loader.position", std::to_string(state.loader_position));
    moments.add_metadata("generators", gens.dump());
    moments.add_metadata("config", state.config_json);

    const fs::path model_path = dir / model_file_name, state_path = dir / state_file_name;
    for (const auto& p : {model_path, state_path}) io::remove_stale_temporaries(p, ".pending.");  // of saves killed before
    detail::pending_files pending{{pending_path(model_path), pending_path(state_path)}};
    io::save_state_dict(pending.paths[0], model, {{"format", "pt"}, {"checkpoint_id", id}, {"step", std::to_string(state.step)}});
    moments.write(pending.paths[1]);
    // Both files are complete and on disk: swap them in.
    for (const auto& r : detail::checkpoint_renames(dir, pending.paths[0], pending.paths[1])) {
        std::error_code ec;
        if (!r.must_exist && !fs::exists(r.from, ec)) continue;
        if (::rename(r.from.c_str(), r.to.c_str()) != 0)
            throw io_error(fmt::format("save_checkpoint: cannot rename {} to {}: {}", r.from.string(), r.to.string(), std::strerror(errno)));
    }
    const int dfd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd >= 0) {
        ::fsync(dfd);
        ::close(dfd);
    }
}

/// Reads the train state of the checkpoint load_checkpoint would load (the newest intact one)
/// without a model, e.g. its configuration, to build the model before loading it.
inline train_state read_train_state(const std::filesystem::path& dir) { return newest_intact_checkpoint(dir).meta; }

/// The model file of the checkpoint load_checkpoint would load, for loading the weights alone.
inline std::filesystem::path checkpoint_model_file(const std::filesystem::path& dir) { return newest_intact_checkpoint(dir).model_path; }

namespace detail {

/// Loads one checkpoint pair into model, optimizer and state; nothing is changed unless all is valid.
template <class Model, class Optimizer, class T, device D>
void load_checkpoint_pair(const checkpoint_pair& pair, Model& model, Optimizer& optimizer, train_state& state) {
    const io::safetensors_file& sf = *pair.state;
    train_state loaded = pair.meta;
    const std::int64_t optimizer_steps = metadata_integer(sf, "optimizer.step_count");

    std::vector<std::string> problems;
    for (auto& [name, g] : state.generators)
        if (!loaded.generators.count(name)) problems.push_back(fmt::format("generator '{}' is missing", name));
    for (auto& [name, g] : loaded.generators)
        if (!state.generators.count(name)) problems.push_back(fmt::format("generator '{}' is not one of this run's", name));
    std::map<std::string, bool> expected;
    optimizer.for_each_state([&](const std::string& name, tensor<T, D>& t) {
        expected[name] = true;
        if (!sf.contains(name))
            problems.push_back(fmt::format("optimizer state tensor '{}' {} is missing", name, t.shape()));
        else if (!(sf.entry(name).shape == t.shape()))
            problems.push_back(fmt::format("optimizer state tensor '{}' has shape {} in the file but {} in the optimizer", name,
                                           sf.entry(name).shape, t.shape()));
    });
    for (const auto& name : sf.names())
        if (!expected.count(name)) problems.push_back(fmt::format("tensor '{}' is not a state of this optimizer", name));
    if (!problems.empty()) throw io_error(fmt::format("load_checkpoint: {}: {}", pair.state_path.string(), fmt::join(problems, "; ")));

    io::load_state_dict(*pair.model, model);  // validates everything before it changes the model
    optimizer.for_each_state([&](const std::string& name, tensor<T, D>& t) { sf.read_into(name, t.view()); });
    optimizer.set_step_count(optimizer_steps);
    state = std::move(loaded);
}

} // namespace detail

/// Loads the newest intact checkpoint saved by save_checkpoint into `dir` into model, optimizer
/// and state. The generators the caller needs are the keys of state.generators: the file must hold
/// exactly these (seed, stream and offset are all restored). The moments must match the
/// optimizer's parameters by name and shape, the weights the model's (io::load_state_dict).
/// Nothing is changed unless all is valid. When the latest checkpoint is damaged or incomplete,
/// a warning names it and the previous one is loaded; io_error lists every problem when none loads.
template <class Model, class Optimizer, class T = typename Optimizer::value_type, device D = typename Optimizer::device_type>
void load_checkpoint(const std::filesystem::path& dir, Model& model, Optimizer& optimizer, train_state& state) {
    std::vector<std::string> problems;
    const auto pairs = intact_checkpoints(dir, problems);
    if (pairs.empty() && problems.empty())
        throw io_error(fmt::format("load_checkpoint: {}: no checkpoint (a checkpoint directory holds {} and {})", dir.string(),
                                   model_file_name, state_file_name));
    for (const auto& pair : pairs) {
        try {
            detail::load_checkpoint_pair<Model, Optimizer, T, D>(pair, model, optimizer, state);
        } catch (const io_error& e) {
            problems.push_back(e.what());
            continue;
        }
        for (const auto& p : problems)
            fmt::print(stderr, "warning: {}; resumed from the checkpoint of step {} ({})\n", p, pair.meta.step, pair.state_path.string());
        return;
    }
    if (problems.size() == 1) throw io_error(problems.front());
    throw io_error(fmt::format("load_checkpoint: {}: no checkpoint loads: {}", dir.string(), fmt::join(problems, "; ")));
}

} // namespace vediff::train
