"""Prepacked linear layers (profiling/prepack.py): the same numbers as F.linear, on the real model code path, and
wired through the model loader, the server and D2's operator categories."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from profiling import prepack
from profiling.config import ConfigError, Precision, resolve_precision
from profiling.engine import generate
from profiling.model import load_model
from profiling.phases.d2_bottlenecks.op_categories import categorize
from profiling.serving.api.service import Service
from profiling.serving.api.settings import ServerSettings
from profiling.shapes import Shapes

pytestmark = pytest.mark.skipif(not prepack.available(), reason="this torch has no oneDNN linear ops")


def test_a_prepacked_linear_computes_what_f_linear_does():
    torch.manual_seed(0)
    linear = nn.Linear(64, 48)
    packed = prepack.PrepackedLinear(linear)
    for shape in ((1, 64), (5, 64), (2, 3, 64)):
        x = torch.randn(*shape)
        torch.testing.assert_close(packed(x), linear(x), rtol=1e-5, atol=1e-5)
    assert packed.weight is linear.weight  # tied weights and byte counts still see the original


def test_prepacking_a_model_keeps_its_greedy_tokens(tiny, tmp_path):
    tiny[0].save_pretrained(tmp_path)
    tiny[1].save_pretrained(tmp_path)
    plain = load_model(str(tmp_path), Precision("cpu", "float32", linears="aten"))
    packed = load_model(str(tmp_path), Precision("cpu", "float32"))
    assert not prepack.is_prepacked(plain)
    linears = sum(isinstance(m, nn.Linear) for m in plain.modules())
    assert sum(isinstance(m, prepack.PrepackedLinear) for m in packed.modules()) == linears
    ids = torch.randint(3, 200, (3, 9))
    mask = torch.ones_like(ids)
    assert torch.equal(generate(plain, ids, mask, 6).tokens, generate(packed, ids, mask, 6).tokens)
    assert resolve_precision({"device": "cpu", "cpu_linears": "aten"}).linears == "aten"


def test_d2_counts_a_prepacked_linear_as_a_linear_or_the_lm_head():
    shapes = Shapes(layers=30, hidden=576, intermediate=1536, heads=9, kv_heads=3, head_dim=64, vocab=49152,
                    max_positions=8192, tied_embeddings=True)
    assert categorize("mkldnn::_linear_pointwise", [[1, 3, 576], [1536, 576], [], [], [], []], shapes) == "linear"
    assert categorize("mkldnn::_linear_pointwise", [[1, 1, 576], [49152, 576], [], []], shapes) == "lm_head"


def test_the_server_prepacks_its_own_copy_and_names_a_bad_setting(tiny):
    model, tokenizer = tiny
    service = Service(ServerSettings(device="cpu", threads=1, linears="prepacked"), model=model, tokenizer=tokenizer)
    assert prepack.is_prepacked(service.model) and not prepack.is_prepacked(model)
    assert service.engine.model is service.model
    plain = Service(ServerSettings(device="cpu", threads=1, linears="aten"), model=model, tokenizer=tokenizer)
    assert plain.model is model
    with pytest.raises(ConfigError, match="linears"):
        ServerSettings(linears="fast").check()


def test_a_cpu_that_cannot_pack_bfloat16_keeps_f_linear_for_it(monkeypatch):
    """On an AVX2-only CPU oneDNN refuses to pack bfloat16 weights: bfloat16 models keep F.linear there, and D2's
    shape curve times only aten for bfloat16; float32 still packs."""
    from profiling.phases.d2_bottlenecks import linear_shapes

    real_pack = prepack.pack_weight

    def pack_as_on_avx2(weight):
        if weight.dtype == torch.bfloat16:
            raise RuntimeError("mkldnn_reorder_linear_weight: bf16 path needs the cpu support avx_ne_convert or "
                               "avx512bw, avx512vl and avx512dq")
        return real_pack(weight)

    monkeypatch.setattr(prepack, "pack_weight", pack_as_on_avx2)
    prepack.available.cache_clear()
    try:
        assert prepack.available(torch.float32) and not prepack.available(torch.bfloat16)
        model = nn.Sequential(nn.Linear(16, 8), nn.Linear(8, 4)).to(torch.bfloat16)
        assert prepack.prepack_linears(model) == 0 and not prepack.is_prepacked(model)
        assert model(torch.randn(2, 16, dtype=torch.bfloat16)).shape == (2, 4)
        assert prepack.prepack_linears(nn.Sequential(nn.Linear(16, 8), nn.Linear(8, 4))) == 2
        both = ["aten", "prepacked"]
        assert linear_shapes.kernels_for(both, "cpu", torch.bfloat16) == ["aten"]
        assert linear_shapes.kernels_for(both, "cpu", torch.float32) == both
    finally:
        prepack.available.cache_clear()  # the next caller probes this CPU again, with the real packing
