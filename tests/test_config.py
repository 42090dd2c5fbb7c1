import json

import pytest

from configuration_hpd import HPDConfig
from modeling_hpd import HPDModel


def test_defaults_are_the_published_hpd_head():
    config = HPDConfig()
    assert (config.pooling, config.embedding_dim, config.projection_activation) == ("mean", 128, "tanh")
    assert config.projection_bias is True and config.normalize is False
    assert config.max_seq_length == config.max_position_embeddings
    assert config.projection_dim == 128


def test_projection_dim_without_projection_is_the_hidden_size():
    assert HPDConfig(hidden_size=48, num_attention_heads=4, embedding_dim=None).projection_dim == 48


@pytest.mark.parametrize(
    "field, value, allowed",
    [
        ("pooling", "sum", "mean, cls, max"),
        ("pooling", "MEAN", "mean, cls, max"),
        ("embedding_dim", 0, "positive integer or None"),
        ("embedding_dim", "128", "positive integer or None"),
        ("embedding_dim", True, "positive integer or None"),
        ("projection_activation", "relu", "tanh, identity"),
        ("projection_bias", "yes", "true or false"),
        ("normalize", 1, "true or false"),
        ("max_seq_length", 0, "from 1 to max_position_embeddings"),
        ("max_seq_length", 513, "from 1 to max_position_embeddings (512)"),
        ("matryoshka_dims", [64, 128], "distinct positive integers, largest first"),
        ("matryoshka_dims", [128, 64, 64], "distinct positive integers, largest first"),
        ("matryoshka_dims", [256, 128], "none above the embedding size 128"),
        ("matryoshka_dims", [128, 0], "distinct positive integers"),
        ("matryoshka_dims", [], "distinct positive integers"),
        ("matryoshka_dims", "128,64", "distinct positive integers"),
    ],
)
def test_invalid_head_values_name_the_field_and_what_is_allowed(field, value, allowed):
    with pytest.raises(ValueError) as error:
        HPDConfig(**{field: value})
    assert f"HPDConfig.{field}" in str(error.value) and allowed in str(error.value)


def test_config_round_trip_keeps_every_head_field(tmp_path):
    config = HPDConfig(pooling="max", embedding_dim=64, projection_activation="identity", projection_bias=False,
                       normalize=True, max_seq_length=77)
    config.save_pretrained(tmp_path)
    loaded = HPDConfig.from_pretrained(tmp_path)
    for field in ("pooling", "embedding_dim", "projection_activation", "projection_bias", "normalize", "max_seq_length"):
        assert getattr(loaded, field) == getattr(config, field)


def test_matryoshka_dims_are_recorded_and_configs_without_them_still_load(tmp_path):
    HPDConfig(embedding_dim=64, matryoshka_dims=(64, 32, 16)).save_pretrained(tmp_path / "matryoshka")
    assert json.loads((tmp_path / "matryoshka" / "config.json").read_text())["matryoshka_dims"] == [64, 32, 16]
    assert HPDConfig.from_pretrained(tmp_path / "matryoshka").matryoshka_dims == [64, 32, 16]

    HPDConfig(embedding_dim=64).save_pretrained(tmp_path / "plain")
    assert json.loads((tmp_path / "plain" / "config.json").read_text())["matryoshka_dims"] is None
    # a config.json written before the key existed still loads, as a model trained for its full size only
    legacy = json.loads((tmp_path / "plain" / "config.json").read_text())
    del legacy["matryoshka_dims"]
    (tmp_path / "plain" / "config.json").write_text(json.dumps(legacy))
    assert HPDConfig.from_pretrained(tmp_path / "plain").matryoshka_dims is None


def test_tinybert_shaped_model_has_the_published_parameter_count():
    # HPD-TinyBERT-F128: 4 layers, hidden 312, 12 heads, intermediate 1200, 128-d head, no BERT pooler.
    config = HPDConfig(vocab_size=30522, hidden_size=312, num_hidden_layers=4, num_attention_heads=12,
                       intermediate_size=1200)
    assert sum(p.numel() for p in HPDModel(config).parameters()) == 14_292_656
