"""Bad config values are rejected with a message naming the field; good ones get their defaults."""
import pytest
import yaml

from profiling.config import ConfigError, check_config, resolve_precision
from tests.conftest import REPO


def test_shipped_config_is_valid_and_complete():
    config = check_config(yaml.safe_load((REPO / "config" / "config.yaml").read_text()))
    assert config["model"] == "smollm2-135m-instruct"
    assert config["d1_request"]["repeats"] >= 1


def test_defaults_are_filled():
    config = check_config({})
    assert config["device"] == "auto" and config["d1_request"]["max_new_tokens"] == 32


def test_quick_profile_is_merged_and_checked():
    base = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    quick = check_config({**base, "profile": "quick"})
    assert quick["d1_request"]["repeats"] == base["profiles"]["quick"]["d1_request"]["repeats"]
    assert quick["d1_request"]["prompt"] == base["d1_request"]["prompt"]


@pytest.mark.parametrize("config, field", [
    ({"d1_request": {"repeats": 0}}, "d1_request.repeats"),
    ({"d1_request": {"max_new_tokens": -3}}, "d1_request.max_new_tokens"),
    ({"device": "tpu"}, "device"),
    ({"dtype": "int3"}, "dtype"),
    ({"d1_request": {"warmpu": 2}}, "d1_request"),
    ({"batch": 4}, "(top level)"),
    ({"threads": 0}, "threads"),
])
def test_bad_values_name_the_field(config, field):
    with pytest.raises(ConfigError) as error:
        check_config(config)
    assert f"{field}:" in str(error.value)


def test_unknown_key_lists_the_known_ones():
    with pytest.raises(ConfigError, match="Known keys here: .*repeats"):
        check_config({"d1_request": {"repeets": 3}})


def test_unknown_profile_and_model_list_the_choices():
    with pytest.raises(ConfigError, match="Choices: default, quick"):
        check_config({"profile": "turbo", "profiles": {"quick": {}}})
    with pytest.raises(ConfigError, match="tiny-random"):
        check_config({"model": "no-such-model"})


def test_a_profile_cannot_smuggle_in_bad_values():
    with pytest.raises(ConfigError, match="d1_request.repeats"):
        check_config({"profile": "broken", "profiles": {"broken": {"d1_request": {"repeats": -1}}}})


def test_precision_resolution():
    import torch

    assert resolve_precision({"device": "cpu", "dtype": "auto"}).dtype == "float32"
    assert resolve_precision({"device": "cpu", "dtype": "bfloat16"}).torch_dtype == torch.bfloat16
    if not torch.cuda.is_available():
        assert resolve_precision({"device": "auto", "dtype": "auto"}).device == "cpu"
        with pytest.raises(ConfigError, match="device: 'cuda'.*Set device: cpu"):
            resolve_precision({"device": "cuda", "dtype": "auto"})
