"""The real all-MiniLM-L6-v2 (registry package) converted to HPD gives sentence-transformers' embeddings."""

import numpy as np
import pytest
from sentence_transformers import SentenceTransformer

from conftest import run_python
from hpd_toolkit.training.convert import convert

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def real_sentences(shared_data):
    lines = (shared_data / "sts-raw" / "STSBenchmark" / "sts-test.csv").read_text(encoding="utf-8").splitlines()
    sentences = [line.split("\t")[5] for line in lines[:25]] + [line.split("\t")[6] for line in lines[:25]]
    assert len(sentences) == 50
    return sentences


def test_converted_minilm_matches_sentence_transformers(minilm_path, real_sentences, tmp_path):
    reference = SentenceTransformer(minilm_path, device="cpu").encode(real_sentences)
    out = convert(minilm_path, tmp_path / "minilm-hpd")

    code = (
        "import numpy as np\nfrom transformers import AutoModel\n"
        f"model = AutoModel.from_pretrained({str(out)!r}, trust_remote_code=True)\n"
        f"np.save({str(tmp_path / 'emb.npy')!r}, model.encode({real_sentences!r}))"
    )
    result = run_python(code, env={"HF_HOME": str(tmp_path / "hf-home")})
    assert result.returncode == 0, result.stderr[-3000:]
    embeddings = np.load(tmp_path / "emb.npy")
    assert embeddings.shape == (50, 384)
    assert np.abs(embeddings - reference).max() <= 1e-5

    back = convert(str(out), tmp_path / "minilm-st", to="sentence-transformers")
    assert np.abs(SentenceTransformer(str(back), device="cpu").encode(real_sentences) - reference).max() <= 1e-5
