// Shared by the C++ (g++) and CUDA (nvcc) builds of the mtf ops.
//
// Nothing here includes torch: the .cu files include this header and
// <cuda_runtime.h> only, which keeps an nvcc compile at about a second. The
// per-element math lives in MTF_HD functions so the CPU kernels run exactly the
// formulas the GPU kernels run, and the CPU parity tests check both.
#pragma once

#include <math.h>
#include <stdint.h>

#if defined(__CUDACC__)
#define MTF_HD __host__ __device__ __forceinline__
#else
#define MTF_HD inline
#endif

// Unroll the next loop in device code (g++ has no such pragma and would warn).
#if defined(__CUDA_ARCH__)
#define MTF_UNROLL _Pragma("unroll")
#else
#define MTF_UNROLL
#endif

namespace mtf {

// Element type codes passed across the C boundary between the .cpp and .cu files.
enum DType { kHalf = 0, kFloat = 1, kDouble = 2 };

MTF_HD float m_exp(float v) { return expf(v); }
MTF_HD double m_exp(double v) { return exp(v); }
MTF_HD float m_tanh(float v) { return tanhf(v); }
MTF_HD double m_tanh(double v) { return tanh(v); }
MTF_HD float m_log1p(float v) { return log1pf(v); }
MTF_HD double m_log1p(double v) { return log1p(v); }

// Integer division rounding towards -inf / +inf (C++ '/' rounds towards zero).
MTF_HD int64_t floor_div(int64_t a, int64_t b) { return a >= 0 ? a / b : -((-a + b - 1) / b); }
MTF_HD int64_t ceil_div(int64_t a, int64_t b) { return -floor_div(-a, b); }

}  // namespace mtf
