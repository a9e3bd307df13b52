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

// ---------------------------------------------------------------------------- tiled kernel
//
// The per-pixel kernel above spends its time on index arithmetic: 64-bit divisions
// to find (n, c, oy, ox) and loops whose trip counts are known only at run time.
// The tiled kernel (upfirdn2d.cu) instead gives each block of kTileBX x kTileBY
// threads a tile of tw x th outputs of one channel image: the block stages the
// input rectangle the tile reads (zeros outside the image, so the inner loop has
// no bounds checks) and the taps in shared memory, then each thread computes
// (tw / kTileBX) x (th / kTileBY) outputs from there. All indices are 32-bit; the
// grid is (tile columns, tile rows, channel images), so no output costs a division
// (one 32-bit division per tile and channel image splits N * C into n, c).
// Specializations fix (up, down, taps, tile) at compile time for the passes
// StyleGAN2 runs (MTF_UPFIRDN2D_TILED_SPECS): taps in registers, loops unrolled, and
// with up = 1 vertically a sliding window over consecutive output rows. Every other
// pass takes the generic tiled path, which reads the same values at run time.
//
// Everything a block computes is in the MTF_HD functions below, so the CPU twin in
// upfirdn2d.cpp (TiledEmulation: blocks and threads run one after another, a local
// array for the shared memory) executes the GPU's exact tile math.

constexpr int kTileBX = 32, kTileBY = 8;          // threads per block: one warp wide
constexpr int kTileThreads = kTileBX * kTileBY;
constexpr int kTileSharedBytes = 48 * 1024;       // shared memory a block may take without opt-in
constexpr int kTileMaxGridZ = 65535;              // CUDA's limit on gridDim.z (and gridDim.y)

// 32-bit division rounding towards -inf / +inf, for b > 0 (and |a| < 2^30, which
// upfirdn2d_tile_plan guarantees).
MTF_HD constexpr int floor_div_i32(int a, int b) { return a >= 0 ? a / b : -((-a + b - 1) / b); }
MTF_HD constexpr int ceil_div_i32(int a, int b) { return -floor_div_i32(-a, b); }

// Along one axis: output o reads upsampled positions [o*down - pad0, o*down - pad0 + taps),
// i.e. inputs i with i*up in that window, the first being ceil((o*down - pad0) / up).
// From a tile's first output to its last (tile - 1 later) that first input advances by at
// most ceil((tile - 1) * down / up), and each output reads at most ceil(taps / up) inputs
// from its first on: the tile's staged extent.
MTF_HD constexpr int tile_in_extent(int tile, int down, int up, int taps) {
    return ceil_div_i32((tile - 1) * down, up) + ceil_div_i32(taps, up);
}

// First input index a tile whose first output is o0 stages (negative = zero padding).
MTF_HD int tile_in_first(int o0, int down, int up, int pad0) { return ceil_div_i32(o0 * down - pad0, up); }

// Output o of a tile staged from input in0: rel = staged index of the first input it reads,
// k0 = the tap that input meets (0 <= k0 < up); staged input rel + j meets tap k0 + j * up.
MTF_HD void tile_out_taps(int o, int down, int up, int pad0, int in0, int& rel, int& k0) {
    const int t = o * down - pad0;
    const int i0 = ceil_div_i32(t, up);
    rel = i0 - in0;
    k0 = i0 * up - t;
}

// One tiled launch, all in 32 bits (plain data: crosses the .cpp/.cu boundary).
struct Upfirdn2dTile {
    int c, nc;                        // channels, N * C (the channel images blockIdx.z walks)
    int h, w;                         // input size
    int sxn, sxc, sxh, sxw;           // input strides
    int oh, ow;                       // output size
    int syn, syc, syh, syw;           // output strides
    int fh, fw, upx, upy, downx, downy, padx0, pady0;
    int tw, th;                       // outputs per tile
    int inw, inh;                     // staged input per tile
    int grid_x, grid_y, grid_z;       // tile columns, tile rows, channel images in flight
    int spec;                         // index into MTF_UPFIRDN2D_TILED_SPECS, or kTileGeneric
    int shared_bytes;                 // taps + staged input
};

// The compile-time shape of a tiled kernel; all zeros = the generic path (values from Upfirdn2dTile).
template <int UPX_, int UPY_, int DOWNX_, int DOWNY_, int FW_, int FH_, int TW_, int TH_>
struct TileSpec {
    static constexpr int UPX = UPX_, UPY = UPY_, DOWNX = DOWNX_, DOWNY = DOWNY_;
    static constexpr int FW = FW_, FH = FH_, TW = TW_, TH = TH_;
    static constexpr bool kFixed = UPX_ > 0;
    static constexpr int INW = kFixed ? tile_in_extent(TW_, DOWNX_, UPX_, FW_) : 0;
    static constexpr int INH = kFixed ? tile_in_extent(TH_, DOWNY_, UPY_, FH_) : 0;
};
using TileSpecGeneric = TileSpec<0, 0, 0, 0, 0, 0, 0, 0>;

// The specializations: X(index, upx, upy, downx, downy, fw, fh, tile w, tile h). Each pass's
// gradient is another row (up and down swap, the taps stay). Filters from setup_filter:
// [1,3,3,1] becomes 4x4 (2-D, as published); sym6 (12 taps) stays 1-D, and a 1-D filter runs
// as a horizontal [1, k] then a vertical [k, 1] pass (upfirdn2d.py).
#define MTF_UPFIRDN2D_TILED_SPECS(X)                                                            \
    X(0, 2, 2, 1, 1, 4, 4, 64, 32)     /* upsample2d: ToRGB skip, 1x1 up conv (layers.py)   */ \
    X(1, 1, 1, 1, 1, 4, 4, 64, 32)     /* blur after the transposed conv; before stride 2 */ \
    X(2, 1, 1, 2, 2, 4, 4, 32, 32)     /* downsample2d: D skip 1x1 conv; upsample's grad  */ \
    X(3, 2, 1, 1, 1, 12, 1, 128, 16)   /* augment: sym6 2x upsample, horizontal pass     */ \
    X(4, 1, 2, 1, 1, 1, 12, 32, 64)    /*   ... vertical pass                            */ \
    X(5, 1, 1, 2, 1, 12, 1, 64, 16)    /* augment: sym6 2x downsample, horizontal pass   */ \
    X(6, 1, 1, 1, 2, 1, 12, 32, 32)    /*   ... vertical pass                            */ \
    X(7, 2, 1, 1, 1, 4, 1, 128, 16)    /* 1-D [1,3,3,1] (separable=True), up, horizontal */ \
    X(8, 1, 2, 1, 1, 1, 4, 32, 64)     /*   ... vertical                                 */ \
    X(9, 1, 1, 2, 1, 4, 1, 64, 16)     /* 1-D [1,3,3,1], down, horizontal                */ \
    X(10, 1, 1, 1, 2, 1, 4, 32, 32)    /*   ... vertical                                 */ \
    X(11, 1, 1, 1, 1, 4, 1, 128, 16)   /* 1-D [1,3,3,1], filter only, horizontal         */ \
    X(12, 1, 1, 1, 1, 1, 4, 32, 64)    /*   ... vertical                                 */

constexpr int kTileGeneric = -1;

struct TileSpecRow { int upx, upy, downx, downy, fw, fh, tw, th; };
#define MTF_TILE_ROW(i, ux, uy, dx, dy, fw, fh, tw, th) {ux, uy, dx, dy, fw, fh, tw, th},
constexpr TileSpecRow kTileSpecs[] = {MTF_UPFIRDN2D_TILED_SPECS(MTF_TILE_ROW)};
#undef MTF_TILE_ROW
constexpr int kNumTileSpecs = int(sizeof(kTileSpecs) / sizeof(kTileSpecs[0]));

// Calls f.template run<Spec>() for t.spec's specialization (TileSpecGeneric for the generic path).
template <class F>
int upfirdn2d_tiled_dispatch(const Upfirdn2dTile& t, const F& f) {
    switch (t.spec) {
#define MTF_TILE_CASE(i, ux, uy, dx, dy, fw, fh, tw, th) \
        case i: return f.template run<TileSpec<ux, uy, dx, dy, fw, fh, tw, th>>();
        MTF_UPFIRDN2D_TILED_SPECS(MTF_TILE_CASE)
#undef MTF_TILE_CASE
        default: return f.template run<TileSpecGeneric>();
    }
}

// Fills t for the pass p (elem_bytes = sizeof the accumulation type); false when the tiled
// kernel cannot take it (sizes past 32-bit indexing, a tile over the shared-memory budget):
// the caller then runs the per-pixel kernel. max_grid_z caps blockIdx.z (tests pass a small
// value so that blocks loop over several channel images).
inline bool upfirdn2d_tile_plan(const Upfirdn2dParams& p, int elem_bytes, int max_grid_z, Upfirdn2dTile& t) {
    // Offsets (sums of non-negative size * stride terms) must fit int32; coordinates stay
    // below 2^30, so that o * down, i * up and the tile arithmetic cannot overflow.
    const int64_t kMax = int64_t(1) << 30;
    auto last = [](int64_t size, int64_t stride) { return size > 0 ? (size - 1) * stride : 0; };
    const int64_t xlast = last(p.n, p.sxn) + last(p.c, p.sxc) + last(p.h, p.sxh) + last(p.w_, p.sxw);
    const int64_t ylast = last(p.n, p.syn) + last(p.c, p.syc) + last(p.oh, p.syh) + last(p.ow, p.syw);
    const int64_t pads = (p.padx0 < 0 ? -int64_t(p.padx0) : p.padx0) + (p.pady0 < 0 ? -int64_t(p.pady0) : p.pady0);
    const int64_t reach = (p.oh + p.ow + 256) * (p.downx + p.downy) + (p.h + p.w_) * (p.upx + p.upy) +
                          pads + p.fh + p.fw;
    if (xlast > INT32_MAX || ylast > INT32_MAX || p.n * p.c >= kMax || reach >= kMax) return false;
    t.c = int(p.c); t.nc = int(p.n * p.c); t.h = int(p.h); t.w = int(p.w_);
    t.sxn = int(p.sxn); t.sxc = int(p.sxc); t.sxh = int(p.sxh); t.sxw = int(p.sxw);
    t.oh = int(p.oh); t.ow = int(p.ow);
    t.syn = int(p.syn); t.syc = int(p.syc); t.syh = int(p.syh); t.syw = int(p.syw);
    t.fh = p.fh; t.fw = p.fw; t.upx = p.upx; t.upy = p.upy; t.downx = p.downx; t.downy = p.downy;
    t.padx0 = p.padx0; t.pady0 = p.pady0;
    t.spec = kTileGeneric;
    for (int i = 0; i < kNumTileSpecs; ++i) {
        const TileSpecRow& s = kTileSpecs[i];
        if (s.upx == p.upx && s.upy == p.upy && s.downx == p.downx && s.downy == p.downy && s.fw == p.fw &&
            s.fh == p.fh) { t.spec = i; t.tw = s.tw; t.th = s.th; break; }
    }
    // The generic path: the largest of these tiles whose staged input fits in shared memory.
    const int generic[3][2] = {{32, 32}, {32, 16}, {32, 8}};
    for (int g = 0; g < (t.spec == kTileGeneric ? 3 : 1); ++g) {
        if (t.spec == kTileGeneric) { t.tw = generic[g][0]; t.th = generic[g][1]; }
        t.inw = tile_in_extent(t.tw, t.downx, t.upx, t.fw);
        t.inh = tile_in_extent(t.th, t.downy, t.upy, t.fh);
        const int64_t bytes = (int64_t(t.fh) * t.fw + int64_t(t.inw) * t.inh) * elem_bytes;
        t.shared_bytes = int(bytes < kTileSharedBytes ? bytes : kTileSharedBytes + 1);
        if (bytes <= kTileSharedBytes) break;
    }
    if (t.shared_bytes > kTileSharedBytes) return false;
    t.grid_x = (t.ow + t.tw - 1) / t.tw;
    t.grid_y = (t.oh + t.th - 1) / t.th;
    const int zcap = max_grid_z < 1 ? 1 : (max_grid_z < kTileMaxGridZ ? max_grid_z : kTileMaxGridZ);
    t.grid_z = t.nc < zcap ? t.nc : zcap;
    return t.grid_y <= kTileMaxGridZ;
}

// Block (bx, by): its first output (ox0, oy0) and the first staged input (ix0, iy0).
MTF_HD void tile_block_origin(const Upfirdn2dTile& t, int bx, int by, int& ox0, int& oy0, int& ix0, int& iy0) {
    ox0 = bx * t.tw;
    oy0 = by * t.th;
    ix0 = tile_in_first(ox0, t.downx, t.upx, t.padx0);
    iy0 = tile_in_first(oy0, t.downy, t.upy, t.pady0);
}

// Phase 0 (once per block): thread tid of kTileThreads copies some of the taps w [fh, fw]
// into the shared sw [fh * fw].
template <class Spec, typename T>
MTF_HD void tile_stage_taps(const Upfirdn2dTile& t, const float* w, T* sw, int tid) {
    const int taps = Spec::kFixed ? Spec::FH * Spec::FW : t.fh * t.fw;
    for (int k = tid; k < taps; k += kTileThreads) sw[k] = T(w[k]);
}

// Phase 1 (per channel image): thread (tx, ty) stages some of the input rectangle
// [iy0, iy0 + inh) x [ix0, ix0 + inw) of channel image xc into sx [inh, inw], zeros outside it.
template <class Spec, typename S, typename T, class Load>
MTF_HD void tile_stage_input(const Upfirdn2dTile& t, const S* xc, int ix0, int iy0, T* sx, int tx, int ty,
                             Load load) {
    const int inw = Spec::kFixed ? Spec::INW : t.inw;
    const int inh = Spec::kFixed ? Spec::INH : t.inh;
    for (int r = ty; r < inh; r += kTileBY) {
        const int iy = iy0 + r;
        const bool row_in = iy >= 0 && iy < t.h;
        for (int q = tx; q < inw; q += kTileBX) {
            const int ix = ix0 + q;
            T v = T(0);
            if (row_in && ix >= 0 && ix < t.w) v = load(xc[iy * t.sxh + ix * t.sxw]);
            sx[r * inw + q] = v;
        }
    }
}

// Phase 2 of a specialization, the thread's taps: kTileBX * down is a multiple of up (and
// kTileBY * down too where rows are strided), so all of a thread's outputs meet the same
// FH/UPY x FW/UPX taps, kept in registers; k0x, k0y = the first of them (tile_out_taps).
template <class Spec, typename T>
MTF_HD void tile_taps_to_registers(const T* sw, int k0x, int k0y, T (&wr)[Spec::FH / Spec::UPY][Spec::FW / Spec::UPX]) {
    static_assert(Spec::FW % Spec::UPX == 0 && Spec::FH % Spec::UPY == 0, "taps must be a multiple of up");
MTF_UNROLL
    for (int j = 0; j < Spec::FH / Spec::UPY; ++j)
MTF_UNROLL
        for (int i = 0; i < Spec::FW / Spec::UPX; ++i)
            wr[j][i] = sw[(k0y + j * Spec::UPY) * Spec::FW + k0x + i * Spec::UPX];
}

// Phase 2 of a specialization with UPY == 1: thread (tx, ty) computes the RY = TH / kTileBY
// consecutive output rows oy0 + ty * RY + a of the columns ox0 + tx + b * kTileBX. Each
// staged row it reads is loaded once and added into every output row that meets it (a
// sliding window: (RY - 1) * DOWNY + KY rows for RY outputs instead of RY * KY), in the
// order the per-pixel sum uses (filter rows, then columns, ascending).
template <class Spec, typename S, typename T, class Store>
MTF_HD void tile_compute_rows(const Upfirdn2dTile& t, const T* sx, const T* sw, S* yc, int ox0, int oy0, int ix0,
                              int iy0, int tx, int ty, Store store) {
    constexpr int UPX = Spec::UPX, DOWNX = Spec::DOWNX, DOWNY = Spec::DOWNY, INW = Spec::INW;
    constexpr int KX = Spec::FW / UPX, KY = Spec::FH;             // inputs each output reads
    constexpr int RY = Spec::TH / kTileBY, ROWS = (RY - 1) * DOWNY + KY;
    constexpr int STEPX = kTileBX * DOWNX / UPX;                  // staged columns between a thread's outputs
    static_assert(Spec::UPY == 1 && (kTileBX * DOWNX) % UPX == 0, "outputs of a thread share taps");
    static_assert(Spec::TW % kTileBX == 0 && Spec::TH % kTileBY == 0, "whole outputs per thread");
    const int oyt = oy0 + ty * RY;                                // the thread's first output row
    int rx, kx, ry, ky;
    tile_out_taps(ox0 + tx, DOWNX, UPX, t.padx0, ix0, rx, kx);
    tile_out_taps(oyt, DOWNY, 1, t.pady0, iy0, ry, ky);           // ky == 0
    T wr[KY][KX];
    tile_taps_to_registers<Spec>(sw, kx, ky, wr);
MTF_UNROLL
    for (int b = 0; b < Spec::TW / kTileBX; ++b) {
        const int ox = ox0 + tx + b * kTileBX;
        if (ox >= t.ow || oyt >= t.oh) break;
        const T* s = sx + ry * INW + rx + b * STEPX;
        T acc[RY];
MTF_UNROLL
        for (int a = 0; a < RY; ++a) acc[a] = T(0);
MTF_UNROLL
        for (int r = 0; r < ROWS; ++r) {
            T v[KX];
MTF_UNROLL
            for (int i = 0; i < KX; ++i) v[i] = s[r * INW + i];
MTF_UNROLL
            for (int a = 0; a < RY; ++a) {
                const int j = r - a * DOWNY;                      // the filter row staged row r meets in output a
                if (j >= 0 && j < KY) {
MTF_UNROLL
                    for (int i = 0; i < KX; ++i) acc[a] += v[i] * wr[j][i];
                }
            }
        }
MTF_UNROLL
        for (int a = 0; a < RY; ++a)
            if (oyt + a < t.oh) store(yc + (oyt + a) * t.syh + ox * t.syw, acc[a]);
    }
}

// Phase 2 of a specialization with UPY > 1: thread (tx, ty) computes outputs (ox0 + tx +
// b * kTileBX, oy0 + ty + a * kTileBY), rows strided so that all of them meet the same taps;
// from one output to the next the staged window moves by a compile-time step.
template <class Spec, typename S, typename T, class Store>
MTF_HD void tile_compute_strided(const Upfirdn2dTile& t, const T* sx, const T* sw, S* yc, int ox0, int oy0,
                                 int ix0, int iy0, int tx, int ty, Store store) {
    constexpr int UPX = Spec::UPX, UPY = Spec::UPY, DOWNX = Spec::DOWNX, DOWNY = Spec::DOWNY;
    constexpr int KX = Spec::FW / UPX, KY = Spec::FH / UPY;        // inputs each output reads
    constexpr int STEPX = kTileBX * DOWNX / UPX, STEPY = kTileBY * DOWNY / UPY;
    static_assert((kTileBX * DOWNX) % UPX == 0 && (kTileBY * DOWNY) % UPY == 0, "outputs of a thread share taps");
    static_assert(Spec::TW % kTileBX == 0 && Spec::TH % kTileBY == 0, "whole outputs per thread");
    int rx, kx, ry, ky;
    tile_out_taps(ox0 + tx, DOWNX, UPX, t.padx0, ix0, rx, kx);
    tile_out_taps(oy0 + ty, DOWNY, UPY, t.pady0, iy0, ry, ky);
    T wr[KY][KX];
    tile_taps_to_registers<Spec>(sw, kx, ky, wr);
MTF_UNROLL
    for (int a = 0; a < Spec::TH / kTileBY; ++a) {
        const int oy = oy0 + ty + a * kTileBY;
        if (oy >= t.oh) break;
        const T* srow = sx + (ry + a * STEPY) * Spec::INW + rx;
MTF_UNROLL
        for (int b = 0; b < Spec::TW / kTileBX; ++b) {
            const int ox = ox0 + tx + b * kTileBX;
            if (ox >= t.ow) break;
            const T* s = srow + b * STEPX;
            T acc = T(0);
MTF_UNROLL
            for (int j = 0; j < KY; ++j)
MTF_UNROLL
                for (int i = 0; i < KX; ++i) acc += s[j * Spec::INW + i] * wr[j][i];
            store(yc + oy * t.syh + ox * t.syw, acc);
        }
    }
}

// Phase 2, the generic path: the same tile math with run-time factors and taps (read from sw).
template <typename S, typename T, class Store>
MTF_HD void tile_compute_generic(const Upfirdn2dTile& t, const T* sx, const T* sw, S* yc, int ox0, int oy0,
                                 int ix0, int iy0, int tx, int ty, Store store) {
    for (int a = ty; a < t.th; a += kTileBY) {
        const int oy = oy0 + a;
        if (oy >= t.oh) break;
        int ry, ky;
        tile_out_taps(oy, t.downy, t.upy, t.pady0, iy0, ry, ky);
        for (int b = tx; b < t.tw; b += kTileBX) {
            const int ox = ox0 + b;
            if (ox >= t.ow) break;
            int rx, kx;
            tile_out_taps(ox, t.downx, t.upx, t.padx0, ix0, rx, kx);
            T acc = T(0);
            for (int j = ry, fy = ky; fy < t.fh; ++j, fy += t.upy) {
                const T* s = sx + j * t.inw + rx;
                const T* wrow = sw + fy * t.fw;
                for (int i = 0, fx = kx; fx < t.fw; ++i, fx += t.upx) acc += s[i] * wrow[fx];
            }
            store(yc + oy * t.syh + ox * t.syw, acc);
        }
    }
}

// Phase 2 for Spec: rows, strided or generic.
template <class Spec, typename S, typename T, class Store>
MTF_HD void tile_compute(const Upfirdn2dTile& t, const T* sx, const T* sw, S* yc, int ox0, int oy0, int ix0,
                         int iy0, int tx, int ty, Store store) {
    if constexpr (Spec::kFixed && Spec::UPY == 1)
        tile_compute_rows<Spec, S, T>(t, sx, sw, yc, ox0, oy0, ix0, iy0, tx, ty, store);
    else if constexpr (Spec::kFixed)
        tile_compute_strided<Spec, S, T>(t, sx, sw, yc, ox0, oy0, ix0, iy0, tx, ty, store);
    else
        tile_compute_generic<S, T>(t, sx, sw, yc, ox0, oy0, ix0, iy0, tx, ty, store);
}

}  // namespace mtf
