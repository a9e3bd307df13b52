// bias_act: the torch-facing wrapper and the CPU kernel (at::parallel_for).
// The CUDA kernel lives in bias_act.cu behind a plain C launcher; this file calls
// it only when built with -DMTF_WITH_CUDA (the "cuda" target of gan/ops/_build.py).
#include <ATen/core/Tensor.h>
#include <ATen/Parallel.h>
#include <ATen/ops/empty_like.h>
#include <c10/util/Half.h>

#include <algorithm>

#include "bias_act.h"

#ifdef MTF_WITH_CUDA
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
extern "C" int mtf_bias_act_cuda(const mtf::BiasActParams* p, void* stream);
extern "C" const char* mtf_cuda_error_string(int err);
#endif

namespace {

template <int MODE, int ACT, typename S, typename T>
void bias_act_cpu_loop(const mtf::BiasActParams& p) {
    const S* __restrict x = static_cast<const S*>(p.x);
    const S* __restrict b = static_cast<const S*>(p.b);
    const S* __restrict dy = static_cast<const S*>(p.dy);
    S* __restrict out = static_cast<S*>(p.out);
    const int64_t bstride = p.bstride, bsize = p.bsize;
    const T alpha = T(p.alpha), gain = T(p.gain), clamp = T(p.clamp);
    // Memory order; each run of bstride elements shares one bias value, so the
    // division happens once per run, not per element.
    at::parallel_for(0, p.numel, 16384, [&](int64_t begin, int64_t end) {
        int64_t i = begin;
        while (i < end) {
            int64_t run_end = end;
            T bias = T(0);
            if (b != nullptr) {
                const int64_t q = i / bstride;
                bias = T(b[q % bsize]);
                run_end = std::min(end, (q + 1) * bstride);
            }
            if (MODE == 0) {
                for (int64_t j = i; j < run_end; ++j)
                    out[j] = S(mtf::bias_act_elem<0, ACT, T>(T(x[j]) + bias, T(0), alpha, gain, clamp));
            } else {
                for (int64_t j = i; j < run_end; ++j)
                    out[j] = S(mtf::bias_act_elem<MODE, ACT, T>(T(x[j]) + bias, T(dy[j]), alpha, gain, clamp));
            }
            i = run_end;
        }
    });
}

template <int MODE, typename S, typename T>
void bias_act_cpu_act(const mtf::BiasActParams& p) {
    switch (p.act) {
        case mtf::kLinear: return bias_act_cpu_loop<MODE, mtf::kLinear, S, T>(p);
        case mtf::kRelu: return bias_act_cpu_loop<MODE, mtf::kRelu, S, T>(p);
        case mtf::kLrelu: return bias_act_cpu_loop<MODE, mtf::kLrelu, S, T>(p);
        case mtf::kTanh: return bias_act_cpu_loop<MODE, mtf::kTanh, S, T>(p);
        case mtf::kSigmoid: return bias_act_cpu_loop<MODE, mtf::kSigmoid, S, T>(p);
        case mtf::kElu: return bias_act_cpu_loop<MODE, mtf::kElu, S, T>(p);
        case mtf::kSelu: return bias_act_cpu_loop<MODE, mtf::kSelu, S, T>(p);
        case mtf::kSoftplus: return bias_act_cpu_loop<MODE, mtf::kSoftplus, S, T>(p);
        case mtf::kSwish: return bias_act_cpu_loop<MODE, mtf::kSwish, S, T>(p);
    }
    TORCH_CHECK(false, "bias_act: unknown activation code ", p.act);
}

template <typename S, typename T>
void bias_act_cpu(const mtf::BiasActParams& p) {
    switch (p.mode) {
        case 0: return bias_act_cpu_act<0, S, T>(p);
        case 1: return bias_act_cpu_act<1, S, T>(p);
        case 2: return bias_act_cpu_act<2, S, T>(p);
    }
    TORCH_CHECK(false, "bias_act: unknown mode ", p.mode);
}

// Same dtype, device and strides as ref (a dense tensor), copying only if needed.
at::Tensor like(const at::Tensor& t, const at::Tensor& ref) {
    if (t.strides() == ref.strides()) return t;
    at::Tensor out = at::empty_like(ref);
    out.copy_(t);
    return out;
}

}  // namespace

// mode 0: y = clip(gain * act(x + b)); modes 1/2: dy times the first/second
// derivative (see bias_act.h). b: 1-D along dim, or an empty tensor for none.
at::Tensor bias_act_op(const at::Tensor& x_in, const at::Tensor& b_in, const at::Tensor& dy_in,
                       int64_t mode, int64_t act, double alpha, double gain, double clamp, int64_t dim) {
    TORCH_CHECK(x_in.scalar_type() == at::kHalf || x_in.scalar_type() == at::kFloat ||
                x_in.scalar_type() == at::kDouble, "bias_act: x must be float16, float32 or float64");
    TORCH_CHECK(dim >= 0 && (dim < x_in.dim() || x_in.dim() == 0), "bias_act: dim out of range");
    TORCH_CHECK(mode >= 0 && mode <= 2, "bias_act: mode must be 0, 1 or 2");
    at::Tensor x = x_in.is_non_overlapping_and_dense() ? x_in : x_in.contiguous();
    const bool has_b = b_in.numel() > 0;
    at::Tensor b;
    if (has_b) {
        TORCH_CHECK(b_in.dim() == 1 && b_in.size(0) == x.size(dim), "bias_act: b must be [x.shape[dim]]");
        TORCH_CHECK(b_in.scalar_type() == x.scalar_type() && b_in.device() == x.device(),
                    "bias_act: b must have x's dtype and device");
        b = b_in.contiguous();
    }
    at::Tensor dy;
    if (mode != 0) {
        TORCH_CHECK(dy_in.sizes() == x.sizes() && dy_in.scalar_type() == x.scalar_type() &&
                    dy_in.device() == x.device(), "bias_act: dy must match x in shape, dtype and device");
        dy = like(dy_in, x);
    }
    at::Tensor out = at::empty_like(x);
    if (x.numel() == 0) return out;

    mtf::BiasActParams p;
    p.x = x.data_ptr();
    p.b = has_b ? b.data_ptr() : nullptr;
    p.dy = mode != 0 ? dy.data_ptr() : nullptr;
    p.out = out.data_ptr();
    p.numel = x.numel();
    p.bsize = has_b ? x.size(dim) : 1;
    p.bstride = has_b && p.bsize > 1 ? x.stride(dim) : 1;
    p.dtype = x.scalar_type() == at::kHalf ? mtf::kHalf : (x.scalar_type() == at::kFloat ? mtf::kFloat : mtf::kDouble);
    p.act = static_cast<int>(act);
    p.mode = static_cast<int>(mode);
    p.alpha = alpha;
    p.gain = gain;
    p.clamp = clamp;

    if (x.is_cuda()) {
#ifdef MTF_WITH_CUDA
        c10::cuda::CUDAGuard guard(x.device());
        const int err = mtf_bias_act_cuda(&p, c10::cuda::getCurrentCUDAStream().stream());
        TORCH_CHECK(err == 0, "bias_act: CUDA launch failed: ", mtf_cuda_error_string(err));
        return out;
#else
        TORCH_CHECK(false, "bias_act: this build of the mtf ops has no CUDA kernels (the cpp target)");
#endif
    }
    TORCH_CHECK(x.device().is_cpu(), "bias_act: unsupported device ", x.device());
    switch (p.dtype) {
        case mtf::kHalf: bias_act_cpu<c10::Half, float>(p); break;
        case mtf::kFloat: bias_act_cpu<float, float>(p); break;
        default: bias_act_cpu<double, double>(p); break;
    }
    return out;
}
