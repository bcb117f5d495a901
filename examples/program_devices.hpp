#pragma once
// The devices the example programs run on: the cpu always, and the cuda device when CMake builds
// them with nvcc (VEDIFF_WITH_CUDA; then VEDIFF_PROGRAM_WITH_CUDA is defined). `--device` picks
// one at run time (include/vediff/jobs/device_choice.hpp).
#include "vediff/backend/cpu.hpp"
#include "vediff/jobs/device_choice.hpp"

#ifdef VEDIFF_PROGRAM_WITH_CUDA
#include "vediff/backend/cuda.hpp"
using program_devices = vediff::jobs::device_list<vediff::cpu, vediff::cuda>;
#else
using program_devices = vediff::jobs::cpu_only;
#endif
