"""One saved HPD folder loads three ways, each in a fresh offline process, with identical embeddings."""

import json

import numpy as np
import pytest

from conftest import SENTENCES, run_python, tiny_model
from hpd_models import save_hpd_folder

LOADERS = {
    "AutoModel": "from transformers import AutoModel\n"
    "model = AutoModel.from_pretrained(folder, trust_remote_code=True)\n"
    "assert type(model).__module__.startswith('transformers_modules'), type(model)\n"
    "emb = model.encode(sentences)",
    "SentenceTransformer": "from sentence_transformers import SentenceTransformer\n"
    "model = SentenceTransformer(folder, trust_remote_code=True)\n"
    "assert model.get_embedding_dimension() == DIM, model.get_embedding_dimension()\n"
    "emb = model.encode(sentences)",
    "HPDModel": "from modeling_hpd import HPDModel\n"
    "emb = HPDModel.from_pretrained(folder).encode(sentences)",
}


@pytest.fixture(scope="module")
def hpd_folder(tmp_path_factory, tokenizer):
    folder = tmp_path_factory.mktemp("hpd")
    model = tiny_model(seed=3, pooling="mean", embedding_dim=12, max_seq_length=32)
    save_hpd_folder(model, tokenizer, folder)
    np.save(folder / "expected.npy", model.encode(SENTENCES, tokenizer=tokenizer))
    return folder


def test_folder_has_model_tokenizer_and_sentence_transformers_files(hpd_folder):
    files = {p.name for p in hpd_folder.iterdir()}
    assert {"config.json", "model.safetensors", "configuration_hpd.py", "modeling_hpd.py", "tokenizer.json",
            "tokenizer_config.json", "modules.json", "sentence_bert_config.json"} <= files
    modules = json.loads((hpd_folder / "modules.json").read_text())
    assert len(modules) == 1 and modules[0]["type"].endswith("Transformer") and modules[0]["path"] == ""
    st_config = json.loads((hpd_folder / "sentence_bert_config.json").read_text())
    assert st_config["module_output_name"] == "sentence_embedding"
    assert json.loads((hpd_folder / "tokenizer_config.json").read_text())["model_max_length"] == 32


@pytest.mark.parametrize("loader", LOADERS)
def test_three_loaders_give_identical_embeddings(hpd_folder, tmp_path, loader):
    out = tmp_path / "emb.npy"
    code = (f"import numpy as np\nfolder = {str(hpd_folder)!r}\nsentences = {SENTENCES!r}\nDIM = 12\n"
            f"{LOADERS[loader]}\nnp.save({str(out)!r}, np.asarray(emb))")
    result = run_python(code, env={"HF_HOME": str(tmp_path / "hf-home")})
    assert result.returncode == 0, result.stderr[-3000:]
    embeddings = np.load(out)
    assert embeddings.shape == (len(SENTENCES), 12)
    assert np.abs(embeddings - np.load(hpd_folder / "expected.npy")).max() <= 1e-6


def test_tokenizer_loads_with_auto_tokenizer(hpd_folder, tokenizer, tmp_path):
    code = ("from transformers import AutoTokenizer\n"
            f"tok = AutoTokenizer.from_pretrained({str(hpd_folder)!r}, trust_remote_code=True)\n"
            f"print(tok({SENTENCES[0]!r})['input_ids'])")
    result = run_python(code, env={"HF_HOME": str(tmp_path / "hf-home")})
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip() == str(tokenizer(SENTENCES[0])["input_ids"])
