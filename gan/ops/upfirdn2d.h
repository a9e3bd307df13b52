// upfirdn2d per-output-pixel math, shared by upfirdn2d.cpp (CPU) and upfirdn2d.cu (CUDA).
//
// Output pixel (oy, ox) of channel image x [H, W] is the correlation of the
// upsampled (zeros inserted), padded image with the filter w [fh, fw], taken at
// (oy * downy, ox * downx). The caller passes w already flipped (for a true
// convolution) and scaled by the gain, so here it is a plain correlation.
// Instead of materialising the zero-stuffed image, only the taps that land on a
// real input pixel are visited (a polyphase sum): input row iy contributes with
// filter row ky = iy * upy - (oy * downy - pady0), for 0 <= ky < fh and 0 <= iy < H.
#pragma once

#include "ops_common.h"

namespace mtf {

// Parameters of one upfirdn2d pass (plain data: crosses the .cpp/.cu boundary).
// Strides are in elements; w is float32, contiguous [fh, fw].
struct Upfirdn2dParams {
    const void* x;
    void* y;
    const float* w;
    int64_t n, c, h, w_;             // input sizes
    int64_t sxn, sxc, sxh, sxw;      // input strides
    int64_t oh, ow;                  // output sizes
    int64_t syn, syc, syh, syw;      // output strides
    int fh, fw;
    int upx, upy, downx, downy;
    int padx0, pady0;
    int dtype;                       // DType
};

// Range [lo, hi] of input indices that meet the filter window starting at t
// (upsampled coordinates) of length k, for an input of length n upsampled by up.
MTF_HD void upfirdn2d_tap_range(int64_t t, int k, int up, int64_t n, int64_t& lo, int64_t& hi) {
    lo = ceil_div(t, up);
    hi = floor_div(t + k - 1, up);
    if (lo < 0) lo = 0;
    if (hi > n - 1) hi = n - 1;
}

// Value of output pixel (oy, ox); xc points at the channel image, load converts an
// element to the accumulation type T (float for half/float, double for double).
template <typename T, typename S, typename Load>
MTF_HD T upfirdn2d_pixel(const Upfirdn2dParams& p, const S* xc, int64_t oy, int64_t ox, Load load) {
    const int64_t ty = oy * p.downy - p.pady0;
    const int64_t tx = ox * p.downx - p.padx0;
    int64_t iy0, iy1, ix0, ix1;
    upfirdn2d_tap_range(ty, p.fh, p.upy, p.h, iy0, iy1);
    upfirdn2d_tap_range(tx, p.fw, p.upx, p.w_, ix0, ix1);
    T acc = T(0);
    for (int64_t iy = iy0; iy <= iy1; ++iy) {
        const float* wrow = p.w + (iy * p.upy - ty) * p.fw;
        const S* xrow = xc + iy * p.sxh;
        for (int64_t ix = ix0; ix <= ix1; ++ix)
            acc += load(xrow[ix * p.sxw]) * T(wrow[ix * p.upx - tx]);
    }
    return acc;
}

}  // namespace mtf
