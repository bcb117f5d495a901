#pragma once
// The cuda device (CUDA runtime, cuBLAS, Thrust): memory<cuda> and the kernel families written so
// far. The one header through which a translation unit gets the cuda backend; it must be compiled
// by nvcc (a .cu file) and linked with vediff::cuda (CUDA::cudart, CUDA::cublas).
//
// Families implemented: memory, elementwise, gemm. The others of core/kernels.hpp (activation,
// attention, broadcast, concat, conv, cross_entropy, embedding, loss, norm, optim, patchify,
// positional, posterior, random, reduce, softmax, upsample) are still missing: an op of theirs
// instantiated for cuda is a compile error naming the family (issue 9 builds them).
#if !defined(__CUDACC__)
#error "vediff/backend/cuda.hpp contains device code: include it from a .cu file compiled by nvcc"
#endif

#include "vediff/backend/cuda/runtime.hpp"
#include "vediff/backend/cuda/memory.hpp"
#include "vediff/backend/cuda/elementwise.hpp"
#include "vediff/backend/cuda/gemm.hpp"
