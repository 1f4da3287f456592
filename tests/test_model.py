import pytest
import torch

from profiling.config import ConfigError, Precision
from profiling.engine import encode_prompts, generate
from profiling.model import load_model, load_tokenizer, provision, weight_bytes


def test_provisioned_tiny_model_round_trips(tmp_path, monkeypatch, tiny):
    monkeypatch.chdir(tmp_path)
    out = provision("tiny-random", tmp_path / "resources" / "models" / "tiny-random", seed=0)
    assert (out / "config.json").exists() and (out / "model.safetensors").exists()
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".")]  # no staging leftovers
    model = load_model("tiny-random", Precision("cpu", "float32"))
    tokenizer = load_tokenizer("tiny-random")
    assert tokenizer.padding_side == "left"
    built_model, built_tokenizer = tiny
    ids, mask = encode_prompts(tokenizer, ["round trip"], "cpu")
    assert torch.equal(generate(model, ids, mask, 6).tokens, generate(built_model, ids, mask, 6).tokens)


def test_load_in_another_dtype(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    provision("tiny-random", tmp_path / "resources" / "models" / "tiny-random")
    model = load_model("tiny-random", Precision("cpu", "bfloat16"))
    assert next(model.parameters()).dtype == torch.bfloat16


def test_weight_bytes_counts_every_parameter_once(tiny):
    model, _ = tiny
    tensors = list(model.parameters()) + list(model.buffers())
    assert weight_bytes(model) == sum(t.numel() * t.element_size() for t in tensors)


def test_weight_bytes_counts_tied_weights_once():
    from profiling.model import build_tiny_model

    model, _ = build_tiny_model(seed=0)
    untied = weight_bytes(model)
    embedding = model.get_input_embeddings().weight
    model.lm_head.weight = embedding  # one tensor, two names (as in models with tied embeddings)
    assert weight_bytes(model) == untied - embedding.numel() * embedding.element_size()


def test_missing_model_directory_is_a_clear_error(tmp_path):
    with pytest.raises(ConfigError, match="could not load"):
        load_model(str(tmp_path / "nowhere" / "x"), Precision("cpu", "float32"))


def test_only_named_models_are_provisioned(tmp_path):
    with pytest.raises(ConfigError, match="needs no provisioning"):
        provision("org/some-model", tmp_path / "x")
