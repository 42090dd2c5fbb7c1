"""The default model shipped in releases/: what the README and docs/reproduction.md promise of it."""

import json

import numpy as np
import pytest
import torch

import hpd_cli
from conftest import run_python
from hpd_inference import weights_sha256
from hpd_toolkit.training.release import check_release, example_sentences

FOLDER = hpd_cli.DEFAULT_MODEL
pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def recorded():
    """The shipped model's own `hpd eval sts` results (SentEval protocol), from its release folder."""
    files = sorted((FOLDER / "results").glob("*.json"))
    assert files, f"{FOLDER}/results holds no evaluation results"
    return json.loads(files[0].read_text())


def test_weights_are_float16_on_disk_and_float32_in_memory():
    from safetensors import safe_open
    from transformers import AutoModel

    weights = FOLDER / "model.safetensors"
    assert weights.stat().st_size <= 50 * 2**20
    with safe_open(weights, "pt") as handle:
        assert {handle.get_tensor(name).dtype for name in handle.keys()} == {torch.float16}
    model = AutoModel.from_pretrained(FOLDER, trust_remote_code=True)
    assert model.dtype == torch.float32 and model.config.projection_dim == 128
    assert model.config.num_hidden_layers == 4 and model.config.hidden_size == 384
    assert 19.0e6 < sum(p.numel() for p in model.parameters()) < 19.2e6


def test_release_checks_pass_from_the_repository():
    assert check_release(FOLDER) == []  # files, card metadata, AutoModel and SentenceTransformer in fresh processes


def test_sentence_transformers_in_a_fresh_process_matches_automodel(tmp_path):
    from transformers import AutoModel

    code = (f"import numpy as np\nfrom sentence_transformers import SentenceTransformer\n"
            f"model = SentenceTransformer({str(FOLDER)!r}, trust_remote_code=True)\n"
            f"np.save({str(tmp_path / 'st.npy')!r}, model.encode({example_sentences()!r}))")
    result = run_python(code)
    assert result.returncode == 0, result.stderr[-2000:]
    expected = AutoModel.from_pretrained(FOLDER, trust_remote_code=True).encode(example_sentences())
    np.testing.assert_allclose(np.load(tmp_path / "st.npy"), expected, atol=1e-5)


def test_recorded_results_belong_to_the_shipped_weights(recorded):
    assert recorded["model_sha256"] == weights_sha256(FOLDER)
    assert recorded["protocol"] == "senteval" and set(recorded["scores"]) >= {"STSBenchmark", "Avg"}


def test_default_model_reproduces_its_recorded_stsb_score(shared_data, recorded, tmp_path, capsys):
    output = tmp_path / "stsb.json"
    code = hpd_cli.main(["eval", "sts", "--data", str(shared_data / "senteval"), "--tasks", "STSBenchmark",
                         "--output", str(output)])  # no --model: the default
    assert code == 0, capsys.readouterr().err
    result = json.loads(output.read_text())
    assert result["model"] == str(FOLDER)
    assert result["scores"]["STSBenchmark"] == pytest.approx(recorded["scores"]["STSBenchmark"], abs=0.01)


def test_hpd_encode_uses_the_default_model(tmp_path, capsys):
    assert hpd_cli.main(["encode", "--output", str(tmp_path / "e.npy"), *example_sentences()[:2]]) == 0
    embeddings = np.load(tmp_path / "e.npy")
    assert embeddings.shape == (2, 128)
    similarity = embeddings[0] @ embeddings[1] / np.linalg.norm(embeddings, axis=1).prod()
    assert similarity > 0.5  # a guitar player and "someone playing an instrument": close for a trained model


def test_shipped_remote_code_is_the_repositorys():
    # AutoModel(trust_remote_code=True) runs the folder's copy: a change to the model code must be re-released.
    for name in ("modeling_hpd.py", "configuration_hpd.py"):
        assert (FOLDER / name).read_text() == (hpd_cli.DEFAULT_MODEL.parent.parent / name).read_text(), \
            f"{FOLDER / name} differs from the repository's {name}: rebuild the release (docs/reproduction.md)"
