"""Every command walked through the classes of bad input of issue 11: what a hostile-but-realistic user tries.

Rules: never delete or overwrite what the toolkit did not write; never report a wrong result as success;
never run code nobody trusted; one line naming the problem and the fix instead of a traceback.
"""

import ast
import json
import os
import random
import sys

import numpy as np
import pytest
import torch
from conftest import REPO, SENTENCES, VOCAB, run_python, tiny_model
from safetensors.torch import load_file, save_file
from test_eval_mteb import _write_raw_sts
from test_eval_sts import FixedCosineEncoder, write_year

import hpd_cli
from hpd_toolkit.eval.sts import write_results
from modeling_hpd import HPDModel
from hpd_models import save_hpd_folder
from hpd_toolkit.training.output_dir import MARKER, check_target, replace_folder


def hpd(capsys, *args):
    """(exit code, stderr) of `hpd ARGS`; a failure must be exactly one line."""
    code = hpd_cli.main([str(arg) for arg in args])
    err = capsys.readouterr().err.strip()
    if code != 0:
        assert len(err.splitlines()) == 1, err
    return code, err


@pytest.fixture
def model(tmp_path, tokenizer):
    folder = tmp_path / "model"
    save_hpd_folder(tiny_model(seed=3, embedding_dim=12), tokenizer, folder)
    return folder


def edit_json(path, **changes):
    path.write_text(json.dumps({**json.loads(path.read_text()), **changes}))


def sentinel_code(sentinel):
    """Python that leaves a file behind when it runs: proof that code ran."""
    return f"import pathlib\npathlib.Path({str(sentinel)!r}).write_text('ran')\n"


# --- output folders: never delete or overwrite what hpd did not write ---------------------------------

def test_check_target_refuses_what_it_must_not_replace(tmp_path):
    source = tmp_path / "source"
    (source / "sub").mkdir(parents=True)
    for target, message in ((source, "is the source"), (source / "sub", "inside the source"),
                            (tmp_path, "is inside")):
        with pytest.raises(ValueError, match=message):
            check_target(target, sources=[source])
    (tmp_path / "file").write_text("x")
    with pytest.raises(ValueError, match="is a file"):
        check_target(tmp_path / "file")
    (tmp_path / "foreign").mkdir()
    (tmp_path / "foreign" / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match="not empty and was not written by hpd; choose another folder or pass "
                                         "--overwrite"):
        check_target(tmp_path / "foreign")
    check_target(tmp_path / "foreign", overwrite=True)
    check_target(tmp_path / "missing")
    (tmp_path / "ours").mkdir()
    (tmp_path / "ours" / MARKER).write_text("")
    (tmp_path / "ours" / "model.safetensors").write_text("")
    check_target(tmp_path / "ours")  # our own earlier output may be replaced


def test_check_target_refuses_the_current_directory(tmp_path, monkeypatch):
    (tmp_path / "work").mkdir()
    monkeypatch.chdir(tmp_path / "work")
    for target in (".", tmp_path):
        with pytest.raises(ValueError, match="holds the current directory"):
            check_target(target, overwrite=True)


def test_replace_folder_swaps_in_a_complete_folder_or_leaves_the_old_one(tmp_path):
    target = tmp_path / "out"
    with replace_folder(target) as scratch:
        assert scratch.parent == tmp_path and scratch.name.startswith(".") and scratch != target
        (scratch / "a.txt").write_text("first")
    assert (target / MARKER).is_file() and (target / "a.txt").read_text() == "first"

    with pytest.raises(KeyboardInterrupt), replace_folder(target) as scratch:
        (scratch / "a.txt").write_text("half-done")
        raise KeyboardInterrupt
    assert (target / "a.txt").read_text() == "first"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # no temporary folder left behind

    with replace_folder(target) as scratch:  # marked as ours: replaced without --overwrite
        (scratch / "b.txt").write_text("second")
    assert sorted(p.name for p in target.iterdir()) == [MARKER, "b.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_release_into_its_own_source_is_refused_and_the_source_kept(model, tmp_path, capsys):
    before = {p.name: p.read_bytes() for p in model.iterdir()}
    for out in (model, model / "release"):
        code, err = hpd(capsys, "release", model, "--out", out, "--repo-id", "org/x", "--overwrite")
        assert code == 1 and "source" in err and "choose an output folder outside it" in err
    assert {p.name: p.read_bytes() for p in model.iterdir()} == before


def test_release_keeps_a_foreign_folder_that_merely_holds_modeling_hpd(model, tmp_path, capsys):
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "modeling_hpd.py").write_text("# my own edits")
    (precious / "notes.md").write_text("years of work")
    code, err = hpd(capsys, "release", model, "--out", precious, "--repo-id", "org/x")
    assert code == 1 and "is not empty and was not written by hpd" in err and "--overwrite" in err
    assert (precious / "notes.md").read_text() == "years of work"


def test_convert_into_a_non_empty_folder_needs_overwrite(model, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "README.md").write_text("my notes")
    code, err = hpd(capsys, "convert", model, out)
    assert code == 1 and "is not empty and was not written by hpd" in err
    assert sorted(p.name for p in out.iterdir()) == ["README.md"] and (out / "README.md").read_text() == "my notes"

    assert hpd(capsys, "convert", model, out, "--overwrite")[0] == 0
    assert (out / MARKER).is_file() and not (out / "README.md").exists()
    assert hpd(capsys, "convert", model, out, "--to", "sentence-transformers")[0] == 0  # ours: replaced freely
    assert [m["type"].rsplit(".", 1)[-1] for m in json.loads((out / "modules.json").read_text())] == [
        "Transformer", "Pooling", "Dense"]


def test_convert_into_its_source_is_refused(model, capsys):
    code, err = hpd(capsys, "convert", model, model / "converted", "--overwrite")
    assert code == 1 and "inside the source" in err and not (model / "converted").exists()


# --- wrong results are errors, not successes --------------------------------------------------------

def test_weights_that_do_not_fit_the_config_are_an_error_everywhere(model, tmp_path, capsys):
    edit_json(model / "config.json", num_hidden_layers=4)  # the weights hold 2 layers
    with pytest.raises(ValueError, match=r"the weights do not match config.json \(missing keys: bert.encoder.layer.2"):
        HPDModel.from_pretrained(model)
    write_year(tmp_path / "data", "STS12", {}, FixedCosineEncoder())
    for args in (("encode", "--model", model, "a cat"), ("convert", model, tmp_path / "out"),
                 ("release", model, "--out", tmp_path / "release", "--repo-id", "org/x"),
                 ("eval", "sts", "--model", model, "--data", tmp_path / "data", "--tasks", "STS12")):
        code, err = hpd(capsys, *args)
        assert code == 1 and str(model) in err and "missing keys: bert.encoder.layer.2" in err, args
    assert not (tmp_path / "out").exists() and not (tmp_path / "release").exists()


def test_unexpected_weights_are_an_error(model):
    weights = load_file(model / "model.safetensors")
    save_file({**weights, "extra.weight": torch.zeros(2)}, model / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(ValueError, match="unexpected keys: extra.weight"):
        HPDModel.from_pretrained(model)


def test_release_check_finds_weights_that_do_not_fit_the_config(model, tmp_path, capsys):
    assert hpd(capsys, "release", model, "--out", tmp_path / "release", "--repo-id", "org/x")[0] == 0
    edit_json(tmp_path / "release" / "config.json", num_hidden_layers=3)
    code, err = hpd(capsys, "release", "--check", tmp_path / "release")
    assert code == 1 and "is not fit to push" in err and "missing keys: bert.encoder.layer.2" in err


def test_nan_weights_make_encode_raise(model):
    loaded = HPDModel.from_pretrained(model)
    with torch.no_grad():
        loaded.projection.bias[0] = float("nan")
    with pytest.raises(ValueError, match="NaN or infinite embeddings"):
        loaded.encode(SENTENCES)


@pytest.mark.parametrize("gold", ["nan", "7", "-0.5", "inf"])
def test_eval_sts_refuses_gold_scores_that_are_nan_or_outside_0_to_5(model, tmp_path, capsys, gold):
    write_year(tmp_path / "data", "STS12", {"MSRvid": [(0.2, "1"), (0.4, gold), (0.6, "3")]}, FixedCosineEncoder())
    output = tmp_path / "results.json"
    code, err = hpd(capsys, "eval", "sts", "--model", model, "--data", tmp_path / "data", "--tasks", "STS12",
                    "--output", output)
    assert code == 1 and "STS.gs.MSRvid.txt:2: gold score" in err and "from 0 to 5" in err
    assert not output.exists()


def test_eval_mteb_refuses_nan_gold_scores_and_writes_nothing(model, tmp_path, capsys):
    _write_raw_sts(tmp_path / "sts-raw", random.Random(0))
    path = tmp_path / "sts-raw" / "STSBenchmark" / "sts-test.csv"
    lines = path.read_text().splitlines()
    columns = lines[4].split("\t")
    lines[4] = "\t".join([*columns[:4], "nan", *columns[5:]])
    path.write_text("\n".join(lines) + "\n")
    code, err = hpd(capsys, "eval", "mteb", "--model", model, "--tasks", "STSBenchmark", "--data",
                    tmp_path / "sts-raw", "--output-folder", tmp_path / "mteb")
    assert code == 1 and "sts-test.csv:5: gold score 'nan'" in err
    assert not (tmp_path / "mteb").exists()


@pytest.mark.parametrize("weights, message", [
    ({"projection.bias": float("nan")}, "produced NaN or infinite embeddings"),
    ({"projection.weight": 0.0}, "mteb scored STS12 as NaN or infinite"),  # one vector for every sentence
])
def test_eval_mteb_writes_no_result_files_with_nan(model, tmp_path, capsys, weights, message):
    tensors = load_file(model / "model.safetensors")
    for name, value in weights.items():
        tensors[name][:] = value
    save_file(tensors, model / "model.safetensors", metadata={"format": "pt"})
    _write_raw_sts(tmp_path / "sts-raw", random.Random(0))
    code = hpd_cli.main(["eval", "mteb", "--model", str(model), "--tasks", "STS12", "--data", str(tmp_path / "sts-raw"),
                         "--output-folder", str(tmp_path / "mteb")])
    err = capsys.readouterr().err.strip().splitlines()  # mteb's progress bars come first
    assert code == 1 and message in err[-1] and err[-1].startswith("hpd eval: error:")
    assert not [p for p in tmp_path.joinpath("mteb").rglob("*") if p.is_file()]


def test_results_json_never_holds_nan(tmp_path):
    with pytest.raises(ValueError, match="NaN or infinite"):
        write_results({"scores": {"STS12": float("nan")}}, tmp_path / "r.json")
    assert not (tmp_path / "r.json").exists()


def test_encode_output_writes_the_path_it_reports(model, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code = hpd_cli.main(["encode", "--model", str(model), "--output", "emb_out", "a dog"])
    err = capsys.readouterr().err
    assert code == 0 and "Wrote emb_out.npy: 1 x 12" in err and np.load(tmp_path / "emb_out.npy").shape == (1, 12)
    assert not (tmp_path / "emb_out").exists()


# --- no code runs without consent ----------------------------------------------------------------------

def test_encode_does_not_run_a_tokenizer_auto_map(model, tmp_path):
    sentinel = tmp_path / "tokenizer-code-ran"
    (model / "evil_tokenizer.py").write_text(sentinel_code(sentinel) + "from transformers import BertTokenizer\n"
                                             "class EvilTokenizer(BertTokenizer):\n    pass\n")
    edit_json(model / "tokenizer_config.json", auto_map={"AutoTokenizer": [None, "evil_tokenizer.EvilTokenizer"]})
    embeddings = HPDModel.from_pretrained(model).encode(SENTENCES)
    assert embeddings.shape == (len(SENTENCES), 12) and not sentinel.exists()


def test_the_cli_loads_hpd_folders_with_the_installed_code(model, tmp_path, capsys):
    release = tmp_path / "release"
    assert hpd(capsys, "release", model, "--out", release, "--repo-id", "org/x")[0] == 0
    sentinel = tmp_path / "folder-code-ran"
    for folder in (model, release):
        modeling = folder / "modeling_hpd.py"
        modeling.write_text(sentinel_code(sentinel) + modeling.read_text())
    assert hpd(capsys, "encode", "--model", model, "a cat")[0] == 0
    assert hpd(capsys, "convert", model, tmp_path / "out")[0] == 0
    code, err = hpd(capsys, "release", "--check", release)
    assert code == 1 and "modeling_hpd.py is not this toolkit's code" in err and "--trust-remote-code" in err
    assert not sentinel.exists()


@pytest.fixture
def custom_code_model(tmp_path, tokenizer):
    """A sentence-transformers folder whose encoder is Python shipped in the folder (model_type custom-bert)."""
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Pooling, Transformer
    from transformers import BertConfig, BertModel

    bert_dir, folder = tmp_path / "bert", tmp_path / "custom"
    BertModel(BertConfig(vocab_size=len(VOCAB), hidden_size=32, num_hidden_layers=1, num_attention_heads=4,
                         intermediate_size=64, max_position_embeddings=64)).save_pretrained(bert_dir)
    tokenizer.save_pretrained(bert_dir)
    SentenceTransformer(modules=[Transformer(str(bert_dir)), Pooling(32, pooling_mode="mean")]).save(str(folder))
    sentinel = tmp_path / "custom-code-ran"
    (folder / "custom_bert.py").write_text(
        sentinel_code(sentinel) + "from transformers import BertConfig, BertModel\n"
        "class CustomConfig(BertConfig):\n    model_type = 'custom-bert'\n"
        "class CustomModel(BertModel):\n    config_class = CustomConfig\n")
    edit_json(folder / "config.json", model_type="custom-bert",
              auto_map={"AutoConfig": "custom_bert.CustomConfig", "AutoModel": "custom_bert.CustomModel"})
    return folder, sentinel


def test_other_models_code_runs_only_with_trust_remote_code(custom_code_model, tmp_path, capsys):
    folder, sentinel = custom_code_model
    write_year(tmp_path / "data", "STS12", {}, FixedCosineEncoder())
    for args in (("encode", "--model", folder, "a cat"),
                 ("eval", "sts", "--model", folder, "--data", tmp_path / "data", "--tasks", "STS12")):
        code, err = hpd(capsys, *args)
        assert code == 1 and "ships its own Python code" in err and "--trust-remote-code" in err, args
    assert not sentinel.exists()
    # with consent it runs (in a fresh process, so the module cache stays in tmp_path)
    result = run_python(f"import sys, hpd_cli\nsys.exit(hpd_cli.main(['encode', '--trust-remote-code', '--model', "
                        f"{str(folder)!r}, 'a cat']))", env={"HF_MODULES_CACHE": str(tmp_path / "modules")}, cwd=REPO)
    assert result.returncode == 0, result.stderr[-2000:]
    assert sentinel.exists()


def test_remote_code_depends_on_torch_and_transformers_only():
    imported = set()
    for node in ast.walk(ast.parse((REPO / "modeling_hpd.py").read_text())):
        if isinstance(node, ast.Import):
            imported |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            imported.add(node.module.split(".")[0])
    third_party = imported - set(sys.stdlib_module_names)  # the standard library ships with every Python
    assert third_party <= {"torch", "transformers", "configuration_hpd"}, third_party


def test_release_files_do_not_depend_on_where_they_were_built(model, tmp_path, capsys):
    # the release loads its tokenizer from the model folder, which is what records is_local / local_files_only
    assert hpd(capsys, "release", model, "--out", tmp_path / "release", "--repo-id", "org/x")[0] == 0
    assert hpd(capsys, "convert", model, tmp_path / "st", "--to", "sentence-transformers")[0] == 0
    for folder in (tmp_path / "release", tmp_path / "st"):
        for path in folder.rglob("*.json"):
            text = path.read_text()
            assert "is_local" not in text and "local_files_only" not in text and str(tmp_path) not in text, path


# --- one clear line instead of a traceback ------------------------------------------------------------

def test_non_utf8_input_files_name_the_file(model, tmp_path, capsys):
    latin1 = tmp_path / "latin1.txt"
    latin1.write_bytes("café au lait\n".encode("latin-1"))
    code, err = hpd(capsys, "encode", "--model", model, "--input", latin1)
    assert code == 1 and f"{latin1} is not UTF-8 text (byte 0xe9" in err and "re-save it as UTF-8" in err

    data = tmp_path / "data"
    folder = write_year(data, "STS12", {}, FixedCosineEncoder())
    (folder / "STS.input.MSRvid.txt").write_bytes("caf\xe9 left\tcaf\xe9 right\n".encode("latin-1") * 2)
    code, err = hpd(capsys, "eval", "sts", "--model", model, "--data", data, "--tasks", "STS12")
    assert code == 1 and "STS.input.MSRvid.txt is not UTF-8 text" in err


def test_max_seq_length_beyond_the_model_positions(model, tmp_path, capsys):
    write_year(tmp_path / "data", "STS12", {}, FixedCosineEncoder())
    code, err = hpd(capsys, "eval", "sts", "--model", model, "--data", tmp_path / "data", "--tasks", "STS12",
                    "--max-seq-length", "1000")
    assert code == 1 and "--max-seq-length 1000" in err and "1 to 64 tokens" in err


def test_truncated_safetensors(model, tmp_path, capsys):
    assert hpd(capsys, "release", model, "--out", tmp_path / "release", "--repo-id", "org/x")[0] == 0
    for folder in (model, tmp_path / "release"):
        weights = folder / "model.safetensors"
        weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    code, err = hpd(capsys, "release", "--check", tmp_path / "release")
    assert code == 1 and "is not fit to push" in err and "truncated or damaged" in err
    for args in (("encode", "--model", model, "a cat"), ("convert", model, tmp_path / "out")):
        code, err = hpd(capsys, *args)
        assert code == 1 and str(model) in err and "truncated or damaged" in err, args


def test_pickled_weights_are_refused_without_running_them(model, tmp_path, capsys):
    sentinel = tmp_path / "pickle-ran"

    class Payload:
        def __reduce__(self):
            return os.system, (f"touch {sentinel}",)

    (model / "model.safetensors").unlink()
    torch.save({"bert.embeddings.word_embeddings.weight": Payload()}, model / "pytorch_model.bin")
    for args in (("encode", "--model", model, "a cat"), ("convert", model, tmp_path / "out")):
        code, err = hpd(capsys, *args)
        assert code == 1 and "refusing to load pickled weights" in err and "safetensors" in err, args
    assert not sentinel.exists()


@pytest.mark.parametrize("command, message", [
    ("encode", "hpd encode: interrupted"),
    ("distill", "hpd distill: interrupted; run the same command again to resume"),
])
def test_keyboard_interrupt_is_one_line_and_exit_130(monkeypatch, capsys, command, message):
    def interrupted(args):
        raise KeyboardInterrupt

    monkeypatch.setattr(hpd_cli, f"{command}_command", interrupted)
    argv = ["encode", "x"] if command == "encode" else ["distill", "--output", "o"]
    try:
        code = hpd_cli.main(argv)
    except KeyboardInterrupt:
        pytest.fail("hpd let KeyboardInterrupt through as a traceback")
    assert code == 130
    assert capsys.readouterr().err.strip() == message

