// Our C kernels as torch operators, called by torch's dispatcher without Python:
//     llm_infer::small_batch_linear(Tensor x, Tensor weight, Tensor? bias) -> Tensor        (small_batch_linear.c)
//     llm_infer::small_batch_linear_int8(Tensor x, Tensor weight, Tensor scales, Tensor? bias) -> Tensor
//     llm_infer::small_batch_linear_w8a8(Tensor x, Tensor weight, Tensor scales, Tensor? bias) -> Tensor
//         the same int8 weights meeting x quantised to int8 per block of 32 (k a multiple of 32)
//     llm_infer::small_batch_linear_panels(Tensor x, Tensor panels, Tensor? bias) -> Tensor
//         float32 weights laid out in panels (n / W, k, W), W = panel_width() (small_batch_linear.c)
//     llm_infer::small_batch_linear_int4(Tensor x, Tensor codes, Tensor scales, Tensor lows, Tensor? bias) -> Tensor
//         x (rows, k) float32; weight (n, k) float32 or int8; scales (n) float32; bias (n) float32; out (rows, n);
//         int4: codes (n, k / 2) uint8, scales and lows (n, k / 32) float32 (small_batch_linear.c's layout)
//     llm_infer::small_batch_linear_w4a8(Tensor x, Tensor codes, Tensor scales, Tensor lows, Tensor? bias) -> Tensor
//         the same int4 weights meeting x quantised to int8 per block of 32
//     llm_infer::paged_decode_attention(Tensor query, Tensor key_pool, Tensor value_pool, Tensor block_tables,
//                                       Tensor seq_lens, float scale) -> Tensor                 (paged_attention.c)
//         query (rows, heads, head_dim) float32; pools (blocks, block_size, kv_heads, head_dim) float32;
//         block_tables (rows, max_blocks) int64; seq_lens (rows) int64; out like query
//     llm_infer::decoder_layer(Tensor(a!) hidden, Tensor input_norm, Tensor post_norm, Tensor[] weights,
//                              Tensor[] scales, Tensor[] lows, Tensor(b!) key_pool, Tensor(c!) value_pool,
//                              Tensor block_tables, Tensor cos, Tensor sin, Tensor lens, float eps,
//                              bool int8_activations=False) -> ()
//         (decoder_layer.c) hidden (rows, hidden) float32, updated in place; weights q, k, v, o, gate, up, down:
//         float32 (out, in) or panels (out / W, in, W) (scales and lows empty), int8 (out, in) (scales: 7 tensors of
//         (out) float32, lows empty) or int4 codes (out, in / 2) uint8 (scales and lows: 7 tensors each of
//         (out, in / 32) float32); pools (num_blocks, block_size, kv_heads, head_dim) float32, block_tables
//         (rows, max_blocks) int64; cos, sin (rows, head_dim) float32; lens (rows) int64, keys held before this
//         token; int8_activations: int8 or int4 weights meet x quantised per block of 32 (small_batch_linear_w8a8,
//         _w4a8)
// Their shape functions, for torch.compile, are in build.py.
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <torch/library.h>

#include <optional>

extern "C" {
#include "kernels.h"
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

static at::Tensor small_batch_linear_w8a8(const at::Tensor &x, const at::Tensor &weight, const at::Tensor &scales,
                                          const std::optional<at::Tensor> &bias) {
    check(x, weight, bias, at::kChar);
    TORCH_CHECK(x.size(1) % 32 == 0, "small_batch_linear_w8a8: x's k (", x.size(1), ") must be a multiple of 32");
    TORCH_CHECK(scales.is_contiguous() && scales.scalar_type() == at::kFloat && scales.numel() == weight.size(0),
                "small_batch: scales must be n contiguous float32 values");
    at::Tensor input = x.contiguous();
    at::Tensor out = at::empty({input.size(0), weight.size(0)}, input.options());
    int failed = linear_w8a8(input.const_data_ptr<float>(), weight.const_data_ptr<int8_t>(),
                             scales.const_data_ptr<float>(), bias ? bias->const_data_ptr<float>() : nullptr,
                             out.mutable_data_ptr<float>(), input.size(0), weight.size(0), weight.size(1));
    TORCH_CHECK(failed == 0, "small_batch_linear_w8a8: out of memory for its scratch buffers");
    return out;
}

static at::Tensor small_batch_linear_panels(const at::Tensor &x, const at::Tensor &panels,
                                           const std::optional<at::Tensor> &bias) {
    TORCH_CHECK(x.dim() == 2 && x.scalar_type() == at::kFloat, "small_batch_linear_panels: x must be a (rows, k) "
                "float32 matrix");
    TORCH_CHECK(panels.dim() == 3 && panels.is_contiguous() && panels.scalar_type() == at::kFloat &&
                panels.size(1) == x.size(1) && panels.size(2) == panel_width(),
                "small_batch_linear_panels: panels must be contiguous (n / ", panel_width(), ", k, ", panel_width(),
                ") float32");
    const int64_t n = panels.size(0) * panels.size(2);
    TORCH_CHECK(!bias || (bias->is_contiguous() && bias->scalar_type() == at::kFloat && bias->numel() == n),
                "small_batch_linear_panels: bias must be n contiguous float32 values");
    at::Tensor input = x.contiguous();
    at::Tensor out = at::empty({input.size(0), n}, input.options());
    linear_f32_panels(input.const_data_ptr<float>(), panels.const_data_ptr<float>(),
                      bias ? bias->const_data_ptr<float>() : nullptr, out.mutable_data_ptr<float>(), input.size(0), n,
                      input.size(1));
    return out;
}

static void check_int4(const char *op, const at::Tensor &x, const at::Tensor &codes, const at::Tensor &scales,
                       const at::Tensor &lows, const std::optional<at::Tensor> &bias) {
    TORCH_CHECK(x.dim() == 2 && x.scalar_type() == at::kFloat && x.size(1) % 32 == 0,
                op, ": x must be a (rows, k) float32 matrix, k a multiple of 32");
    const int64_t n = codes.size(0), groups = x.size(1) / 32;
    TORCH_CHECK(codes.dim() == 2 && codes.is_contiguous() && codes.scalar_type() == at::kByte &&
                codes.size(1) * 2 == x.size(1), op, ": codes must be a contiguous (n, k / 2) uint8 "
                "matrix");
    for (const at::Tensor *t : {&scales, &lows})
        TORCH_CHECK(t->is_contiguous() && t->scalar_type() == at::kFloat && t->numel() == n * groups,
                    op, ": scales and lows must be contiguous (n, k / 32) float32");
    TORCH_CHECK(!bias || (bias->is_contiguous() && bias->scalar_type() == at::kFloat && bias->numel() == n),
                op, ": bias must be n contiguous float32 values");
}

static at::Tensor small_batch_linear_int4(const at::Tensor &x, const at::Tensor &codes, const at::Tensor &scales,
                                          const at::Tensor &lows, const std::optional<at::Tensor> &bias) {
    check_int4("small_batch_linear_int4", x, codes, scales, lows, bias);
    const int64_t n = codes.size(0);
    at::Tensor input = x.contiguous();
    at::Tensor out = at::empty({input.size(0), n}, input.options());
    int failed = linear_int4(input.const_data_ptr<float>(), codes.const_data_ptr<uint8_t>(),
                             scales.const_data_ptr<float>(), lows.const_data_ptr<float>(),
                             bias ? bias->const_data_ptr<float>() : nullptr, out.mutable_data_ptr<float>(),
                             input.size(0), n, input.size(1));
    TORCH_CHECK(failed == 0, "small_batch_linear_int4: out of memory for its scratch buffer");
    return out;
}

static at::Tensor small_batch_linear_w4a8(const at::Tensor &x, const at::Tensor &codes, const at::Tensor &scales,
                                          const at::Tensor &lows, const std::optional<at::Tensor> &bias) {
    check_int4("small_batch_linear_w4a8", x, codes, scales, lows, bias);
    at::Tensor input = x.contiguous();
    at::Tensor out = at::empty({input.size(0), codes.size(0)}, input.options());
    int failed = linear_w4a8(input.const_data_ptr<float>(), codes.const_data_ptr<uint8_t>(),
                             scales.const_data_ptr<float>(), lows.const_data_ptr<float>(),
                             bias ? bias->const_data_ptr<float>() : nullptr, out.mutable_data_ptr<float>(),
                             input.size(0), codes.size(0), input.size(1));
    TORCH_CHECK(failed == 0, "small_batch_linear_w4a8: out of memory for its scratch buffers");
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

static bool float_matrix(const at::Tensor &t, int64_t rows, int64_t cols) {
    return t.dim() == 2 && t.is_contiguous() && t.scalar_type() == at::kFloat && t.size(0) == rows && t.size(1) == cols;
}

static void decoder_layer(const at::Tensor &hidden, const at::Tensor &input_norm, const at::Tensor &post_norm,
                          at::TensorList weights, at::TensorList scales, at::TensorList lows,
                          const at::Tensor &key_pool, const at::Tensor &value_pool, const at::Tensor &block_tables,
                          const at::Tensor &cos, const at::Tensor &sin, const at::Tensor &lens, double eps,
                          bool int8_activations) {
    TORCH_CHECK(hidden.dim() == 2 && hidden.is_contiguous() && hidden.scalar_type() == at::kFloat,
                "decoder_layer: hidden must be a contiguous (rows, hidden) float32 matrix");
    const int64_t rows = hidden.size(0), width = hidden.size(1);
    TORCH_CHECK(key_pool.dim() == 4 && key_pool.is_contiguous() && key_pool.scalar_type() == at::kFloat &&
                value_pool.sizes() == key_pool.sizes() && value_pool.is_contiguous() &&
                value_pool.scalar_type() == at::kFloat,
                "decoder_layer: the pools must be contiguous (num_blocks, block_size, kv_heads, head_dim) float32");
    const int64_t kv_heads = key_pool.size(2), head_dim = key_pool.size(3);
    TORCH_CHECK(block_tables.dim() == 2 && block_tables.size(0) == rows && block_tables.is_contiguous() &&
                block_tables.scalar_type() == at::kLong,
                "decoder_layer: block_tables must be (rows, max_blocks) int64");
    TORCH_CHECK(weights.size() == 7 && (scales.empty() || scales.size() == 7) && (lows.empty() || lows.size() == 7) &&
                (lows.empty() || !scales.empty()),
                "decoder_layer: weights must be q, k, v, o, gate, up, down; scales none (float32) or one per weight; "
                "lows none or one per weight (int4, with scales)");
    const bool int4 = !lows.empty(), panels = scales.empty() && weights[0].dim() == 3;
    auto outputs = [panels](const at::Tensor &w) { return panels ? w.size(0) * w.size(2) : w.size(0); };
    const int64_t q_width = outputs(weights[0]), intermediate = outputs(weights[4]);
    TORCH_CHECK(q_width % head_dim == 0 && (q_width / head_dim) % kv_heads == 0,
                "decoder_layer: q's outputs must be heads x head_dim, with kv_heads dividing heads");
    const int64_t shapes[7][2] = {{q_width, width}, {kv_heads * head_dim, width}, {kv_heads * head_dim, width},
                                  {width, q_width}, {intermediate, width}, {intermediate, width},
                                  {width, intermediate}};
    const at::ScalarType weight_type = int4 ? at::kByte : scales.empty() ? at::kFloat : at::kChar;
    TORCH_CHECK(!int8_activations || int4 || weight_type == at::kChar,
                "decoder_layer: int8_activations needs int8 or int4 weights (scales)");
    projections p;
    p.panels = panels;
    p.int8_activations = int8_activations;
    for (int i = 0; i < 7; i++) {
        const int64_t columns = int4 ? shapes[i][1] / 2 : shapes[i][1];  // int4: two codes a byte
        const int64_t per_weight = int4 ? shapes[i][0] * (shapes[i][1] / 32) : shapes[i][0];  // scales' values
        if (panels) {
            TORCH_CHECK(weights[i].dim() == 3 && weights[i].is_contiguous() && weights[i].scalar_type() == at::kFloat &&
                        weights[i].size(2) == panel_width() && outputs(weights[i]) == shapes[i][0] &&
                        weights[i].size(1) == shapes[i][1],
                        "decoder_layer: weight ", i, " must be contiguous float32 panels (", shapes[i][0], " / ",
                        panel_width(), ", ", shapes[i][1], ", ", panel_width(), ")");
        } else {
            TORCH_CHECK(weights[i].dim() == 2 && weights[i].is_contiguous() &&
                        weights[i].scalar_type() == weight_type && weights[i].size(0) == shapes[i][0] &&
                        weights[i].size(1) == columns,
                        "decoder_layer: weight ", i, " must be a contiguous (", shapes[i][0], ", ", columns,
                        ") matrix of ", weight_type);
        }
        TORCH_CHECK((!int4 && !int8_activations) || shapes[i][1] % 32 == 0,
                    "decoder_layer: int4 weights and int8 activations need inputs in groups of 32");
        p.weights[i] = weights[i].const_data_ptr();
        p.scales[i] = p.lows[i] = nullptr;
        if (!scales.empty()) {
            TORCH_CHECK(scales[i].is_contiguous() && scales[i].scalar_type() == at::kFloat &&
                        scales[i].numel() == per_weight, "decoder_layer: scales ", i, " must be ", per_weight,
                        " contiguous float32 values");
            p.scales[i] = scales[i].const_data_ptr<float>();
        }
        if (int4) {
            TORCH_CHECK(lows[i].is_contiguous() && lows[i].scalar_type() == at::kFloat &&
                        lows[i].numel() == per_weight, "decoder_layer: lows ", i, " must be ", per_weight,
                        " contiguous float32 values");
            p.lows[i] = lows[i].const_data_ptr<float>();
        }
    }
    TORCH_CHECK(input_norm.numel() == width && post_norm.numel() == width && input_norm.is_contiguous() &&
                post_norm.is_contiguous() && input_norm.scalar_type() == at::kFloat &&
                post_norm.scalar_type() == at::kFloat, "decoder_layer: the norms' weights must be hidden float32");
    TORCH_CHECK(float_matrix(cos, rows, head_dim) && float_matrix(sin, rows, head_dim),
                "decoder_layer: cos and sin must be contiguous (rows, head_dim) float32");
    TORCH_CHECK(lens.dim() == 1 && lens.size(0) == rows && lens.is_contiguous() && lens.scalar_type() == at::kLong,
                "decoder_layer: lens must be (rows) int64");
    const int64_t capacity = block_tables.size(1) * key_pool.size(1);
    int failed = decoder_layer_f32(
        hidden.mutable_data_ptr<float>(), input_norm.const_data_ptr<float>(), post_norm.const_data_ptr<float>(), &p,
        key_pool.mutable_data_ptr<float>(), value_pool.mutable_data_ptr<float>(),
        block_tables.const_data_ptr<int64_t>(), cos.const_data_ptr<float>(), sin.const_data_ptr<float>(),
        lens.const_data_ptr<int64_t>(), rows, width, q_width / head_dim, kv_heads, head_dim, intermediate,
        key_pool.size(0), key_pool.size(1), block_tables.size(1), static_cast<float>(eps));
    TORCH_CHECK(failed != -2, "decoder_layer: a row's cache is full: every lens value must be below max_blocks x "
                "block_size (", capacity, ")");
    TORCH_CHECK(failed != -3, "decoder_layer: a block table names a block outside the pool (0 .. ",
                key_pool.size(0) - 1, ")");
    TORCH_CHECK(failed == 0, "decoder_layer: out of memory for its scratch buffers");
}

TORCH_LIBRARY(llm_infer, m) {
    m.def("small_batch_linear(Tensor x, Tensor weight, Tensor? bias) -> Tensor");
    m.def("small_batch_linear_int8(Tensor x, Tensor weight, Tensor scales, Tensor? bias) -> Tensor");
    m.def("small_batch_linear_w8a8(Tensor x, Tensor weight, Tensor scales, Tensor? bias) -> Tensor");
    m.def("small_batch_linear_w4a8(Tensor x, Tensor codes, Tensor scales, Tensor lows, Tensor? bias) -> Tensor");
    m.def("small_batch_linear_panels(Tensor x, Tensor panels, Tensor? bias) -> Tensor");
    m.def("small_batch_linear_int4(Tensor x, Tensor codes, Tensor scales, Tensor lows, Tensor? bias) -> Tensor");
    m.def("paged_decode_attention(Tensor query, Tensor key_pool, Tensor value_pool, Tensor block_tables, "
          "Tensor seq_lens, float scale) -> Tensor");
    m.def("decoder_layer(Tensor(a!) hidden, Tensor input_norm, Tensor post_norm, Tensor[] weights, Tensor[] scales, "
          "Tensor[] lows, Tensor(b!) key_pool, Tensor(c!) value_pool, Tensor block_tables, Tensor cos, Tensor sin, "
          "Tensor lens, float eps, bool int8_activations=False) -> ()");
}

TORCH_LIBRARY_IMPL(llm_infer, CPU, m) {
    m.impl("small_batch_linear", &small_batch_linear);
    m.impl("small_batch_linear_int8", &small_batch_linear_int8);
    m.impl("small_batch_linear_int4", &small_batch_linear_int4);
    m.impl("small_batch_linear_w8a8", &small_batch_linear_w8a8);
    m.impl("small_batch_linear_w4a8", &small_batch_linear_w4a8);
    m.impl("small_batch_linear_panels", &small_batch_linear_panels);
    m.impl("paged_decode_attention", &paged_decode_attention);
    m.impl("decoder_layer", &decoder_layer);
}
