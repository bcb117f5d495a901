// encode_latents: a trained tokenizer + Fashion-MNIST → the latent cache a diffusion transformer
// trains on; the same job as `vediff encode` (include/vediff/jobs/encode_latents.hpp).
//   encode_latents --tokenizer runs/ve --out runs/ve/latents.safetensors
#include "program_devices.hpp"
#include "vediff/jobs/encode_latents.hpp"

int main(int argc, char** argv) { return vediff::jobs::encode_latents_main<program_devices>(argc, argv); }
