// upfirdn2d: the torch-facing wrapper and the CPU kernel (at::parallel_for over
// output rows). The CUDA kernel lives in upfirdn2d.cu behind a plain C launcher.
#include <ATen/core/Tensor.h>
#include <ATen/Parallel.h>
#include <ATen/ops/empty.h>
#include <c10/util/Half.h>

#include <algorithm>
#include <vector>

#include "upfirdn2d.h"

#ifdef MTF_WITH_CUDA
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
extern "C" int mtf_upfirdn2d_cuda(const mtf::Upfirdn2dParams* p, void* stream);
extern "C" const char* mtf_cuda_error_string(int err);
#endif

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

}  // namespace

// One upfirdn2d pass with a 2-D filter w [fh, fw] (float32, already flipped and
// gain-scaled by the Python wrapper): upsample, pad/crop, correlate, downsample.
at::Tensor upfirdn2d_impl(const at::Tensor& x_in, const at::Tensor& w_in, int64_t upx, int64_t upy,
                          int64_t downx, int64_t downy, int64_t padx0, int64_t padx1, int64_t pady0,
                          int64_t pady1, bool pixelwise) {
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
        const int err = mtf_upfirdn2d_cuda(&p, c10::cuda::getCurrentCUDAStream().stream());
        TORCH_CHECK(err == 0, "upfirdn2d: CUDA launch failed: ", mtf_cuda_error_string(err));
        return y;
#else
        TORCH_CHECK(false, "upfirdn2d: this build of the mtf ops has no CUDA kernels (the cpp target)");
#endif
    }
    TORCH_CHECK(x_in.device().is_cpu(), "upfirdn2d: unsupported device ", x_in.device());
    if (pixelwise) {
        switch (p.dtype) {
            case mtf::kHalf: upfirdn2d_cpu_pixelwise<c10::Half, float>(p); break;
            case mtf::kFloat: upfirdn2d_cpu_pixelwise<float, float>(p); break;
            default: upfirdn2d_cpu_pixelwise<double, double>(p); break;
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
    return upfirdn2d_impl(x, w, upx, upy, downx, downy, padx0, padx1, pady0, pady1, false);
}

// Test hook: on CPU tensors, the per-pixel (CUDA) formulation instead of the row kernel.
at::Tensor upfirdn2d_pixelwise_op(const at::Tensor& x, const at::Tensor& w, int64_t upx, int64_t upy,
                                  int64_t downx, int64_t downy, int64_t padx0, int64_t padx1, int64_t pady0,
                                  int64_t pady1) {
    return upfirdn2d_impl(x, w, upx, upy, downx, downy, padx0, padx1, pady0, pady1, true);
}
