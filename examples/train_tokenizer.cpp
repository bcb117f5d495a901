// train_tokenizer: the VAE tokenizer with the Variance Expansion loss (or KL) on Fashion-MNIST or an
// image folder; the same job as `vediff train-tokenizer` (include/vediff/jobs/train_tokenizer.hpp).
//   train_tokenizer --loss ve --steps 2000 --out runs/ve
//   train_tokenizer --loss kl --kl-weight 1e-6 --out runs/kl
//   train_tokenizer --out runs/ve --resume          (continues runs/ve/checkpoint)
#include "program_devices.hpp"
#include "vediff/jobs/train_tokenizer.hpp"

int main(int argc, char** argv) { return vediff::jobs::train_tokenizer_main<program_devices>(argc, argv); }
