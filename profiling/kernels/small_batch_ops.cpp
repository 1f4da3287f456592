// The small-batch kernels (small_batch_linear.c) as torch operators, called by torch's dispatcher without Python:
//     llm_infer::small_batch_linear(Tensor x, Tensor weight, Tensor? bias) -> Tensor
//     llm_infer::small_batch_linear_int8(Tensor x, Tensor weight, Tensor scales, Tensor? bias) -> Tensor
// x (rows, k) float32; weight (n, k) float32 or int8; scales (n) float32; bias (n) float32; out (rows, n) float32.
// Their shape functions, for torch.compile, are in small_batch.py.
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <torch/library.h>

#include <optional>

extern "C" {
void linear_f32(const float *x, const float *w, const float *bias, float *y, long rows, long n, long k);
void linear_int8(const float *x, const int8_t *w, const float *scale, const float *bias, float *y, long rows, long n,
                 long k);
}

static void check(const at::Tensor &x, const at::Tensor &weight, const std::optional<at::Tensor> &bias,
                  at::ScalarType weight_type) {
    TORCH_CHECK(x.dim() == 2 && x.scalar_type() == at::kFloat, "small_batch: x must be a (rows, k) float32 matrix");
    TORCH_CHECK(weight.dim() == 2 && weight.is_contiguous() && weight.scalar_type() == weight_type &&
                weight.size(1) == x.size(1), "small_batch: weight must be a contiguous (n, k) matrix of ", weight_type);
    TORCH_CHECK(!bias || (bias->is_contiguous() && bias->scalar_type() == at::kFloat && bias->numel() == weight.size(0)),
                "small_batch: bias must be n contiguous float32 values");
}

static at::Tensor small_batch_linear(const at::Tensor &x, const at::Tensor &weight,
                                     const std::optional<at::Tensor> &bias) {
    check(x, weight, bias, at::kFloat);
    at::Tensor input = x.contiguous();
    at::Tensor out = at::empty({input.size(0), weight.size(0)}, input.options());
    linear_f32(input.const_data_ptr<float>(), weight.const_data_ptr<float>(),
               bias ? bias->const_data_ptr<float>() : nullptr, out.mutable_data_ptr<float>(), input.size(0),
               weight.size(0), weight.size(1));
    return out;
}

static at::Tensor small_batch_linear_int8(const at::Tensor &x, const at::Tensor &weight, const at::Tensor &scales,
                                          const std::optional<at::Tensor> &bias) {
    check(x, weight, bias, at::kChar);
    TORCH_CHECK(scales.is_contiguous() && scales.scalar_type() == at::kFloat && scales.numel() == weight.size(0),
                "small_batch: scales must be n contiguous float32 values");
    at::Tensor input = x.contiguous();
    at::Tensor out = at::empty({input.size(0), weight.size(0)}, input.options());
    linear_int8(input.const_data_ptr<float>(), weight.const_data_ptr<int8_t>(), scales.const_data_ptr<float>(),
                bias ? bias->const_data_ptr<float>() : nullptr, out.mutable_data_ptr<float>(), input.size(0),
                weight.size(0), weight.size(1));
    return out;
}

TORCH_LIBRARY(llm_infer, m) {
    m.def("small_batch_linear(Tensor x, Tensor weight, Tensor? bias) -> Tensor");
    m.def("small_batch_linear_int8(Tensor x, Tensor weight, Tensor scales, Tensor? bias) -> Tensor");
}

TORCH_LIBRARY_IMPL(llm_infer, CPU, m) {
    m.impl("small_batch_linear", &small_batch_linear);
    m.impl("small_batch_linear_int8", &small_batch_linear_int8);
}
