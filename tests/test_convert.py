"""Converters between sentence-transformers folders (2022 and current layouts) and HPD folders."""

import json

import numpy as np
import pytest
import torch
from sentence_transformers import SentenceTransformer
from torch import nn
from transformers import BertConfig, BertModel

import hpd_cli
from conftest import SENTENCES, VOCAB, run_python, tiny_model
from modeling_hpd import HPDModel, pool
from hpd_toolkit.training.convert import convert
from hpd_models import load_hpd, save_hpd_folder

HIDDEN, DIM = 32, 16


def tiny_bert(seed=1):
    torch.manual_seed(seed)
    config = BertConfig(vocab_size=len(VOCAB), hidden_size=HIDDEN, num_hidden_layers=2, num_attention_heads=4,
                        intermediate_size=64, max_position_embeddings=64)
    return BertModel(config).eval()  # with the BERT pooler, as 2022 checkpoints have


def write_2022_folder(folder, bert, dense, tokenizer):
    """The layout of the published HPD checkpoints: sub-folders, pytorch_model.bin, pooling_mode_* keys."""
    transformer_dir = folder / "0_Transformer"
    transformer_dir.mkdir(parents=True)
    bert.config.to_json_file(transformer_dir / "config.json")
    torch.save(bert.state_dict(), transformer_dir / "pytorch_model.bin")
    (transformer_dir / "vocab.txt").write_text("\n".join(VOCAB))
    (transformer_dir / "tokenizer_config.json").write_text(
        json.dumps({"do_lower_case": True, "tokenizer_class": "BertTokenizer", "model_max_length": 512}))
    (transformer_dir / "special_tokens_map.json").write_text(json.dumps(
        {"unk_token": "[UNK]", "sep_token": "[SEP]", "pad_token": "[PAD]", "cls_token": "[CLS]", "mask_token": "[MASK]"}))
    (transformer_dir / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": 40, "do_lower_case": False}))
    (folder / "1_Pooling").mkdir()
    (folder / "1_Pooling" / "config.json").write_text(json.dumps({
        "word_embedding_dimension": HIDDEN, "pooling_mode_cls_token": False, "pooling_mode_mean_tokens": True,
        "pooling_mode_max_tokens": False, "pooling_mode_mean_sqrt_len_tokens": False}))
    (folder / "2_Dense").mkdir()
    (folder / "2_Dense" / "config.json").write_text(json.dumps({
        "in_features": HIDDEN, "out_features": DIM, "bias": True,
        "activation_function": "torch.nn.modules.activation.Tanh"}))
    torch.save({f"linear.{k}": v for k, v in dense.state_dict().items()}, folder / "2_Dense" / "pytorch_model.bin")
    modules = [("0_Transformer", "Transformer"), ("1_Pooling", "Pooling"), ("2_Dense", "Dense")]
    (folder / "modules.json").write_text(json.dumps([
        {"idx": i, "name": str(i), "path": path, "type": f"sentence_transformers.models.{kind}"}
        for i, (path, kind) in enumerate(modules)]))
    (folder / "config_sentence_transformers.json").write_text(
        json.dumps({"__version__": {"sentence_transformers": "2.1.0", "transformers": "4.16.2", "pytorch": "1.10.0"}}))
    return folder


@pytest.fixture
def folder_2022(tmp_path, tokenizer):
    torch.manual_seed(2)
    bert, dense = tiny_bert(), nn.Linear(HIDDEN, DIM)
    folder = write_2022_folder(tmp_path / "hpd-2022", bert, dense, tokenizer)
    with torch.no_grad():  # the published recipe, computed by hand one sentence at a time
        expected = []
        for sentence in SENTENCES:
            features = tokenizer(sentence, truncation=True, max_length=40, return_tensors="pt")
            states = bert(**features).last_hidden_state
            expected.append(torch.tanh(dense(pool(states, features["attention_mask"], "mean")))[0])
    return folder, torch.stack(expected).numpy()


def test_2022_layout_converts_exactly(folder_2022, tmp_path):
    folder, expected = folder_2022
    np.testing.assert_allclose(SentenceTransformer(str(folder)).encode(SENTENCES), expected, atol=1e-6)

    out = convert(str(folder), tmp_path / "hpd")
    model = HPDModel.from_pretrained(out)
    config = model.config
    assert (config.pooling, config.embedding_dim, config.projection_activation, config.normalize) == ("mean", DIM, "tanh", False)
    assert config.max_seq_length == 40
    assert np.abs(model.encode(SENTENCES) - expected).max() <= 1e-6
    assert (out / "model.safetensors").is_file() and not (out / "pytorch_model.bin").exists()


@pytest.mark.parametrize("pooling", ["mean", "cls", "max"])
@pytest.mark.parametrize("dense, normalize", [(False, False), (True, False), (False, True), (True, True)])
def test_current_layout_with_and_without_dense_and_normalize(tmp_path, tokenizer, pooling, dense, normalize):
    from sentence_transformers.sentence_transformer.modules import Dense, Normalize, Pooling, Transformer

    bert_dir = tmp_path / "bert"
    tiny_bert().save_pretrained(bert_dir)
    tokenizer.save_pretrained(bert_dir)
    modules = [Transformer(str(bert_dir)), Pooling(HIDDEN, pooling_mode=pooling)]
    if dense:
        modules.append(Dense(HIDDEN, DIM, activation_function=nn.Identity(), bias=False))
    if normalize:
        modules.append(Normalize())
    source = SentenceTransformer(modules=modules)
    source.save(str(tmp_path / "st"))
    expected = source.encode(SENTENCES)

    model, _ = load_hpd(str(tmp_path / "st"))
    config = model.config
    assert config.pooling == pooling and config.normalize == normalize
    assert config.embedding_dim == (DIM if dense else None)
    if dense:
        assert config.projection_activation == "identity" and config.projection_bias is False
    out = convert(str(tmp_path / "st"), tmp_path / "hpd")
    assert np.abs(HPDModel.from_pretrained(out).encode(SENTENCES) - expected).max() <= 1e-6


def test_hpd_converts_back_to_a_classic_sentence_transformers_stack(tmp_path, tokenizer):
    model = tiny_model(seed=5, pooling="max", normalize=True)
    save_hpd_folder(model, tokenizer, tmp_path / "hpd")
    expected = model.encode(SENTENCES, tokenizer=tokenizer)

    out = convert(str(tmp_path / "hpd"), tmp_path / "st", to="sentence-transformers")
    kinds = [m["type"].rsplit(".", 1)[-1] for m in json.loads((out / "modules.json").read_text())]
    assert kinds == ["Transformer", "Pooling", "Dense", "Normalize"]
    assert json.loads((out / "config.json").read_text())["model_type"] == "bert"  # no remote code needed
    assert np.abs(SentenceTransformer(str(out)).encode(SENTENCES) - expected).max() <= 1e-6
    # and the round trip back to HPD is exact too
    again = convert(str(out), tmp_path / "hpd-again")
    assert np.abs(HPDModel.from_pretrained(again).encode(SENTENCES) - expected).max() <= 1e-6


# --- bad input: one clear line from the command, never a traceback -------------------------------

def run_convert(capsys, source, out):
    code = hpd_cli.main(["convert", str(source), str(out)])
    err = capsys.readouterr().err.strip()
    return code, err


def edit_json(path, **changes):
    data = json.loads(path.read_text())
    data.update(changes)
    path.write_text(json.dumps(data))


def test_error_for_a_folder_that_is_no_model(tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("hello")
    code, err = run_convert(capsys, tmp_path, tmp_path / "out")
    assert code == 1 and len(err.splitlines()) == 1
    assert "neither an HPD folder" in err and "sentence-transformers" in err


def test_error_for_a_missing_path(tmp_path, capsys):
    code, err = run_convert(capsys, tmp_path / "nowhere", tmp_path / "out")
    assert code == 1 and "no such model folder" in err


@pytest.mark.parametrize("missing", ["0_Transformer/pytorch_model.bin", "2_Dense/pytorch_model.bin"])
def test_error_for_missing_weights(folder_2022, tmp_path, capsys, missing):
    folder, _ = folder_2022
    (folder / missing).unlink()
    code, err = run_convert(capsys, folder, tmp_path / "out")
    assert code == 1 and len(err.splitlines()) == 1
    assert "no weights file" in err and missing.split("/")[0] in err


def test_error_for_an_hpd_folder_without_weights(tmp_path, tokenizer, capsys):
    save_hpd_folder(tiny_model(), tokenizer, tmp_path / "hpd")
    (tmp_path / "hpd" / "model.safetensors").unlink()
    code, err = run_convert(capsys, tmp_path / "hpd", tmp_path / "out")
    assert code == 1 and "no weights file for the HPD model" in err


def test_error_for_an_encoder_that_is_not_bert(folder_2022, tmp_path, capsys):
    folder, _ = folder_2022
    edit_json(folder / "0_Transformer" / "config.json", model_type="mpnet")
    code, err = run_convert(capsys, folder, tmp_path / "out")
    assert code == 1 and "model_type 'mpnet'" in err and "BERT-family" in err


def test_error_for_a_dense_that_belongs_to_another_encoder(folder_2022, tmp_path, capsys):
    folder, _ = folder_2022
    edit_json(folder / "2_Dense" / "config.json", in_features=48)
    code, err = run_convert(capsys, folder, tmp_path / "out")
    assert code == 1 and "in_features is 48" in err and "hidden size is 32" in err


@pytest.mark.parametrize("mode, message", [("weightedmean", "'weightedmean' is not supported"), ("sum", "'sum'")])
def test_error_for_a_pooling_mode_hpd_does_not_have(folder_2022, tmp_path, capsys, mode, message):
    folder, _ = folder_2022
    (folder / "1_Pooling" / "config.json").write_text(json.dumps({"embedding_dimension": HIDDEN, "pooling_mode": mode}))
    code, err = run_convert(capsys, folder, tmp_path / "out")
    assert code == 1 and len(err.splitlines()) == 1 and message in err and str(folder) in err


def test_error_for_a_module_hpd_does_not_have(folder_2022, tmp_path, capsys):
    folder, _ = folder_2022
    modules = json.loads((folder / "modules.json").read_text())
    (folder / "3_Dropout").mkdir()
    (folder / "3_Dropout" / "config.json").write_text(json.dumps({"dropout": 0.1}))
    modules.append({"idx": 3, "name": "3", "path": "3_Dropout", "type": "sentence_transformers.models.Dropout"})
    (folder / "modules.json").write_text(json.dumps(modules))
    code, err = run_convert(capsys, folder, tmp_path / "out")
    assert code == 1 and "Dropout" in err and "do not fit HPD" in err


def test_the_installed_command_prints_one_line_not_a_traceback(tmp_path):
    result = run_python(f"import sys, hpd_cli; sys.exit(hpd_cli.main(['convert', {str(tmp_path)!r}, {str(tmp_path / 'o')!r}]))")
    assert result.returncode == 1
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1
