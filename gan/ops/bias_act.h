// bias_act per-element math, shared by bias_act.cpp (CPU) and bias_act.cu (CUDA).
//
// With s = x + b (the biased input), g = gain and c = clamp (c < 0: no clamp):
//   mode 0 (forward):        y   = clip(g * act(s), -c, c)
//   mode 1 (first grad):     out = dy * g * act'(s)  where |g * act(s)| <= c, else 0
//   mode 2 (second grad):    out = dy * g * act''(s) where |g * act(s)| <= c, else 0
// Mode 1 is linear in dy, so it is its own input gradient; mode 2 gives the
// gradient of mode 1 with respect to s. Together they give second-order gradients
// (R1, path length) without any private torch backward ops.
//
// The branches at s == 0 follow torch's own backward formulas (relu: 0, lrelu:
// alpha, elu/selu: the exponential branch), so the kernels and the reference agree
// exactly even on ties. Activation codes match gan/ops/bias_act.py:activation_funcs.
#pragma once

#include "ops_common.h"

namespace mtf {

enum Act { kLinear = 1, kRelu = 2, kLrelu = 3, kTanh = 4, kSigmoid = 5, kElu = 6, kSelu = 7,
           kSoftplus = 8, kSwish = 9 };

// Parameters of one bias_act kernel call (plain data: crosses the .cpp/.cu boundary).
// x, dy and out are dense tensors with identical strides, visited in memory order;
// the bias index of memory offset i is (i / bstride) % bsize.
struct BiasActParams {
    const void* x;
    const void* b;     // nullptr: no bias
    const void* dy;    // modes 1 and 2 only
    void* out;
    int64_t numel;
    int64_t bstride;
    int64_t bsize;
    int dtype;         // DType
    int act;           // Act
    int mode;          // 0, 1, 2
    double alpha;
    double gain;
    double clamp;
};

// act(s), act'(s), act''(s) for activation ACT; unused outputs are optimised away.
template <int ACT, typename T>
MTF_HD void act_eval(T s, T alpha, T& y, T& d1, T& d2) {
    const T one = T(1), zero = T(0);
    if (ACT == kLinear) { y = s; d1 = one; d2 = zero; }
    if (ACT == kRelu) { y = s > zero ? s : zero; d1 = s > zero ? one : zero; d2 = zero; }
    if (ACT == kLrelu) {  // arithmetic select: no branch on the sign, so CPU loops vectorise
        const T pos = T(s > zero);
        d1 = pos + (one - pos) * alpha; y = s * d1; d2 = zero;
    }
    if (ACT == kTanh) { y = m_tanh(s); d1 = one - y * y; d2 = T(-2) * y * d1; }
    if (ACT == kSigmoid) {
        y = one / (one + m_exp(-s)); d1 = y * (one - y); d2 = d1 * (one - T(2) * y);
    }
    if (ACT == kElu) {
        const T e = m_exp(s);
        y = s > zero ? s : e - one; d1 = s > zero ? one : e; d2 = s > zero ? zero : e;
    }
    if (ACT == kSelu) {
        const T scale = T(1.0507009873554804934193349852946);
        const T a = T(1.6732632423543772848170429916717);
        const T e = m_exp(s);
        y = s > zero ? scale * s : scale * a * (e - one);
        d1 = s > zero ? scale : scale * a * e;
        d2 = s > zero ? zero : scale * a * e;
    }
    if (ACT == kSoftplus) {  // torch's default beta = 1, threshold = 20
        if (s > T(20)) { y = s; d1 = one; d2 = zero; }
        else {
            const T e = m_exp(s);
            y = m_log1p(e); d1 = e / (e + one); d2 = d1 * (one - d1);
        }
    }
    if (ACT == kSwish) {
        const T sg = one / (one + m_exp(-s));
        y = s * sg; d1 = sg * (one + s * (one - sg)); d2 = sg * (one - sg) * (T(2) + s * (one - T(2) * sg));
    }
}

// One element of bias_act in mode MODE (see the top of this file).
template <int MODE, int ACT, typename T>
MTF_HD T bias_act_elem(T s, T dy, T alpha, T gain, T clamp) {
    T y, d1, d2;
    act_eval<ACT, T>(s, alpha, y, d1, d2);
    const T yg = y * gain;
    const T hi = clamp >= T(0) ? clamp : T(INFINITY);  // branch-free, so CPU loops vectorise
    if (MODE == 0) return yg < -hi ? -hi : (yg > hi ? hi : yg);
    const T g = MODE == 1 ? d1 : d2;
    return (yg < -hi || yg > hi) ? T(0) : dy * g * gain;
}

}  // namespace mtf
