// Our C kernels as torch operators, called by torch's dispatcher without Python:
//     llm_infer::small_batch_linear(Tensor x, Tensor weight, Tensor? bias) -> Tensor        (small_batch_linear.c)
//     llm_infer::small_batch_linear_int8(Tensor x, Tensor weight, Tensor scales, Tensor? bias) -> Tensor
//         x (rows, k) float32; weight (n, k) float32 or int8; scales (n) float32; bias (n) float32; out (rows, n)
//     llm_infer::paged_decode_attention(Tensor query, Tensor key_pool, Tensor value_pool, Tensor block_tables,
//                                       Tensor seq_lens, float scale) -> Tensor                 (paged_attention.c)
//         query (rows, heads, head_dim) float32; pools (blocks, block_size, kv_heads, head_dim) float32;
//         block_tables (rows, max_blocks) int64; seq_lens (rows) int64; out like query
// Their shape functions, for torch.compile, are in build.py.
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <torch/library.h>

#include <optional>

extern "C" {
void linear_f32(const float *x, const float *w, const float *bias, float *y, long rows, long n, long k);
void linear_int8(const float *x, const int8_t *w, const float *scale, const float *bias, float *y, long rows, long n,
                 long k);
int paged_decode_attention_f32(const float *q, const float *key_pool, const float *value_pool, const int64_t *tables,
                               const int64_t *lens, float *out, long rows, long heads, long kv_heads, long head_dim,
                               long num_blocks, long block_size, long max_blocks, float scale);
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

static at::Tensor paged_decode_attention(const at::Tensor &query, const at::Tensor &key_pool,
                                         const at::Tensor &value_pool, const at::Tensor &block_tables,
                                         const at::Tensor &seq_lens, double scale) {
    TORCH_CHECK(query.dim() == 3 && query.scalar_type() == at::kFloat,
                "paged_decode_attention: query must be (rows, heads, head_dim) float32");
    TORCH_CHECK(key_pool.dim() == 4 && key_pool.is_contiguous() && key_pool.scalar_type() == at::kFloat &&
                value_pool.sizes() == key_pool.sizes() && value_pool.is_contiguous() &&
                value_pool.scalar_type() == at::kFloat && key_pool.size(3) == query.size(2) &&
                query.size(1) % key_pool.size(2) == 0,
                "paged_decode_attention: the pools must be contiguous (blocks, block_size, kv_heads, head_dim) "
                "float32, with head_dim the query's and kv_heads dividing its heads");
    TORCH_CHECK(block_tables.dim() == 2 && block_tables.size(0) == query.size(0) &&
                block_tables.scalar_type() == at::kLong && seq_lens.numel() == query.size(0) &&
                seq_lens.scalar_type() == at::kLong,
                "paged_decode_attention: block_tables must be (rows, max_blocks) int64, seq_lens (rows) int64");
    at::Tensor q = query.contiguous(), tables = block_tables.contiguous(), lens = seq_lens.contiguous();
    at::Tensor out = at::empty_like(q);
    int failed = paged_decode_attention_f32(
        q.const_data_ptr<float>(), key_pool.const_data_ptr<float>(), value_pool.const_data_ptr<float>(),
        tables.const_data_ptr<int64_t>(), lens.const_data_ptr<int64_t>(), out.mutable_data_ptr<float>(), q.size(0),
        q.size(1), key_pool.size(2), q.size(2), key_pool.size(0), key_pool.size(1), tables.size(1),
        static_cast<float>(scale));
    TORCH_CHECK(failed != -2, "paged_decode_attention: every seq_len must be between 1 and max_blocks * block_size");
    TORCH_CHECK(failed != -3, "paged_decode_attention: a block table names a block outside the pool (0 .. ",
                key_pool.size(0) - 1, ")");
    TORCH_CHECK(failed != -1, "paged_decode_attention: out of memory for its scores");
    return out;
}

TORCH_LIBRARY(llm_infer, m) {
    m.def("small_batch_linear(Tensor x, Tensor weight, Tensor? bias) -> Tensor");
    m.def("small_batch_linear_int8(Tensor x, Tensor weight, Tensor scales, Tensor? bias) -> Tensor");
    m.def("paged_decode_attention(Tensor query, Tensor key_pool, Tensor value_pool, Tensor block_tables, "
          "Tensor seq_lens, float scale) -> Tensor");
}

TORCH_LIBRARY_IMPL(llm_infer, CPU, m) {
    m.impl("small_batch_linear", &small_batch_linear);
    m.impl("small_batch_linear_int8", &small_batch_linear_int8);
    m.impl("paged_decode_attention", &paged_decode_attention);
}
