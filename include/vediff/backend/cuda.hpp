#pragma once
// The cuda device (CUDA runtime, cuBLAS, Thrust): memory<cuda> and every kernel family. The one header through which a translation unit gets the cuda backend; it must be compiled
// by nvcc (a .cu file) and linked with vediff::cuda (CUDA::cudart, CUDA::cublas).
//
// Every family of core/kernels.hpp: memory, activation, attention, batch_norm, broadcast,
// channel_norm, concat, conv, cross_entropy, elementwise, embedding, gemm, loss, norm, optim,
// patchify, pool, positional, posterior, random, reduce, softmax, upsample.
#if !defined(__CUDACC__)
#error "vediff/backend/cuda.hpp contains device code: include it from a .cu file compiled by nvcc"
#endif

#include "vediff/backend/cuda/runtime.hpp"
#include "vediff/backend/cuda/memory.hpp"
#include "vediff/backend/cuda/activation.hpp"
#include "vediff/backend/cuda/attention.hpp"
#include "vediff/backend/cuda/batch_norm.hpp"
#include "vediff/backend/cuda/broadcast.hpp"
#include "vediff/backend/cuda/channel_norm.hpp"
#include "vediff/backend/cuda/conv.hpp"
#include "vediff/backend/cuda/elementwise.hpp"
#include "vediff/backend/cuda/gemm.hpp"
#include "vediff/backend/cuda/layout.hpp"
#include "vediff/backend/cuda/loss.hpp"
#include "vediff/backend/cuda/norm.hpp"
#include "vediff/backend/cuda/optim.hpp"
#include "vediff/backend/cuda/pool.hpp"
#include "vediff/backend/cuda/positional.hpp"
#include "vediff/backend/cuda/posterior.hpp"
#include "vediff/backend/cuda/random.hpp"
#include "vediff/backend/cuda/reduce.hpp"
#include "vediff/backend/cuda/softmax.hpp"
