"""hpd release: the folder, its model card, its checks; from a tiny model and from the real all-MiniLM-L6-v2."""

import json
import random
import shutil

import pytest
import torch
from huggingface_hub import ModelCard

import hpd_cli
from conftest import tiny_model
from training.convert import save_hpd_folder, weights_sha256
from training.output_dir import MARKER
from training.release import REQUIRED_FILES, build_release, check_release, example_sentences

SCORES = {"STS12": 70.1, "STS13": 80.2, "STS14": 75.3, "STS15": 82.4, "STS16": 79.5, "STSBenchmark": 81.6,
          "SICKRelatedness": 77.7, "Avg": 78.11}


@pytest.fixture
def tiny_folder(tmp_path, tokenizer):
    folder = tmp_path / "tiny-model"
    save_hpd_folder(tiny_model(seed=7, embedding_dim=12), tokenizer, folder)
    (folder / "distill_config.json").write_text(json.dumps({
        "settings": {"layers": [0, 1], "projection": "pca", "dim": 12, "pca_sentences": 100, "lr": 1e-4,
                     "batch_size": 32, "warmup_steps": 3, "epochs": 1, "seed": 42},
        "teacher": "/local/teacher", "student": "org/student-base", "corpus": {"train": 578, "valid": 20,
        "sha256": "ab" * 32}, "best_step": 19, "validation": {"valid_mse": 0.0016}, "selected_by": "valid_mse"}))
    return folder


def results_for(folder, path, protocol="senteval", scores=SCORES):
    path.write_text(json.dumps({"model": str(folder), "model_sha256": weights_sha256(folder), "protocol": protocol,
                                "scores": scores}))
    return path


def test_release_folder_card_and_checks(tiny_folder, tmp_path, capsys):
    results = results_for(tiny_folder, tmp_path / "sts.json")
    code = hpd_cli.main(["release", str(tiny_folder), "--out", str(tmp_path / "release"), "--repo-id",
                         "my-org/tiny-hpd", "--results", str(results)])
    assert code == 0, capsys.readouterr().err
    out = tmp_path / "release"
    files = {str(p.relative_to(out)) for p in out.rglob("*") if p.is_file()}
    assert files == {*REQUIRED_FILES, "config_sentence_transformers.json", "distill_config.json", "results/sts.json",
                     MARKER}

    card = ModelCard.load(out / "README.md")  # huggingface_hub's parser
    assert card.data.license == "apache-2.0" and card.data.pipeline_tag == "sentence-similarity"
    assert card.data.base_model == "org/student-base"  # a Hub id from distill_config.json
    parsed = {e.dataset_name: (e.metric_type, e.metric_value) for e in card.data.eval_results}
    assert parsed == {f"{t} (senteval protocol)": ("cosine_spearman", v) for t, v in SCORES.items() if t != "Avg"}
    text = card.text
    assert "# tiny-hpd" in text and 'AutoModel.from_pretrained("my-org/tiny-hpd", trust_remote_code=True)' in text
    assert "| **tiny-hpd** | 70.10 | 80.20 | 75.30 | 82.40 | 79.50 | 81.60 | 77.70 | 78.11 |" in text
    assert "| HPD-TinyBERT-F128 (published) | 74.29 |" in text
    assert "| corpus | 578 training and 20 validation sentences" in text and "@inproceedings{zhao" in text
    assert "{{" not in card.content and "{%" not in card.content
    printed = capsys.readouterr().out
    assert "both loaders reproduce the model" in printed and MARKER not in printed  # it lists what gets pushed
    assert check_release(out) == []


def test_float16_release_is_half_the_size_and_computes_in_float32(tiny_folder, tmp_path, capsys):
    from safetensors import safe_open
    from transformers import AutoModel

    code = hpd_cli.main(["release", str(tiny_folder), "--out", str(tmp_path / "release"), "--repo-id",
                         "my-org/tiny-hpd", "--weights-dtype", "float16"])
    assert code == 0, capsys.readouterr().err  # the command's own check: both loaders match the rounded model
    out = tmp_path / "release"
    with safe_open(out / "model.safetensors", "pt") as weights:
        assert {weights.get_tensor(name).dtype for name in weights.keys()} == {torch.float16}
    assert json.loads((out / "config.json").read_text())["dtype"] == "float32"
    size16, size32 = (out / "model.safetensors").stat().st_size, (tiny_folder / "model.safetensors").stat().st_size
    assert size16 < 0.55 * size32
    model = AutoModel.from_pretrained(out, trust_remote_code=True)
    assert model.dtype == torch.float32
    full = AutoModel.from_pretrained(tiny_folder, trust_remote_code=True).encode(example_sentences())
    half = model.encode(example_sentences())
    assert 0 < abs(half - full).max() < 1e-2  # rounded weights: close to, not equal to, the float32 model


def test_card_leaves_out_what_it_does_not_know(tmp_path, tokenizer):
    folder = tmp_path / "plain"
    save_hpd_folder(tiny_model(seed=8), tokenizer, folder)
    out, _ = build_release(str(folder), tmp_path / "release", "org/plain")
    card = ModelCard.load(out / "README.md")
    assert card.data.eval_results is None and card.data.base_model is None
    assert "## Results" not in card.text and "## Training" not in card.text and "student base" not in card.text


def test_check_finds_a_broken_folder(tiny_folder, tmp_path, capsys):
    out, _ = build_release(str(tiny_folder), tmp_path / "release", "org/tiny")
    assert check_release(out) == []
    card = (out / "README.md").read_text()
    (out / "README.md").write_text(card.replace("license: apache-2.0\n", "") + "\n{{ leftover }}\n")
    config = json.loads((out / "config.json").read_text())
    (out / "config.json").write_text(json.dumps({k: v for k, v in config.items() if k != "auto_map"}))
    problems = check_release(out)
    assert any("no license" in p for p in problems) and any("placeholders" in p for p in problems)
    assert any("auto_map" in p for p in problems) and any("AutoModel cannot load" in p for p in problems)

    assert hpd_cli.main(["release", "--check", str(out)]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "is not fit to push" in err


def test_check_compares_both_loaders_with_the_source(tiny_folder, tmp_path):
    out, reference = build_release(str(tiny_folder), tmp_path / "release", "org/tiny")
    assert check_release(out, reference) == []
    problems = check_release(out, reference + 1e-3)
    assert len([p for p in problems if "other embeddings than the source model" in p]) == 2


def test_mteb_results_become_a_submission(tiny_folder, tmp_path):
    from eval.mteb_eval import run_mteb
    from test_eval_mteb import _write_raw_sts

    _write_raw_sts(tmp_path / "sts-raw", random.Random(1))
    run_mteb(str(tiny_folder), ["STS12"], tmp_path / "mteb-out", data_dir=tmp_path / "sts-raw", show_progress_bar=False)
    out, _ = build_release(str(tiny_folder), tmp_path / "release", "my-org/tiny-hpd",
                           mteb_results=tmp_path / "mteb-out")
    run = out / "mteb" / "results" / "my-org__tiny-hpd" / "no_revision_available"
    assert sorted(p.name for p in run.iterdir()) == ["STS12.json"]
    namespace = {}
    exec((out / "mteb" / "model_meta.py").read_text(), namespace)
    assert [v.name for k, v in namespace.items() if type(v).__name__ == "ModelMeta"] == ["my-org/tiny-hpd"]
    submitting = (out / "SUBMITTING.md").read_text()
    assert "embeddings-benchmark/results" in submitting and "copying `mteb/results/my-org__tiny-hpd/`" in submitting


# --- bad input: one clear line -------------------------------------------------------------------

def run_release(capsys, *args):
    code = hpd_cli.main(["release", *map(str, args)])
    err = capsys.readouterr().err.strip()
    assert code == 1 and len(err.splitlines()) == 1, err
    return err


def test_error_for_a_model_without_tokenizer(tiny_folder, tmp_path, capsys):
    for name in ("tokenizer.json", "tokenizer_config.json"):
        (tiny_folder / name).unlink()
    assert "has no tokenizer" in run_release(capsys, tiny_folder, "--out", tmp_path / "r", "--repo-id", "org/x")


def test_error_for_results_of_another_model(tiny_folder, tmp_path, tokenizer, capsys):
    other = tmp_path / "other-model"
    save_hpd_folder(tiny_model(seed=9, embedding_dim=12), tokenizer, other)
    results = results_for(other, tmp_path / "other.json")
    err = run_release(capsys, tiny_folder, "--out", tmp_path / "r", "--repo-id", "org/x", "--results", results)
    assert "was produced by another model" in err and "other-model" in err


@pytest.mark.parametrize("repo_id", ["no-slash", "a/b/c", "org/has space", "org/"])
def test_error_for_a_malformed_repo_id(tiny_folder, tmp_path, capsys, repo_id):
    err = run_release(capsys, tiny_folder, "--out", tmp_path / "r", "--repo-id", repo_id)
    assert f"--repo-id {repo_id!r} is not a Hub model id of the form ORG/NAME" in err


def test_error_for_an_out_folder_that_is_not_a_release(tiny_folder, tmp_path, capsys):
    (tmp_path / "precious").mkdir()
    (tmp_path / "precious" / "thesis.tex").write_text("years of work")
    err = run_release(capsys, tiny_folder, "--out", tmp_path / "precious", "--repo-id", "org/x")
    assert "is not empty and was not written by hpd" in err and "--overwrite" in err
    assert (tmp_path / "precious" / "thesis.tex").read_text() == "years of work"


def test_push_sends_exactly_the_checked_folder(tiny_folder, tmp_path, capsys, hub):
    code = hpd_cli.main(["release", str(tiny_folder), "--out", str(tmp_path / "r"), "--repo-id", "org/tiny",
                         "--push", "--private", "--commit-message", "First release"])
    assert code == 0, capsys.readouterr().err
    assert f"Pushed in one commit: {hub.url}" in capsys.readouterr().out
    out = tmp_path / "r"
    assert (out / MARKER).is_file()  # the toolkit's own bookkeeping stays local
    assert hub.files["org/tiny"]["main"] == {p.relative_to(out).as_posix(): p.read_bytes()
                                             for p in out.rglob("*") if p.is_file() and p.name != MARKER}
    assert hub.repos["org/tiny"] == {"private": True}
    assert [c["message"] for c in hub.commits] == ["First release"]


def test_error_for_push_without_a_token(tiny_folder, tmp_path, capsys, hub_env):
    hub_env.delenv("HF_TOKEN")
    err = run_release(capsys, tiny_folder, "--out", tmp_path / "r", "--repo-id", "org/x", "--push")
    assert "no Hugging Face token" in err


@pytest.mark.integration
def test_release_of_the_converted_packaged_minilm(minilm_path, shared_data, tmp_path, capsys):
    results = tmp_path / "minilm-stsb.json"
    assert hpd_cli.main(["eval", "sts", "--model", minilm_path, "--data", str(shared_data / "senteval"),
                         "--tasks", "STSBenchmark", "--output", str(results)]) == 0
    assert hpd_cli.main(["release", minilm_path, "--out", str(tmp_path / "release"), "--repo-id",
                         "sentence-transformers/all-MiniLM-L6-v2-hpd", "--results", str(results),
                         "--base-model", "sentence-transformers/all-MiniLM-L6-v2"]) == 0, capsys.readouterr().err
    card = ModelCard.load(tmp_path / "release" / "README.md")
    score = json.loads(results.read_text())["scores"]["STSBenchmark"]
    assert [(e.dataset_name, e.metric_value) for e in card.data.eval_results] == [
        ("STSBenchmark (senteval protocol)", score)]
    assert card.data.base_model == "sentence-transformers/all-MiniLM-L6-v2"
    assert "384-dimensional" in card.text and "22.6M (22,565,376)" in card.text  # no BERT pooler
    from sentence_transformers import SentenceTransformer

    reference = SentenceTransformer(minilm_path).encode(example_sentences())
    assert check_release(tmp_path / "release", reference, atol=1e-5) == []
    shutil.rmtree(tmp_path / "release")


@pytest.mark.integration
def test_float16_weights_keep_the_sts_scores_of_float32(minilm_path, shared_data, tmp_path, capsys):
    assert hpd_cli.main(["release", minilm_path, "--out", str(tmp_path / "half"), "--repo-id", "org/minilm-half",
                         "--weights-dtype", "float16"]) == 0, capsys.readouterr().err
    scores = {}
    for name, model in (("float32", minilm_path), ("float16", tmp_path / "half")):
        output = tmp_path / f"{name}.json"
        assert hpd_cli.main(["eval", "sts", "--model", str(model), "--data", str(shared_data / "senteval"),
                             "--tasks", "STSBenchmark,SICK-R", "--output", str(output)]) == 0
        scores[name] = json.loads(output.read_text())["scores"]
    assert scores["float32"]["STSBenchmark"] > 80  # the real model, really scored (82.03 published)
    for task in ("STSBenchmark", "SICKRelatedness"):
        assert scores["float16"][task] == pytest.approx(scores["float32"][task], abs=0.05), task
