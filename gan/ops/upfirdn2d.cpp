// upfirdn2d: the torch-facing wrapper and the CPU kernel (at::parallel_for over
// output rows). The CUDA kernels live in upfirdn2d.cu behind plain C launchers; the
// CPU twins of their formulations (per-pixel, tiled) are test hooks here.
#include <ATen/core/Tensor.h>
#include <ATen/Parallel.h>
#include <ATen/ops/empty.h>
#include <c10/util/Half.h>

#include <algorithm>
#include <limits>
#include <string>
#include <vector>

#include "upfirdn2d.h"

#ifdef MTF_WITH_CUDA
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
extern "C" int mtf_upfirdn2d_cuda(const mtf::Upfirdn2dParams* p, void* stream);
extern "C" int mtf_upfirdn2d_cuda_tiled(const mtf::Upfirdn2dParams* p, int max_grid_z, void* stream);
extern "C" const char* mtf_cuda_error_string(int err);
#endif

// Which formulation a call runs: the default (row kernel on CPU, per-pixel kernel on CUDA),
// the per-pixel one (CPU test hook) or the tiled one (CUDA kernel / its CPU emulation).
enum class Upfirdn2dKernel { kDefault, kPixelwise, kTiled };

namespace {

// CPU kernel. Unlike the per-pixel CUDA kernel, each task takes whole channel
// images: it first lays out the x-upsampled, x-padded rows E [H, Lx] (so every
// output pixel reads E contiguously and the inner loop over output columns
// vectorises), then for each output row adds w[ky, kx] * E[iy, ox * downx + kx]
// over the input rows iy that meet the filter (mtf::upfirdn2d_tap_range, the same
// row selection as the CUDA kernel's mtf::upfirdn2d_pixel).
template <typename S, typename T>
void upfirdn2d_cpu(const mtf::Upfirdn2dParams& p) {
    const S* x = static_cast<const S*>(p.x);
    S* y = static_cast<S*>(p.y);
    const int64_t lx = (p.ow - 1) * p.downx + p.fw;  // the columns of E that the outputs read
    at::parallel_for(0, p.n * p.c, 1, [&](int64_t begin, int64_t end) {
        std::vector<T> e(static_cast<size_t>(p.h * lx));
        std::vector<T> acc(static_cast<size_t>(p.ow));
        for (int64_t nc = begin; nc < end; ++nc) {
            const int64_t c = nc % p.c, n = nc / p.c;
            const S* xc = x + n * p.sxn + c * p.sxc;
            // E[iy, j] = U[j - padx0] where U is the row upsampled by upx (zeros between).
            std::fill(e.begin(), e.end(), T(0));
            for (int64_t iy = 0; iy < p.h; ++iy) {
                T* erow = e.data() + iy * lx;
                const S* xrow = xc + iy * p.sxh;
                int64_t ix0, ix1;
                mtf::upfirdn2d_tap_range(-p.padx0, static_cast<int>(lx), p.upx, p.w_, ix0, ix1);
                for (int64_t ix = ix0; ix <= ix1; ++ix) erow[ix * p.upx + p.padx0] = T(xrow[ix * p.sxw]);
            }
            for (int64_t oy = 0; oy < p.oh; ++oy) {
                const int64_t ty = oy * p.downy - p.pady0;
                int64_t iy0, iy1;
                mtf::upfirdn2d_tap_range(ty, p.fh, p.upy, p.h, iy0, iy1);
                T* __restrict a = acc.data();
                std::fill(acc.begin(), acc.end(), T(0));
                for (int64_t iy = iy0; iy <= iy1; ++iy) {
                    const float* wrow = p.w + (iy * p.upy - ty) * p.fw;
                    const T* erow = e.data() + iy * lx;
                    for (int kx = 0; kx < p.fw; ++kx) {
                        const T wk = T(wrow[kx]);
                        const T* __restrict src = erow + kx;
                        if (p.downx == 1) {
                            for (int64_t ox = 0; ox < p.ow; ++ox) a[ox] += wk * src[ox];
                        } else {
                            const int64_t dx = p.downx;
                            for (int64_t ox = 0; ox < p.ow; ++ox) a[ox] += wk * src[ox * dx];
                        }
                    }
                }
                S* yrow = y + n * p.syn + c * p.syc + oy * p.syh;
                for (int64_t ox = 0; ox < p.ow; ++ox) yrow[ox * p.syw] = S(a[ox]);
            }
        }
    });
}

// The CUDA kernel's per-pixel formulation (mtf::upfirdn2d_pixel) run on the CPU,
// so the CPU parity tests check the exact math the GPU runs.
template <typename S, typename T>
void upfirdn2d_cpu_pixelwise(const mtf::Upfirdn2dParams& p) {
    const S* x = static_cast<const S*>(p.x);
    S* y = static_cast<S*>(p.y);
    struct Load { T operator()(S v) const { return T(v); } };
    at::parallel_for(0, p.n * p.c * p.oh, 1, [&](int64_t begin, int64_t end) {
        for (int64_t r = begin; r < end; ++r) {
            const int64_t oy = r % p.oh, nc = r / p.oh;
            const int64_t c = nc % p.c, n = nc / p.c;
            const S* xc = x + n * p.sxn + c * p.sxc;
            S* yrow = y + n * p.syn + c * p.syc + oy * p.syh;
            for (int64_t ox = 0; ox < p.ow; ++ox)
                yrow[ox * p.syw] = S(mtf::upfirdn2d_pixel<T, S>(p, xc, oy, ox, Load()));
        }
    });
}

// The CUDA tiled kernel (upfirdn2d.cu: upfirdn2d_tiled_kernel) run on the CPU, block by
// block and thread by thread, with a local array for the block's shared memory: the CPU
// parity tests check the exact tile math (the MTF_HD phases of upfirdn2d.h) the GPU runs.
// Blocks are independent, so they may run in parallel; the threads of one block run one
// after another, each phase for all of them before the next (where the kernel has its
// __syncthreads). The staged tile is poisoned with NaN before each staging, and a NaN guard
// follows it, so a read outside what the staging wrote shows up in the values.
template <typename S, typename T>
struct TiledEmulation {
    const mtf::Upfirdn2dTile& t;
    const mtf::Upfirdn2dParams& p;
    template <class Sp>
    int run() const {
        const S* x = static_cast<const S*>(p.x);
        S* y = static_cast<S*>(p.y);
        struct Load { T operator()(S v) const { return T(v); } };
        struct Store { void operator()(S* q, T v) const { *q = S(v); } };
        const int taps = Sp::kFixed ? Sp::FH * Sp::FW : t.fh * t.fw;
        const size_t staged = size_t(t.inw) * t.inh, guard = size_t(t.inw) * 4 + 64;
        const T nan = std::numeric_limits<T>::quiet_NaN();
        at::parallel_for(0, int64_t(t.grid_z) * t.grid_y * t.grid_x, 1, [&](int64_t begin, int64_t end) {
            std::vector<T> smem(size_t(taps) + staged + guard, nan);
            T* sw = smem.data();
            T* sx = sw + taps;
            for (int64_t b = begin; b < end; ++b) {
                const int bx = int(b % t.grid_x), by = int(b / t.grid_x % t.grid_y), bz = int(b / t.grid_x / t.grid_y);
                for (int tid = 0; tid < mtf::kTileThreads; ++tid) mtf::tile_stage_taps<Sp>(t, p.w, sw, tid);
                int ox0, oy0, ix0, iy0;
                mtf::tile_block_origin(t, bx, by, ox0, oy0, ix0, iy0);
                for (int nc = bz; nc < t.nc; nc += t.grid_z) {
                    const int n = nc / t.c, c = nc - n * t.c;
                    // __syncthreads()
                    std::fill(sx, sx + staged, nan);
                    for (int ty = 0; ty < mtf::kTileBY; ++ty)
                        for (int tx = 0; tx < mtf::kTileBX; ++tx)
                            mtf::tile_stage_input<Sp>(t, x + n * t.sxn + c * t.sxc, ix0, iy0, sx, tx, ty, Load());
                    // __syncthreads()
                    for (int ty = 0; ty < mtf::kTileBY; ++ty)
                        for (int tx = 0; tx < mtf::kTileBX; ++tx)
                            mtf::tile_compute<Sp>(t, sx, sw, y + n * t.syn + c * t.syc, ox0, oy0, ix0, iy0, tx, ty,
                                                  Store());
                }
            }
        });
        return 0;
    }
};

// What the tiled path runs for p (the same plan as mtf_upfirdn2d_cuda_tiled): false = the
// per-pixel kernel (the tiled one cannot take p).
bool tiled_plan(const mtf::Upfirdn2dParams& p, int64_t max_grid_z, mtf::Upfirdn2dTile& t) {
    const int elem = p.dtype == mtf::kDouble ? int(sizeof(double)) : int(sizeof(float));
    const int zcap = int(std::min<int64_t>(std::max<int64_t>(max_grid_z, 1), mtf::kTileMaxGridZ));
    return mtf::upfirdn2d_tile_plan(p, elem, zcap, t);
}

template <typename S, typename T>
void upfirdn2d_cpu_tiled(const mtf::Upfirdn2dParams& p, int64_t max_grid_z) {
    mtf::Upfirdn2dTile t;
    if (!tiled_plan(p, max_grid_z, t)) return upfirdn2d_cpu_pixelwise<S, T>(p);
    mtf::upfirdn2d_tiled_dispatch(t, TiledEmulation<S, T>{t, p});
}

}  // namespace

// One upfirdn2d pass with a 2-D filter w [fh, fw] (float32, already flipped and
// gain-scaled by the Python wrapper): upsample, pad/crop, correlate, downsample.
at::Tensor upfirdn2d_impl(const at::Tensor& x_in, const at::Tensor& w_in, int64_t upx, int64_t upy,
                          int64_t downx, int64_t downy, int64_t padx0, int64_t padx1, int64_t pady0,
                          int64_t pady1, Upfirdn2dKernel kernel, int64_t max_grid_z) {
    TORCH_CHECK(x_in.dim() == 4, "upfirdn2d: x must be [N, C, H, W]");
    TORCH_CHECK(x_in.scalar_type() == at::kHalf || x_in.scalar_type() == at::kFloat ||
                x_in.scalar_type() == at::kDouble, "upfirdn2d: x must be float16, float32 or float64");
    TORCH_CHECK(w_in.dim() == 2 && w_in.scalar_type() == at::kFloat && w_in.device() == x_in.device(),
                "upfirdn2d: w must be a float32 [fh, fw] tensor on x's device");
    TORCH_CHECK(upx >= 1 && upy >= 1 && downx >= 1 && downy >= 1, "upfirdn2d: up and down must be >= 1");
    const at::Tensor w = w_in.contiguous();
    const int64_t n = x_in.size(0), c = x_in.size(1), h = x_in.size(2), wd = x_in.size(3);
    const int64_t fh = w.size(0), fw = w.size(1);
    const int64_t oh = (h * upy + pady0 + pady1 - fh) / downy + 1;
    const int64_t ow = (wd * upx + padx0 + padx1 - fw) / downx + 1;
    TORCH_CHECK(h * upy + pady0 + pady1 >= fh && wd * upx + padx0 + padx1 >= fw,
                "upfirdn2d: the padded image is smaller than the filter");
    at::Tensor y = at::empty({n, c, oh, ow}, x_in.options().memory_format(x_in.suggest_memory_format()));
    if (y.numel() == 0) return y;

    mtf::Upfirdn2dParams p;
    p.x = x_in.data_ptr();
    p.y = y.data_ptr();
    p.w = w.data_ptr<float>();
    p.n = n; p.c = c; p.h = h; p.w_ = wd;
    p.sxn = x_in.stride(0); p.sxc = x_in.stride(1); p.sxh = x_in.stride(2); p.sxw = x_in.stride(3);
    p.oh = oh; p.ow = ow;
    p.syn = y.stride(0); p.syc = y.stride(1); p.syh = y.stride(2); p.syw = y.stride(3);
    p.fh = static_cast<int>(fh); p.fw = static_cast<int>(fw);
    p.upx = static_cast<int>(upx); p.upy = static_cast<int>(upy);
    p.downx = static_cast<int>(downx); p.downy = static_cast<int>(downy);
    p.padx0 = static_cast<int>(padx0); p.pady0 = static_cast<int>(pady0);
    p.dtype = x_in.scalar_type() == at::kHalf ? mtf::kHalf
              : (x_in.scalar_type() == at::kFloat ? mtf::kFloat : mtf::kDouble);

    if (x_in.is_cuda()) {
#ifdef MTF_WITH_CUDA
        c10::cuda::CUDAGuard guard(x_in.device());
        void* stream = c10::cuda::getCurrentCUDAStream().stream();
        const int err = kernel == Upfirdn2dKernel::kTiled
                            ? mtf_upfirdn2d_cuda_tiled(&p, int(std::min<int64_t>(std::max<int64_t>(max_grid_z, 1),
                                                                                 mtf::kTileMaxGridZ)), stream)
                            : mtf_upfirdn2d_cuda(&p, stream);
        TORCH_CHECK(err == 0, "upfirdn2d: CUDA launch failed: ", mtf_cuda_error_string(err));
        return y;
#else
        TORCH_CHECK(false, "upfirdn2d: this build of the mtf ops has no CUDA kernels (the cpp target)");
#endif
    }
    TORCH_CHECK(x_in.device().is_cpu(), "upfirdn2d: unsupported device ", x_in.device());
    if (kernel == Upfirdn2dKernel::kPixelwise) {
        switch (p.dtype) {
            case mtf::kHalf: upfirdn2d_cpu_pixelwise<c10::Half, float>(p); break;
            case mtf::kFloat: upfirdn2d_cpu_pixelwise<float, float>(p); break;
            default: upfirdn2d_cpu_pixelwise<double, double>(p); break;
        }
        return y;
    }
    if (kernel == Upfirdn2dKernel::kTiled) {
        switch (p.dtype) {
            case mtf::kHalf: upfirdn2d_cpu_tiled<c10::Half, float>(p, max_grid_z); break;
            case mtf::kFloat: upfirdn2d_cpu_tiled<float, float>(p, max_grid_z); break;
            default: upfirdn2d_cpu_tiled<double, double>(p, max_grid_z); break;
        }
        return y;
    }
    switch (p.dtype) {
        case mtf::kHalf: upfirdn2d_cpu<c10::Half, float>(p); break;
        case mtf::kFloat: upfirdn2d_cpu<float, float>(p); break;
        default: upfirdn2d_cpu<double, double>(p); break;
    }
    return y;
}

at::Tensor upfirdn2d_op(const at::Tensor& x, const at::Tensor& w, int64_t upx, int64_t upy, int64_t downx,
                        int64_t downy, int64_t padx0, int64_t padx1, int64_t pady0, int64_t pady1) {
    return upfirdn2d_impl(x, w, upx, upy, downx, downy, padx0, padx1, pady0, pady1, Upfirdn2dKernel::kDefault, 0);
}

// Test hook: on CPU tensors, the per-pixel (CUDA) formulation instead of the row kernel.
at::Tensor upfirdn2d_pixelwise_op(const at::Tensor& x, const at::Tensor& w, int64_t upx, int64_t upy,
                                  int64_t downx, int64_t downy, int64_t padx0, int64_t padx1, int64_t pady0,
                                  int64_t pady1) {
    return upfirdn2d_impl(x, w, upx, upy, downx, downy, padx0, padx1, pady0, pady1, Upfirdn2dKernel::kPixelwise, 0);
}

// The tiled kernel on CUDA tensors; its CPU twin (tiled emulation) on CPU tensors.
at::Tensor upfirdn2d_tiled_op(const at::Tensor& x, const at::Tensor& w, int64_t upx, int64_t upy, int64_t downx,
                              int64_t downy, int64_t padx0, int64_t padx1, int64_t pady0, int64_t pady1,
                              int64_t max_grid_z) {
    return upfirdn2d_impl(x, w, upx, upy, downx, downy, padx0, padx1, pady0, pady1, Upfirdn2dKernel::kTiled,
                          max_grid_z);
}

// Which tiled kernel a pass [N, C, H, W] (contiguous) with a [fh, fw] filter takes, in words:
// "spec <i> up=..", "generic tile=..x.." or "pixelwise" (the tiled kernel declines it).
std::string upfirdn2d_tiled_kernel_name(int64_t n, int64_t c, int64_t h, int64_t w, int64_t fh, int64_t fw,
                                        int64_t upx, int64_t upy, int64_t downx, int64_t downy, int64_t padx0,
                                        int64_t padx1, int64_t pady0, int64_t pady1, int64_t elem_bytes) {
    mtf::Upfirdn2dParams p{};
    p.n = n; p.c = c; p.h = h; p.w_ = w;
    p.sxw = 1; p.sxh = w; p.sxc = h * w; p.sxn = c * h * w;
    p.oh = (h * upy + pady0 + pady1 - fh) / downy + 1;
    p.ow = (w * upx + padx0 + padx1 - fw) / downx + 1;
    p.syw = 1; p.syh = p.ow; p.syc = p.oh * p.ow; p.syn = c * p.oh * p.ow;
    p.fh = int(fh); p.fw = int(fw); p.upx = int(upx); p.upy = int(upy); p.downx = int(downx); p.downy = int(downy);
    p.padx0 = int(padx0); p.pady0 = int(pady0);
    p.dtype = elem_bytes == 8 ? mtf::kDouble : mtf::kFloat;
    mtf::Upfirdn2dTile t;
    if (!tiled_plan(p, mtf::kTileMaxGridZ, t)) return "pixelwise";
    const std::string tile = " tile=" + std::to_string(t.tw) + "x" + std::to_string(t.th);
    if (t.spec == mtf::kTileGeneric) return "generic" + tile;
    const mtf::TileSpecRow& r = mtf::kTileSpecs[t.spec];
    return "spec " + std::to_string(t.spec) + " up=" + std::to_string(r.upx) + "x" + std::to_string(r.upy) +
           " down=" + std::to_string(r.downx) + "x" + std::to_string(r.downy) + " taps=" + std::to_string(r.fw) +
           "x" + std::to_string(r.fh) + tile;
}
