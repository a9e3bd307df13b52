// upfirdn2d CUDA kernels. No torch headers here; upfirdn2d.cpp calls the C launchers.
//
// * mtf_upfirdn2d_cuda: one thread per output pixel, the polyphase sum of upfirdn2d.h
//   (upfirdn2d_pixel), 64-bit indices. The default.
// * mtf_upfirdn2d_cuda_tiled: the tiled kernel of upfirdn2d.h (a tile of outputs per
//   block, its input staged in shared memory, 32-bit indices, specializations for the
//   passes StyleGAN2 runs). Used only when upfirdn2d.py is told to (MTF_OPS_CUDA_TILED=1)
//   until its parity tests have passed on a GPU; it falls back to the per-pixel kernel
//   for passes it cannot take (sizes past 32 bits, a tile over the shared-memory budget).
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
struct Store {
    template <typename S, typename T>
    __device__ __forceinline__ void operator()(S* p, T v) const { store(p, v); }
};

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

// One block = one output tile, looping over the channel images blockIdx.z, blockIdx.z +
// gridDim.z, ...; the phases are the MTF_HD functions of upfirdn2d.h, separated by the
// barriers the CPU twin (TiledEmulation in upfirdn2d.cpp) marks at the same places.
template <class Spec, typename S, typename T, typename L>
__global__ void __launch_bounds__(mtf::kTileThreads)
upfirdn2d_tiled_kernel(mtf::Upfirdn2dTile t, const S* __restrict__ x, S* __restrict__ y,
                       const float* __restrict__ w) {
    extern __shared__ __align__(16) unsigned char smem_bytes[];
    T* sw = reinterpret_cast<T*>(smem_bytes);                      // [fh * fw]
    T* sx = sw + (Spec::kFixed ? Spec::FH * Spec::FW : t.fh * t.fw);  // [inh, inw]
    const int tx = threadIdx.x, ty = threadIdx.y;
    mtf::tile_stage_taps<Spec>(t, w, sw, ty * mtf::kTileBX + tx);
    int ox0, oy0, ix0, iy0;
    mtf::tile_block_origin(t, blockIdx.x, blockIdx.y, ox0, oy0, ix0, iy0);
    for (int nc = blockIdx.z; nc < t.nc; nc += t.grid_z) {
        const int n = nc / t.c, c = nc - n * t.c;  // once per tile and channel image, not per output
        __syncthreads();  // the taps are staged; the previous image's tile has been read
        mtf::tile_stage_input<Spec>(t, x + n * t.sxn + c * t.sxc, ix0, iy0, sx, tx, ty, L());
        __syncthreads();
        mtf::tile_compute<Spec>(t, sx, sw, y + n * t.syn + c * t.syc, ox0, oy0, ix0, iy0, tx, ty, Store());
    }
}

template <typename S, typename T, typename L>
struct TiledLaunch {
    const mtf::Upfirdn2dTile& t;
    const mtf::Upfirdn2dParams& p;
    cudaStream_t stream;
    template <class Spec>
    int run() const {
        static_assert(!Spec::kFixed || (Spec::FH * Spec::FW + Spec::INW * Spec::INH) * int(sizeof(double)) <=
                                           mtf::kTileSharedBytes, "a specialization's tile fits shared memory");
        const dim3 grid(unsigned(t.grid_x), unsigned(t.grid_y), unsigned(t.grid_z));
        const dim3 block(mtf::kTileBX, mtf::kTileBY);
        upfirdn2d_tiled_kernel<Spec, S, T, L><<<grid, block, size_t(t.shared_bytes), stream>>>(
            t, static_cast<const S*>(p.x), static_cast<S*>(p.y), p.w);
        return int(cudaGetLastError());
    }
};

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

// The tiled kernel; the per-pixel one for passes upfirdn2d_tile_plan turns down.
// max_grid_z caps the channel images in flight (the parity tests make blocks loop).
extern "C" int mtf_upfirdn2d_cuda_tiled(const mtf::Upfirdn2dParams* p, int max_grid_z, void* stream) {
    cudaStream_t s = static_cast<cudaStream_t>(stream);
    mtf::Upfirdn2dTile t;
    const int elem = p->dtype == mtf::kDouble ? int(sizeof(double)) : int(sizeof(float));
    if (!mtf::upfirdn2d_tile_plan(*p, elem, max_grid_z, t)) return mtf_upfirdn2d_cuda(p, stream);
    switch (p->dtype) {
        case mtf::kHalf: return mtf::upfirdn2d_tiled_dispatch(t, TiledLaunch<__half, float, LoadH>{t, *p, s});
        case mtf::kFloat: return mtf::upfirdn2d_tiled_dispatch(t, TiledLaunch<float, float, LoadF>{t, *p, s});
        default: return mtf::upfirdn2d_tiled_dispatch(t, TiledLaunch<double, double, LoadD>{t, *p, s});
    }
}
