// train_dit: class-conditional flow matching of a diffusion transformer on a latent cache; the same
// job as `vediff train-dit` (include/vediff/jobs/train_dit.hpp).
//   train_dit --latents runs/ve/latents.safetensors --out runs/dit_ve --time-budget 1200
//   train_dit --out runs/dit_ve --resume
#include "program_devices.hpp"
#include "vediff/jobs/train_dit.hpp"

int main(int argc, char** argv) { return vediff::jobs::train_dit_main<program_devices>(argc, argv); }
