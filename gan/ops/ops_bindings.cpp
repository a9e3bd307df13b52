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
at::Tensor upfirdn2d_tiled_op(const at::Tensor& x, const at::Tensor& w, int64_t upx, int64_t upy,
                              int64_t downx, int64_t downy, int64_t padx0, int64_t padx1, int64_t pady0,
                              int64_t pady1, int64_t max_grid_z);
std::string upfirdn2d_tiled_kernel_name(int64_t n, int64_t c, int64_t h, int64_t w, int64_t fh, int64_t fw,
                                        int64_t upx, int64_t upy, int64_t downx, int64_t downy, int64_t padx0,
                                        int64_t padx1, int64_t pady0, int64_t pady1, int64_t elem_bytes);

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
    m.def("bias_act", &bias_act_op, "bias + activation + gain + clamp and its derivatives (see bias_act.h)");
    m.def("upfirdn2d", &upfirdn2d_op, "one upfirdn2d pass with a 2-D filter (see upfirdn2d.h)");
    m.def("upfirdn2d_pixelwise", &upfirdn2d_pixelwise_op,
          "test hook: upfirdn2d on CPU through the CUDA kernel's per-pixel math");
    m.def("upfirdn2d_tiled", &upfirdn2d_tiled_op,
          "upfirdn2d through the tiled kernel (CUDA tensors) or its CPU emulation (CPU tensors); "
          "max_grid_z caps the channel images a launch has in flight",
          py::arg("x"), py::arg("w"), py::arg("upx"), py::arg("upy"), py::arg("downx"), py::arg("downy"),
          py::arg("padx0"), py::arg("padx1"), py::arg("pady0"), py::arg("pady1"),
          py::arg("max_grid_z") = 65535);
    m.def("upfirdn2d_tiled_kernel_name", &upfirdn2d_tiled_kernel_name,
          "which tiled kernel (specialization, generic, or the per-pixel fallback) a contiguous pass takes");
#ifdef MTF_WITH_CUDA
    m.attr("with_cuda") = true;
#else
    m.attr("with_cuda") = false;
#endif
}
