// upfirdn2d CUDA kernel: one thread per output pixel, the polyphase sum of
// upfirdn2d.h. No torch headers here; upfirdn2d.cpp calls mtf_upfirdn2d_cuda.
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include "upfirdn2d.h"

namespace {

struct LoadH { __device__ __forceinline__ float operator()(__half v) const { return __half2float(v); } };
struct LoadF { __device__ __forceinline__ float operator()(float v) const { return v; } };
struct LoadD { __device__ __forceinline__ double operator()(double v) const { return v; } };
__device__ __forceinline__ void store(__half* p, float v) { *p = __float2half(v); }
__device__ __forceinline__ void store(float* p, float v) { *p = v; }
__device__ __forceinline__ void store(double* p, double v) { *p = v; }

template <typename S, typename T, typename L>
__global__ void upfirdn2d_kernel(mtf::Upfirdn2dParams p) {
    const S* x = static_cast<const S*>(p.x);
    S* y = static_cast<S*>(p.y);
    const int64_t total = p.n * p.c * p.oh * p.ow;
    const int64_t step = int64_t(blockDim.x) * gridDim.x;
    for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < total; i += step) {
        const int64_t ox = i % p.ow;
        int64_t r = i / p.ow;
        const int64_t oy = r % p.oh;
        r /= p.oh;
        const int64_t c = r % p.c, n = r / p.c;
        const S* xc = x + n * p.sxn + c * p.sxc;
        store(&y[n * p.syn + c * p.syc + oy * p.syh + ox * p.syw],
              mtf::upfirdn2d_pixel<T, S>(p, xc, oy, ox, L()));
    }
}

}  // namespace

extern "C" int mtf_upfirdn2d_cuda(const mtf::Upfirdn2dParams* p, void* stream) {
    cudaStream_t s = static_cast<cudaStream_t>(stream);
    const int threads = 256;
    int64_t blocks = (p->n * p->c * p->oh * p->ow + threads - 1) / threads;
    if (blocks > 65536) blocks = 65536;
    switch (p->dtype) {
        case mtf::kHalf: upfirdn2d_kernel<__half, float, LoadH><<<int(blocks), threads, 0, s>>>(*p); break;
        case mtf::kFloat: upfirdn2d_kernel<float, float, LoadF><<<int(blocks), threads, 0, s>>>(*p); break;
        default: upfirdn2d_kernel<double, double, LoadD><<<int(blocks), threads, 0, s>>>(*p); break;
    }
    return int(cudaGetLastError());
}
