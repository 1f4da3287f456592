"""Our small-batch C kernel (profiling/kernels/small_batch.py): F.linear's numbers at every row count around its
thresholds, int8 weights de-quantised exactly as quantize.py stores them, torch's thread count, the model loader,
the server and D5's variants on the tiny model, and a clear error without a C compiler."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from conftest import REPO
from profiling.config import Precision
from profiling.engine import generate
from profiling.kernels import small_batch
from profiling.model import load_model

pytestmark = pytest.mark.skipif(not small_batch.available(),
                                reason=f"the small-batch kernel cannot be built here: {small_batch.unavailable_reason()}")


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("out_features", [64, 40])  # panels (a multiple of their width), or none: the dot products
def test_the_float32_kernels_compute_what_f_linear_does_at_every_row_count(bias, out_features):
    torch.manual_seed(0)
    linear = nn.Linear(72, out_features, bias=bias)  # in_features not a multiple of a vector: the loop's tail runs
    layer = small_batch.SmallBatchLinear(linear)
    assert (layer._panels is not None) == (out_features == 64)
    # every panel block size (1-6 rows) and several blocks, both kernels' limits, oneDNN's rows above
    for rows in [*range(1, 14), small_batch.MAX_ROWS, small_batch.MAX_ROWS + 1]:
        x = torch.randn(rows, 72)
        with torch.inference_mode():
            torch.testing.assert_close(layer(x), F.linear(x, linear.weight, linear.bias), rtol=1e-5, atol=1e-5)
    x = torch.randn(2, 1, 72)
    with torch.inference_mode():
        torch.testing.assert_close(layer(x), linear(x), rtol=1e-5, atol=1e-5)
    assert layer.weight is linear.weight  # a tied lm_head stays tied, byte counts read the original


def test_the_int8_kernel_uses_one_scale_per_output_channel():
    torch.manual_seed(1)
    linear = nn.Linear(96, 24)
    layer = small_batch.SmallBatchInt8Linear(linear)
    assert layer.weight.dtype == torch.int8 and layer.scales.dtype == torch.float32
    dequantised = layer.weight.float() * layer.scales[:, None]
    assert (dequantised - linear.weight).abs().max() <= layer.scales.max() / 2 + 1e-6
    for rows in (1, 3, 5, small_batch.INT8_MAX_ROWS, small_batch.INT8_MAX_ROWS + 1):
        x = torch.randn(rows, 96)
        with torch.inference_mode():
            torch.testing.assert_close(layer(x), F.linear(x, dequantised, linear.bias), rtol=1e-5, atol=1e-5)


def q8_0_activations(x: torch.Tensor) -> torch.Tensor:
    """x rounded as llama.cpp's q8_0 rounds activations: blocks of 32, scale max |x| / 127, 8-bit codes."""
    blocks = x.reshape(*x.shape[:-1], -1, 32)
    scale = blocks.abs().amax(-1, keepdim=True) / 127
    codes = torch.round(blocks / torch.where(scale > 0, scale, torch.ones_like(scale)))
    assert codes.abs().max() <= 127
    return (codes * scale).reshape(x.shape)


@pytest.mark.parametrize("in_features", [96, 576])  # a last block of 32 after the 64-byte chunks; 4 chunks of 128 + 1
def test_the_w8a8_kernel_is_the_int8_layer_on_q8_0_rounded_activations(in_features):
    torch.manual_seed(3)
    linear = nn.Linear(in_features, 40)
    layer = small_batch.SmallBatchW8A8Linear(linear)
    int8 = small_batch.SmallBatchInt8Linear(linear)
    assert torch.equal(layer.weight, int8.weight) and torch.equal(layer.scales, int8.scales)
    for rows in (1, 3, small_batch.INT8_MAX_ROWS):
        x = torch.randn(rows, in_features) * torch.linspace(0.01, 3, in_features)  # blocks of unequal ranges
        x[0, :32] = 0.0  # an all-zero block: scale 0
        with torch.inference_mode():
            out = layer(x)
            torch.testing.assert_close(out, int8(q8_0_activations(x)), rtol=1e-5, atol=1e-5)
            assert (out - int8(x)).abs().max() > 1e-4  # the activations really are rounded
    x = torch.randn(small_batch.INT8_MAX_ROWS + 1, in_features)  # above: float32 activations, as the int8 layer
    with torch.inference_mode():
        torch.testing.assert_close(layer(x), int8(x), rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match=r"in_features \(72\) a multiple of 32"):
        small_batch.SmallBatchW8A8Linear(nn.Linear(72, 8))


@pytest.mark.parametrize("in_features", [96, 320])  # 3 groups (one left after pairs), 10
def test_the_w4a8_kernel_is_the_int4_layer_on_q8_0_rounded_activations(in_features):
    torch.manual_seed(4)
    linear = nn.Linear(in_features, 24)
    layer, int4 = small_batch.SmallBatchW4A8Linear(linear), small_batch.SmallBatchInt4Linear(linear)
    assert torch.equal(layer.codes, int4.codes)
    for rows in (1, 3, 17):
        x = torch.randn(rows, in_features) * torch.linspace(0.01, 3, in_features)
        x[0, 32:64] = 0.0
        with torch.inference_mode():
            out = layer(x)
            torch.testing.assert_close(out, int4(q8_0_activations(x)), rtol=1e-5, atol=1e-5)
            assert (out - int4(x)).abs().max() > 1e-4


@pytest.mark.parametrize("in_features", [96, 320])  # 3 groups (the loop's leftover groups), 10 (4 at a time, then 2)
def test_the_int4_kernel_reads_q4_1_groups_as_the_aten_int4_layer_stores_them(in_features):
    from profiling.quantize import Int4WeightOnlyLinear

    torch.manual_seed(2)
    linear = nn.Linear(in_features, 48)
    layer = small_batch.SmallBatchInt4Linear(linear)
    assert layer.codes.dtype == torch.uint8 and layer.codes.shape == (48, in_features // 2)
    weight = layer.dequantized()
    # the same codes, scales and lows as the aten kernel's layer: w = (q - 8) * scale + zero = low + q * scale
    aten = Int4WeightOnlyLinear(linear, torch.float32)
    scales, zeros = aten.scales_and_zeros[..., 0].t(), aten.scales_and_zeros[..., 1].t()
    torch.testing.assert_close(layer.scales, scales)
    torch.testing.assert_close(layer.lows, zeros - 8 * scales)
    assert (weight - linear.weight).abs().max() <= layer.scales.max() / 2 + 1e-6
    for rows in (1, 2, 4, 5, 17):
        x = torch.randn(rows, in_features)
        with torch.inference_mode():
            torch.testing.assert_close(layer(x), F.linear(x, weight, linear.bias), rtol=1e-4, atol=1e-4)


def test_the_kernel_runs_on_torchs_thread_count():
    lib = small_batch.library()
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        assert lib.kernel_threads() == 1
        torch.set_num_threads(2)
        assert lib.kernel_threads() == 2
    finally:
        torch.set_num_threads(before)


def test_the_loader_swaps_every_float32_linear_and_keeps_the_greedy_tokens(tiny, tmp_path):
    tiny[0].save_pretrained(tmp_path)
    tiny[1].save_pretrained(tmp_path)
    plain = load_model(str(tmp_path), Precision("cpu", "float32", linears="aten"))
    fast = load_model(str(tmp_path), Precision("cpu", "float32", linears="small_batch"))
    linears = sum(type(m) is nn.Linear for m in plain.modules())
    assert sum(isinstance(m, small_batch.SmallBatchLinear) for m in fast.modules()) == linears
    for batch in (1, 3, 6):  # decode rows through the kernel, and above its rows through oneDNN
        ids = torch.randint(3, 200, (batch, 9))
        mask = torch.ones_like(ids)
        assert torch.equal(generate(plain, ids, mask, 6).tokens, generate(fast, ids, mask, 6).tokens)


def test_the_server_runs_its_own_copy_with_the_kernel(tiny):
    from profiling.serving.api.service import Service
    from profiling.serving.api.settings import ServerSettings

    model, tokenizer = tiny
    service = Service(ServerSettings(device="cpu", threads=1), model=model, tokenizer=tokenizer)  # the default
    assert any(isinstance(m, small_batch.SmallBatchLinear) for m in service.model.modules())
    assert not any(isinstance(m, small_batch.SmallBatchLinear) for m in model.modules())


def test_d5s_kernel_variants_give_the_reference_tokens(tmp_path, monkeypatch):
    from profiling.engine import encode_prompts
    from profiling.model import load_tokenizer, provision
    from profiling.phases.d5_variants import variants as V
    from profiling.timing import StageClock

    monkeypatch.chdir(tmp_path)
    provision("tiny-random", tmp_path / "resources" / "models" / "tiny-random")
    inputs = encode_prompts(load_tokenizer("tiny-random"), ["Why is the sky blue?", "Hello"], "cpu")
    reference = V.build("reference", "tiny-random", "cpu")
    expected = reference.generate(*inputs, 6, StageClock("cpu"))
    fast = V.build("small_batch_sdpa", "tiny-random", "cpu")
    assert sum(isinstance(m, small_batch.SmallBatchLinear) for m in fast.model.modules()) == 2 * 7 + 1
    assert fast.weight_bytes == reference.weight_bytes
    assert torch.equal(fast.generate(*inputs, 6, StageClock("cpu")), expected)
    int8 = V.build("int8wo_small_batch_sdpa", "tiny-random", "cpu")
    assert sum(isinstance(m, small_batch.SmallBatchInt8Linear) for m in int8.model.modules()) == 2 * 7 + 1
    assert int8.weight_bytes < 0.3 * reference.weight_bytes  # 1 byte per weight + a scale per channel
    tokens = int8.generate(*inputs, 6, StageClock("cpu"))
    assert tokens.shape == expected.shape
    # the kernels are torch operators with a shape function: a compiled decode step calls them
    compiled = V.build("int8wo_small_batch_sdpa_static_compile", "tiny-random", "cpu")
    assert torch.equal(compiled.generate(*inputs, 6, StageClock("cpu")), tokens)


def test_without_a_c_compiler_the_loader_and_the_server_say_so_and_run_with_onednn(tiny, tmp_path):
    tiny[0].save_pretrained(tmp_path / "model")
    tiny[1].save_pretrained(tmp_path / "model")
    script = ("from profiling.config import Precision\n"
              "from profiling.env import cpu_linears\n"
              "from profiling.kernels import small_batch\n"
              "from profiling.model import load_model\n"
              "from profiling.prepack import is_prepacked\n"
              "from profiling.serving.api.service import Service\n"
              "from profiling.serving.api.settings import ServerSettings\n"
              "print(small_batch.unavailable_reason())\n"
              "precision = Precision('cpu', 'float32', linears='small_batch')\n"
              f"model = load_model({str(tmp_path / 'model')!r}, precision)\n"
              "print('packed', is_prepacked(model), cpu_linears(precision))\n"
              f"service = Service(ServerSettings(model={str(tmp_path / 'model')!r}, device='cpu', threads=1))\n"
              "print('server', service.settings.linears, is_prepacked(service.model),\n"
              "      service.worker.runner.paged_attention)\n")
    env = {**os.environ, "CC": "no-such-compiler", "XDG_CACHE_HOME": str(tmp_path)}
    done = subprocess.run([sys.executable, "-c", script], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr
    assert "no C compiler 'no-such-compiler'" in done.stdout
    assert "cpu_linears: small_batch: our C kernel cannot be built here" in done.stderr
    assert "running with cpu_linears: prepacked" in done.stderr and "packed True prepacked" in done.stdout
    # the server's defaults (linears small_batch, paged_attention kernel) fall back likewise, and say so
    assert "linears: small_batch: our C kernel cannot be built here" in done.stderr
    assert "running with linears: prepacked" in done.stderr and "server small_batch True sdpa" in done.stdout
    assert "paged_attention: kernel: no C compiler 'no-such-compiler'" in done.stderr


def test_a_trace_names_the_kernels_calls_and_the_step_split_counts_their_bytes(tiny, tmp_path):
    """The kernels are torch operators: the profiler records them with their shapes and dtypes, D2's categories
    read them as linear layers and the lm_head, and D5's split counts the bytes each call reads (int8: 1 a weight)."""
    from torch.profiler import ProfilerActivity, profile

    from profiling.phases.d2_bottlenecks.op_categories import categorize
    from profiling.phases.d5_variants.step_split import weight_bytes
    from profiling.shapes import Shapes

    model, _ = tiny
    shapes = Shapes.from_config(model.config)
    for int8 in (False, True):
        fast = load_model_copy(model, tmp_path, int8)
        ids = torch.randint(3, 200, (1, 1))
        with torch.inference_mode(), profile(activities=[ProfilerActivity.CPU], record_shapes=True) as traced:
            fast(input_ids=ids)
        path = tmp_path / f"trace_{int8}.json"
        traced.export_chrome_trace(str(path))
        ops = [e for e in json.loads(path.read_text())["traceEvents"] if e.get("name", "").startswith("llm_infer::")]
        assert len(ops) == 2 * 7 + 1  # 7 linears per layer, 2 layers, the lm_head
        parts = [categorize(op["name"], op["args"]["Input Dims"], shapes) for op in ops]
        assert parts.count("lm_head") == 1 and parts.count("linear") == 2 * 7
        head = ops[parts.index("lm_head")]
        per_weight = 1 if int8 else 4
        expected = shapes.vocab * shapes.hidden * per_weight + (shapes.vocab * 4 if int8 else 0)  # + int8's scales
        assert weight_bytes(head) == expected


def load_model_copy(model, tmp_path, int8: bool):
    """A deep copy of `model` whose linear layers run by the kernel (int8 weights when `int8`)."""
    import copy

    fast = copy.deepcopy(model)
    small_batch.use_small_batch_kernels(fast, weights="int8" if int8 else "float32")
    return fast


def test_the_config_defaults_to_the_kernel_and_falls_back_to_onednn_without_its_compilers(monkeypatch, capsys):
    from profiling.config import check_config, resolve_precision

    config = check_config({"device": "cpu"})
    assert config["cpu_linears"] == "small_batch" and resolve_precision(config).linears == "small_batch"
    monkeypatch.setenv("CXX", "no-such-compiler")
    assert resolve_precision(config).linears == "prepacked"  # checked before any job starts, without torch
    said = capsys.readouterr().err
    assert "cpu_linears: small_batch" in said and "CXX=no-such-compiler" in said and "cpu_linears: prepacked" in said
