// sample: class-conditional images from a trained diffusion transformer, decoded by its tokenizer,
// with the classifier's accuracy; the same job as `vediff sample` (include/vediff/jobs/sample.hpp).
//   sample --dit runs/dit_ve --classifier runs/classifier/classifier.safetensors --out runs/samples_ve
#include "program_devices.hpp"
#include "vediff/jobs/sample.hpp"

int main(int argc, char** argv) { return vediff::jobs::sample_main<program_devices>(argc, argv); }
