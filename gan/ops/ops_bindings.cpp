// Python bindings of the mtf ops (the one translation unit that pulls in pybind11).
#include <torch/extension.h>

at::Tensor bias_act_op(const at::Tensor& x, const at::Tensor& b, const at::Tensor& dy, int64_t mode,
                       int64_t act, double alpha, double gain, double clamp, int64_t dim);
at::Tensor upfirdn2d_op(const at::Tensor& x, const at::Tensor& w, int64_t upx, int64_t upy,
                        int64_t downx, int64_t downy, int64_t padx0, int64_t padx1, int64_t pady0,
                        int64_t pady1);
at::Tensor upfirdn2d_pixelwise_op(const at::Tensor& x, const at::Tensor& w, int64_t upx, int64_t upy,
                                  int64_t downx, int64_t downy, int64_t padx0, int64_t padx1, int64_t pady0,
                                  int64_t pady1);

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
    m.def("bias_act", &bias_act_op, "bias + activation + gain + clamp and its derivatives (see bias_act.h)");
    m.def("upfirdn2d", &upfirdn2d_op, "one upfirdn2d pass with a 2-D filter (see upfirdn2d.h)");
    m.def("upfirdn2d_pixelwise", &upfirdn2d_pixelwise_op,
          "test hook: upfirdn2d on CPU through the CUDA kernel's per-pixel math");
#ifdef MTF_WITH_CUDA
    m.attr("with_cuda") = true;
#else
    m.attr("with_cuda") = false;
#endif
}
