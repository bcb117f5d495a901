// classify_fashion_mnist: the small CNN classifier on Fashion-MNIST, whose features the generation
// metrics use; the same job as `vediff classifier` (include/vediff/jobs/classifier.hpp).
//   classify_fashion_mnist --out runs/classifier
#include "program_devices.hpp"
#include "vediff/jobs/classifier.hpp"

int main(int argc, char** argv) { return vediff::jobs::classifier_main<program_devices>(argc, argv); }
