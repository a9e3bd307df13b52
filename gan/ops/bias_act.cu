// bias_act CUDA kernel. No torch headers here (nvcc compiles this in about a
// second); bias_act.cpp calls mtf_bias_act_cuda with raw pointers and a stream.
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include "bias_act.h"

namespace {

__device__ __forceinline__ float to_acc(__half v) { return __half2float(v); }
__device__ __forceinline__ float to_acc(float v) { return v; }
__device__ __forceinline__ double to_acc(double v) { return v; }
__device__ __forceinline__ void store(__half* p, float v) { *p = __float2half(v); }
__device__ __forceinline__ void store(float* p, float v) { *p = v; }
__device__ __forceinline__ void store(double* p, double v) { *p = v; }

// I: the index type; 32-bit when the tensor allows, because 64-bit division (for
// the bias index) is emulated in many instructions on the GPU.
template <int MODE, typename S, typename T, typename I>
__global__ void bias_act_kernel(mtf::BiasActParams p) {
    const S* x = static_cast<const S*>(p.x);
    const S* b = static_cast<const S*>(p.b);
    const S* dy = static_cast<const S*>(p.dy);
    S* out = static_cast<S*>(p.out);
    const T alpha = T(p.alpha), gain = T(p.gain), clamp = T(p.clamp);
    const I numel = I(p.numel), bstride = I(p.bstride), bsize = I(p.bsize);
    const I step = I(blockDim.x) * gridDim.x;
    for (I i = I(blockIdx.x) * blockDim.x + threadIdx.x; i < numel; i += step) {
        const T s = to_acc(x[i]) + (b != nullptr ? to_acc(b[(i / bstride) % bsize]) : T(0));
        const T g = MODE == 0 ? T(0) : to_acc(dy[i]);
        T r;
        switch (p.act) {  // uniform across the grid: no divergence
            case mtf::kRelu: r = mtf::bias_act_elem<MODE, mtf::kRelu, T>(s, g, alpha, gain, clamp); break;
            case mtf::kLrelu: r = mtf::bias_act_elem<MODE, mtf::kLrelu, T>(s, g, alpha, gain, clamp); break;
            case mtf::kTanh: r = mtf::bias_act_elem<MODE, mtf::kTanh, T>(s, g, alpha, gain, clamp); break;
            case mtf::kSigmoid: r = mtf::bias_act_elem<MODE, mtf::kSigmoid, T>(s, g, alpha, gain, clamp); break;
            case mtf::kElu: r = mtf::bias_act_elem<MODE, mtf::kElu, T>(s, g, alpha, gain, clamp); break;
            case mtf::kSelu: r = mtf::bias_act_elem<MODE, mtf::kSelu, T>(s, g, alpha, gain, clamp); break;
            case mtf::kSoftplus: r = mtf::bias_act_elem<MODE, mtf::kSoftplus, T>(s, g, alpha, gain, clamp); break;
            case mtf::kSwish: r = mtf::bias_act_elem<MODE, mtf::kSwish, T>(s, g, alpha, gain, clamp); break;
            default: r = mtf::bias_act_elem<MODE, mtf::kLinear, T>(s, g, alpha, gain, clamp); break;
        }
        store(&out[i], r);
    }
}

template <typename S, typename T>
cudaError_t launch(const mtf::BiasActParams& p, cudaStream_t stream) {
    const int threads = 256;
    int64_t blocks = (p.numel + threads - 1) / threads;
    if (blocks > 65536) blocks = 65536;  // grid-stride loop covers the rest
    // 32-bit indices while i + step cannot overflow them.
    const bool small = p.numel + int64_t(blocks) * threads < (int64_t(1) << 32);
    switch (p.mode * 2 + (small ? 0 : 1)) {
        case 0: bias_act_kernel<0, S, T, uint32_t><<<int(blocks), threads, 0, stream>>>(p); break;
        case 1: bias_act_kernel<0, S, T, int64_t><<<int(blocks), threads, 0, stream>>>(p); break;
        case 2: bias_act_kernel<1, S, T, uint32_t><<<int(blocks), threads, 0, stream>>>(p); break;
        case 3: bias_act_kernel<1, S, T, int64_t><<<int(blocks), threads, 0, stream>>>(p); break;
        case 4: bias_act_kernel<2, S, T, uint32_t><<<int(blocks), threads, 0, stream>>>(p); break;
        default: bias_act_kernel<2, S, T, int64_t><<<int(blocks), threads, 0, stream>>>(p); break;
    }
    return cudaGetLastError();
}

}  // namespace

extern "C" int mtf_bias_act_cuda(const mtf::BiasActParams* p, void* stream) {
    cudaStream_t s = static_cast<cudaStream_t>(stream);
    switch (p->dtype) {
        case mtf::kHalf: return int(launch<__half, float>(*p, s));
        case mtf::kFloat: return int(launch<float, float>(*p, s));
        default: return int(launch<double, double>(*p, s));
    }
}

extern "C" const char* mtf_cuda_error_string(int err) {
    return cudaGetErrorString(static_cast<cudaError_t>(err));
}
