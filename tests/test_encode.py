"""hpd encode: sentences in, float32 embeddings out, with the default model or any other."""

import numpy as np
import pytest
from conftest import tiny_model

import hpd_cli
from modeling_hpd import HPDModel
from hpd_models import save_hpd_folder

SENTENCES = ["A man is playing a guitar.", "", "Someone plays an instrument on a stage tonight."]


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory, tokenizer):
    folder = tmp_path_factory.mktemp("encode") / "tiny-model"
    save_hpd_folder(tiny_model(seed=3, embedding_dim=12), tokenizer, folder)
    return folder


def test_output_file_rows_follow_the_input_lines(tiny_folder, tmp_path, capsys):
    lines = tmp_path / "sentences.txt"
    lines.write_text("\n".join(SENTENCES) + "\n")
    code = hpd_cli.main(["encode", "--model", str(tiny_folder), "--input", str(lines), "--output",
                         str(tmp_path / "e.npy"), "--batch-size", "2"])
    assert code == 0, capsys.readouterr().err
    embeddings = np.load(tmp_path / "e.npy")
    assert embeddings.dtype == np.float32 and embeddings.shape == (3, 12)
    expected = HPDModel.from_pretrained(tiny_folder).encode(SENTENCES)
    np.testing.assert_allclose(embeddings, expected, atol=1e-5)


def test_printed_embeddings_and_normalize(tiny_folder, capsys):
    assert hpd_cli.main(["encode", "--model", str(tiny_folder), "--normalize", *SENTENCES[::2]]) == 0
    printed = np.array([[float(x) for x in line.split()] for line in capsys.readouterr().out.splitlines()])
    assert printed.shape == (2, 12)
    np.testing.assert_allclose(np.linalg.norm(printed, axis=1), 1, atol=1e-5)


@pytest.mark.parametrize("argv, message", [
    ([], "give the sentences either as arguments or with --input"),
    (["--input", "/no/such/file.txt"], "--input /no/such/file.txt: no such file"),
    (["   "], "no sentences to encode"),
])
def test_errors_for_bad_input(tiny_folder, capsys, argv, message):
    assert hpd_cli.main(["encode", "--model", str(tiny_folder), *argv]) == 1
    error = capsys.readouterr().err
    assert message in error and error.count("\n") == 1


def test_error_when_the_default_model_is_missing(monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(hpd_cli, "DEFAULT_MODEL", tmp_path / "releases" / "missing")
    assert hpd_cli.main(["encode", "hello"]) == 1
    error = capsys.readouterr().err
    assert "the default model" in error and "missing" in error and "pass --model" in error


def test_long_inputs_are_encoded_and_written_in_chunks(tiny_folder, tmp_path, capsys, monkeypatch):
    """Memory stays flat: no call sees more than ENCODE_CHUNK sentences, and the rows land where they belong."""
    import hpd_models

    sentences = [f"the dog runs {'far ' * (i % 7)}number {i}." for i in range(23)]
    (tmp_path / "in.txt").write_text("\n".join(sentences) + "\n")
    calls = []
    real = hpd_models.encode_by_length
    monkeypatch.setattr(hpd_models, "encode_by_length", lambda encoder, chunk, **kw: calls.append(len(chunk))
                        or real(encoder, chunk, **kw))
    monkeypatch.setattr(hpd_cli, "ENCODE_CHUNK", 5)
    for output in ("e.npy", None):
        code = hpd_cli.main(["encode", "--model", str(tiny_folder), "--input", str(tmp_path / "in.txt"),
                             *(["--output", str(tmp_path / output)] if output else [])])
        assert code == 0
    assert calls == [5, 5, 5, 5, 3] * 2
    expected = HPDModel.from_pretrained(tiny_folder).encode(sentences)
    np.testing.assert_allclose(np.load(tmp_path / "e.npy"), expected, atol=1e-5)
    printed = np.array([[float(x) for x in line.split()] for line in capsys.readouterr().out.splitlines()])
    np.testing.assert_allclose(printed, expected, atol=1e-5)
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temporary file left


def test_encode_returns_the_pooled_output_the_head_reads(tiny_folder, tokenizer):
    import torch

    model = HPDModel.from_pretrained(tiny_folder)
    pooled = model.encode(SENTENCES, tokenizer, batch_size=2, output_value="pooled_embedding")
    features = tokenizer(SENTENCES, padding=True, return_tensors="pt")
    with torch.no_grad():
        expected = model(**features).pooled_embedding.numpy()
    assert pooled.shape == (3, model.config.hidden_size)
    np.testing.assert_allclose(pooled, expected, atol=1e-5)
    with pytest.raises(ValueError, match="output_value must be 'sentence_embedding' or 'pooled_embedding'"):
        model.encode(SENTENCES, tokenizer, output_value="token_embeddings")
