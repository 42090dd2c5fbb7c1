import json

import numpy as np
import pytest
import torch

from conftest import SENTENCES, tiny_model
from modeling_hpd import HPDModel, pool


def test_pooling_modes_ignore_padding():
    states = torch.tensor([[[1.0, -2.0], [3.0, 4.0], [100.0, 100.0]]])  # the last token is padding
    mask = torch.tensor([[1, 1, 0]])
    assert torch.equal(pool(states, mask, "mean"), torch.tensor([[2.0, 1.0]]))
    assert torch.equal(pool(states, mask, "max"), torch.tensor([[3.0, 4.0]]))
    assert torch.equal(pool(states, mask, "cls"), torch.tensor([[1.0, -2.0]]))
    # max over a padded position that is smaller than every real value still must not win
    negative = torch.tensor([[[-5.0], [-7.0], [0.0]]])
    assert pool(negative, mask, "max").item() == -5.0


@pytest.mark.parametrize("pooling", ["mean", "cls", "max"])
def test_padding_does_not_change_a_sentence_embedding(tokenizer, pooling):
    model = tiny_model(pooling=pooling)
    short, long = SENTENCES[2], SENTENCES[3]
    alone = model(**tokenizer([short], return_tensors="pt")).sentence_embedding
    batch = model(**tokenizer([short, long], padding=True, return_tensors="pt"))
    assert torch.allclose(alone[0], batch.sentence_embedding[0], atol=1e-6)


def test_forward_returns_embedding_pooled_vector_and_token_states(tokenizer):
    model = tiny_model()
    features = tokenizer(SENTENCES[:2], padding=True, return_tensors="pt")
    out = model(**features)
    assert out.sentence_embedding.shape == (2, 16)
    assert out.pooled_embedding.shape == (2, 32)
    assert out.last_hidden_state.shape == (2, features["input_ids"].shape[1], 32)
    expected = torch.tanh(model.projection(pool(out.last_hidden_state, features["attention_mask"], "mean")))
    assert torch.allclose(out.sentence_embedding, expected, atol=1e-6)
    as_tuple = model(**features, return_dict=False)
    assert isinstance(as_tuple, tuple) and torch.equal(as_tuple[0], out.sentence_embedding)
    assert model(**features, return_dict=True).sentence_embedding is not None


def test_head_options(tokenizer):
    features = tokenizer(SENTENCES[:3], padding=True, return_tensors="pt")
    plain = tiny_model(embedding_dim=None)
    out = plain(**features)
    assert plain.projection is None and torch.equal(out.sentence_embedding, out.pooled_embedding)

    identity = tiny_model(projection_activation="identity", projection_bias=False)
    out = identity(**features)
    assert identity.projection.bias is None
    assert torch.allclose(out.sentence_embedding, identity.projection(out.pooled_embedding), atol=1e-6)

    normalized = tiny_model(normalize=True)(**features).sentence_embedding
    assert torch.allclose(normalized.norm(dim=-1), torch.ones(3), atol=1e-6)


def test_sdpa_attention_is_on_by_default():
    assert tiny_model().config._attn_implementation == "sdpa"


def test_encode_restores_input_order_and_matches_one_by_one(tokenizer):
    model = tiny_model()
    batched = model.encode(SENTENCES, tokenizer=tokenizer, batch_size=2)
    one_by_one = np.stack([model.encode(s, tokenizer=tokenizer) for s in SENTENCES])
    assert batched.shape == (len(SENTENCES), 16) and batched.dtype == np.float32
    np.testing.assert_allclose(batched, one_by_one, atol=1e-6)

    tensor = model.encode(SENTENCES, tokenizer=tokenizer, convert_to_numpy=False, normalize_embeddings=True)
    assert isinstance(tensor, torch.Tensor)
    assert torch.allclose(tensor.norm(dim=-1), torch.ones(len(SENTENCES)), atol=1e-6)
    assert not tensor.requires_grad


def test_encode_truncates_at_max_seq_length(tokenizer):
    model = tiny_model(max_seq_length=8)
    long = SENTENCES[3]
    truncated = tokenizer(long, truncation=True, max_length=8, return_tensors="pt")
    expected = model(**truncated).sentence_embedding[0].detach().numpy()
    np.testing.assert_allclose(model.encode(long, tokenizer=tokenizer), expected, atol=1e-6)


def test_encode_without_a_tokenizer_needs_a_saved_model():
    with pytest.raises(ValueError, match="pass tokenizer="):
        tiny_model().encode(["hello"])


def test_save_and_load_round_trip(tmp_path, tokenizer):
    model = tiny_model(pooling="max", embedding_dim=8)
    model.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    files = {p.name for p in tmp_path.iterdir()}
    assert {"model.safetensors", "configuration_hpd.py", "modeling_hpd.py", "config.json"} <= files
    assert "pytorch_model.bin" not in files
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["auto_map"] == {"AutoConfig": "configuration_hpd.HPDConfig", "AutoModel": "modeling_hpd.HPDModel"}

    loaded = HPDModel.from_pretrained(tmp_path)
    assert loaded.config.pooling == "max" and loaded.config.embedding_dim == 8
    # encode() finds the tokenizer saved beside the weights
    np.testing.assert_array_equal(loaded.encode(SENTENCES), model.encode(SENTENCES, tokenizer=tokenizer))
