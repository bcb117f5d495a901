// forward: one forward pass of a model loaded from safetensors, to compare vediff with PyTorch on
// your own weights (io/forward_pass.hpp says which inputs and outputs each model has).
//   forward --model dit|lightningdit|autoencoder|inception|lpips --config C.json --weights W.safetensors
//           --inputs I.safetensors --out O.safetensors
#include <cstdio>
#include <exception>
#include <string>

#include <cxxopts.hpp>
#include <fmt/format.h>

#include "vediff/backend/cpu.hpp"
#include "vediff/io/forward_pass.hpp"
#include "vediff/io/safetensors.hpp"

int main(int argc, char** argv) {
    cxxopts::Options options("forward", "One forward pass of a model loaded from safetensors (vediff vs. PyTorch parity)");
    // clang-format off
    options.add_options()
        ("model", "dit, lightningdit, autoencoder, inception or lpips", cxxopts::value<std::string>())
        ("config", "JSON of the reference constructor's keyword arguments", cxxopts::value<std::string>())
        ("weights", "state_dict as safetensors (loaded strictly)", cxxopts::value<std::string>())
        ("inputs", "safetensors with x (and t, y for the transformers)", cxxopts::value<std::string>())
        ("out", "safetensors to write the outputs to", cxxopts::value<std::string>())
        ("h,help", "this help");
    // clang-format on
    try {
        const auto args = options.parse(argc, argv);
        if (args.count("help")) {
            std::puts(options.help().c_str());
            return 0;
        }
        for (const char* required : {"model", "config", "weights", "inputs", "out"})
            if (!args.count(required)) throw std::invalid_argument(fmt::format("--{} is required (see --help)", required));
        const auto outputs = vediff::io::run_forward(args["model"].as<std::string>(), args["config"].as<std::string>(),
                                                     args["weights"].as<std::string>(), args["inputs"].as<std::string>());
        vediff::io::safetensors_writer writer;
        for (const auto& [name, t] : outputs) writer.add(name, t.view());
        writer.write(args["out"].as<std::string>());
        for (const auto& [name, t] : outputs) fmt::print("{} {}\n", name, t.shape());
        fmt::print("wrote {}\n", args["out"].as<std::string>());
        return 0;
    } catch (const std::exception& e) {
        fmt::print(stderr, "forward: {}\n", e.what());
        return 1;
    }
}
