// vediff: the one command line of the library. Each subcommand is a job of include/vediff/jobs/,
// the same code the example executables run:
//   vediff experiment [--preset smoke|quick|paper] [--out runs/NAME]   the paper's comparison, end to end
//   vediff train-tokenizer | encode | train-dit | sample | eval | toy | classifier   one stage each
//   vediff --help, vediff <command> --help                              every flag with its default
// The model stages take --device cpu|cuda (cuda where the program was built with nvcc).
#include <cstdio>
#include <cstring>
#include <string>
#include <string_view>

#include <fmt/format.h>

#include "program_devices.hpp"
#include "vediff/distributed/launch.hpp"
#include "vediff/jobs/classifier.hpp"
#include "vediff/jobs/encode_latents.hpp"
#include "vediff/jobs/evaluate.hpp"
#include "vediff/jobs/export_tokenizer.hpp"
#include "vediff/jobs/experiment.hpp"
#include "vediff/jobs/sample.hpp"
#include "vediff/jobs/toy.hpp"
#include "vediff/jobs/train_dit.hpp"
#include "vediff/jobs/train_tokenizer.hpp"

namespace {

struct subcommand {
    const char* name;
    const char* summary;
    int (*main)(int, char**, const std::string&);
    bool data_parallel = false;  // runs as the ranks of `mpirun -np N` (the trainers, experiment); the others run as one process
};

constexpr subcommand subcommands[] = {
    {"experiment", "KL against VE end to end: tokenizers, DiTs, SDE/ODE samples, metrics, table, figures; trains data-parallel under mpirun",
     vediff::jobs::experiment_main<program_devices>, true},
    {"train-tokenizer", "train the VAE tokenizer with the VE loss (or KL); data-parallel under mpirun",
     vediff::jobs::train_tokenizer_main<program_devices>, true},
    {"encode", "encode Fashion-MNIST with a tokenizer into a latent cache", vediff::jobs::encode_latents_main<program_devices>},
    {"export", "write a trained tokenizer in LDM's or diffusers' naming, for PyTorch code", vediff::jobs::export_main},
    {"train-dit", "train a class-conditional DiT / LightningDiT on a latent cache; data-parallel under mpirun",
     vediff::jobs::train_dit_main<program_devices>, true},
    {"sample", "class-conditional samples of a trained DiT, decoded", vediff::jobs::sample_main<program_devices>},
    {"eval", "tokenizer and sample metrics: PSNR, rFD, gFD, precision/recall, robustness, equilibrium",
     vediff::jobs::evaluate_main<program_devices>},
    {"toy", "the 2-D toy of the paper's Figure 1: KL against VE on a spiral", vediff::jobs::toy_main},
    {"classifier", "train the Fashion-MNIST classifier (the metrics' feature network)", vediff::jobs::classifier_main<program_devices>},
};

void print_usage(std::FILE* to) {
    fmt::print(to, "vediff: latent diffusion with the Variance Expansion loss\n\nusage: vediff <command> [flags]\n\ncommands:\n");
    for (const auto& c : subcommands) fmt::print(to, "  {:<16} {}\n", c.name, c.summary);
    fmt::print(to, "\n`vediff <command> --help` lists the command's flags with their defaults.\n");
    fmt::print(to, "devices of this build (--device): {}\n", program_devices::names());
}

} // namespace

int main(int argc, char** argv) {
    if (argc < 2) {
        print_usage(stderr);
        return 2;
    }
    const std::string_view command = argv[1];
    if (command == "-h" || command == "--help" || command == "help") {
        print_usage(stdout);
        return 0;
    }
    for (const auto& c : subcommands) {
        if (command != c.name) continue;
        // N copies of a one-process job would each do all of it and write the same files.
        if (const int ranks = vediff::distributed::launcher_world_size(); ranks > 1 && !c.data_parallel) {
            fmt::print(stderr, "vediff {}: started as one of {} MPI processes, but this command runs in one process (only "
                               "train-tokenizer, train-dit and experiment are data-parallel); run it without mpirun\n", c.name, ranks);
            return 2;
        }
        return c.main(argc - 1, argv + 1, fmt::format("vediff {}", c.name));
    }
    fmt::print(stderr, "vediff: unknown command '{}'\n\n", command);
    print_usage(stderr);
    return 2;
}
