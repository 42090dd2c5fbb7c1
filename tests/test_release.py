"""hpd release: the folder, its model card, its checks; from a tiny model and from the real all-MiniLM-L6-v2."""

import json
import random
import shutil

import pytest
import torch
from huggingface_hub import ModelCard

import hpd_cli
from conftest import tiny_model
from hpd_models import save_hpd_folder
from hpd_inference import weights_sha256
from hpd_toolkit.training.output_dir import MARKER
from hpd_toolkit.training.release import (MAX_RESULT_BYTES, REQUIRED_FILES, TEMPLATE, build_release,
                              check_mteb_submission, check_release, example_sentences)

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


def test_a_template_with_a_name_the_card_does_not_define_is_refused(tiny_folder, tmp_path):
    template = tmp_path / "card.md"  # huggingface_hub's from_template would render the misspelt name as ""
    template.write_text(TEMPLATE.read_text().replace("{{ embedding_dim }}-dim", "{{ embeding_dim }}-dim"))
    with pytest.raises(ValueError, match=r"card\.md uses embeding_dim, which the model card does not define"):
        build_release(str(tiny_folder), tmp_path / "release", "org/tiny", template=template)
    template.write_text("# {{ model_name }}\n")  # no front matter, so no widget sentences to check the loaders with
    with pytest.raises(ValueError, match="card.md has no sentence-similarity widget in its front matter"):
        build_release(str(tiny_folder), tmp_path / "release", "org/tiny", template=template)
    assert not (tmp_path / "release").exists()


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


# --- the MTEB leaderboard submission -------------------------------------------------------------

def mteb_from_the_hub(monkeypatch, model, output_folder, tasks=("STS12", "STSBenchmark")):
    """`hpd eval mteb` without --data; mteb's download of each task's dataset is replaced by random pairs."""
    from datasets import Dataset, DatasetDict
    from mteb.abstasks.abstask import AbsTask

    from hpd_toolkit.eval.mteb_eval import run_mteb
    from test_eval_mteb import _sentence

    rng = random.Random(3)

    def download(task, *args, **kwargs):  # what AbsTask.load_data leaves behind after a download
        column1, column2 = task.column_names
        rows = [(_sentence(rng), _sentence(rng), round(rng.uniform(0, 5), 3)) for _ in range(30)]
        columns = dict(zip((column1, column2, "score"), map(list, zip(*rows))))
        task.dataset = DatasetDict({split: Dataset.from_dict(columns) for split in task.metadata.eval_splits})
        task.data_loaded = True

    monkeypatch.setattr(AbsTask, "load_data", download)
    return run_mteb(model, list(tasks), output_folder, show_progress_bar=False)


def model_meta_of(source_file):
    """The ModelMeta that a model_meta.py defines: importing it builds, hence validates, mteb's pydantic model."""
    from mteb.models import ModelMeta

    namespace = {}
    exec(compile(source_file.read_text(), str(source_file), "exec"), namespace)
    (meta,) = [value for value in namespace.values() if isinstance(value, ModelMeta)]
    return meta


def test_push_files_the_mteb_results_under_the_pushed_commit(tiny_folder, tmp_path, hub, monkeypatch, capsys):
    import datetime

    import mteb

    config = json.loads((tiny_folder / "distill_config.json").read_text())
    config["settings"].update(sts_dev="../shared/data/senteval", corpus=["wiki/sentences.txt"])
    config["teacher"] = "sentence-transformers/all-mpnet-base-v2"  # a teacher mteb lists, with its training data
    (tiny_folder / "distill_config.json").write_text(json.dumps(config))
    mteb_from_the_hub(monkeypatch, str(tiny_folder), tmp_path / "mteb-out")
    out = tmp_path / "release"
    today = datetime.datetime.now(datetime.timezone.utc).date().isoformat()
    code = hpd_cli.main(["release", str(tiny_folder), "--out", str(out), "--repo-id", "my-org/tiny-hpd",
                         "--mteb-results", str(tmp_path / "mteb-out"), "--license", "mit", "--push"])
    assert code == 0, capsys.readouterr().err

    (commit,) = hub.commits
    sha = commit["oid"]
    run = out / "mteb" / "results" / "my-org__tiny-hpd" / sha
    assert sorted(p.name for p in run.iterdir()) == ["STS12.json", "STSBenchmark.json", "model_meta.json"]
    assert [p.name for p in (out / "mteb" / "results" / "my-org__tiny-hpd").iterdir()] == [sha]
    assert not any(path.startswith("mteb/") for path in hub.files["my-org/tiny-hpd"]["main"])  # kept beside it
    meta = model_meta_of(out / "mteb" / "model_meta.py")
    assert (meta.name, meta.revision) == ("my-org/tiny-hpd", sha)
    saved = json.loads((run / "model_meta.json").read_text())
    assert (saved["name"], saved["revision"]) == ("my-org/tiny-hpd", sha)
    assert mteb.models.ModelMeta.model_validate_json_resolved((run / "model_meta.json").read_text()).revision == sha
    assert (meta.license, meta.languages, meta.open_weights) == ("mit", ["eng-Latn"], True)
    assert meta.release_date in {today, datetime.datetime.now(datetime.timezone.utc).date().isoformat()}
    assert meta.reference == f"{hub.url}/my-org/tiny-hpd" and meta.adapted_from == "org/student-base"
    assert meta.citation.startswith("@inproceedings{zhao-etal-2022-compressing,")
    teacher = mteb.get_model_meta("sentence-transformers/all-mpnet-base-v2", fetch_from_hf=False).training_datasets
    assert "MSMARCO" in teacher and meta.training_datasets == {"STSBenchmark", *teacher}
    source = (out / "mteb" / "model_meta.py").read_text()
    assert "# Not in MTEB: the distillation corpus, 578 training and 20 validation sentences" in source
    assert "wiki/sentences.txt" in source and "Incomplete" not in source

    submitting = (out / "mteb" / "SUBMITTING.md").read_text()
    assert "**Ready.**" in submitting and f"copying `results/my-org__tiny-hpd/{sha}/`" in submitting
    assert "`public_training_code`" in submitting and "`contacts`" in submitting
    assert not any(f"`{field}`:" in submitting for field in ("revision", "release_date", "open_weights", "license",
                                                              "languages", "adapted_from", "training_datasets"))
    assert check_mteb_submission(out) == ([], None)
    assert f"MTEB submission ready (not pushed; see {out / 'mteb' / 'SUBMITTING.md'}): {run}" in capsys.readouterr().out


def test_without_push_the_submission_is_prepared_but_not_ready(tiny_folder, tmp_path, monkeypatch, capsys):
    mteb_from_the_hub(monkeypatch, str(tiny_folder), tmp_path / "mteb-out", tasks=["STS12"])
    out = tmp_path / "release"
    code = hpd_cli.main(["release", str(tiny_folder), "--out", str(out), "--repo-id", "my-org/tiny-hpd",
                         "--mteb-results", str(tmp_path / "mteb-out")])
    assert code == 0, capsys.readouterr().err
    assert f"MTEB submission prepared in {out / 'mteb'}, not ready:" in capsys.readouterr().out

    run = out / "mteb" / "results" / "my-org__tiny-hpd" / "no_revision_available"
    assert sorted(p.name for p in run.iterdir()) == ["STS12.json", "model_meta.json"]
    meta = model_meta_of(out / "mteb" / "model_meta.py")
    assert (meta.revision, meta.release_date, meta.open_weights) == ("no_revision_available", None, None)
    assert meta.license == "apache-2.0" and meta.training_datasets == set()  # no sts_dev; the teacher is a local path
    source = (out / "mteb" / "model_meta.py").read_text()
    assert "# Incomplete: add the training datasets of the teacher /local/teacher" in source
    submitting = (out / "mteb" / "SUBMITTING.md").read_text()
    assert "**Not ready.**" in submitting and "again with `--push`" in submitting
    for field in ("revision", "release_date", "open_weights", "training_datasets", "public_training_code"):
        assert f"- `{field}`:" in submitting, field
    problems, pending = check_mteb_submission(out)
    assert problems == [] and "not a Hub commit" in pending

    assert hpd_cli.main(["release", "--check", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "The MTEB submission is not ready: the results are filed under 'no_revision_available'" in printed


def test_a_tampered_submission_is_refused_with_one_line(tiny_folder, tmp_path, hub, monkeypatch, capsys):
    mteb_from_the_hub(monkeypatch, str(tiny_folder), tmp_path / "mteb-out", tasks=["STS12"])
    out = tmp_path / "release"
    assert hpd_cli.main(["release", str(tiny_folder), "--out", str(out), "--repo-id", "my-org/tiny-hpd",
                         "--mteb-results", str(tmp_path / "mteb-out"), "--push"]) == 0, capsys.readouterr().err
    run = out / "mteb" / "results" / "my-org__tiny-hpd" / hub.commits[0]["oid"]
    pristine = (run / "STS12.json").read_text()
    assert check_mteb_submission(out) == ([], None)
    capsys.readouterr()  # what the evaluation and the release printed

    data = json.loads(pristine)
    data["task_name"] = "STS13"
    (run / "STS12.json").write_text(json.dumps(data))
    err = run_release(capsys, "--check", out)
    assert "the MTEB submission is refused: STS12.json holds the results of task_name 'STS13', not 'STS12'" in err

    tamperings = {
        "NaN score": (lambda d: d["scores"]["test"][0].update(main_score=float("nan")),
                      "STS12.json: the score test[0].main_score is NaN, infinite or missing"),
        "infinite score": (lambda d: d["scores"]["test"][0].update(cosine_pearson=float("inf")),
                           "STS12.json: the score test[0].cosine_pearson is NaN"),
        "missing split": (lambda d: d["scores"].pop("test"), "STS12.json: the score test[0].main_score is NaN"),
    }
    for name, (tamper, expected) in tamperings.items():
        data = json.loads(pristine)
        tamper(data)
        (run / "STS12.json").write_text(json.dumps(data))
        problems, _ = check_mteb_submission(out)
        assert len(problems) == 1 and problems[0].startswith(expected), (name, problems)
    (run / "STS12.json").write_text(pristine + " " * MAX_RESULT_BYTES)
    (problem,) = check_mteb_submission(out)[0]
    assert "STS12.json is 10.0 MB, over the results repository's 10 MB limit" in problem
    (run / "STS12.json").write_text(pristine)

    meta_source = (out / "mteb" / "model_meta.py").read_text()
    invalid = meta_source.replace("license='apache-2.0'", "license='no-such-licence'")
    (out / "mteb" / "model_meta.py").write_text(invalid)
    (problem,) = check_mteb_submission(out)[0]
    assert problem.startswith(f"{out / 'mteb'}/model_meta.py does not import and validate as mteb's ModelMeta (license")
    (out / "mteb" / "model_meta.py").write_text(meta_source)
    (out / "mteb" / "hpd_provenance.jsonl").unlink()
    (problem,) = check_mteb_submission(out)[0]
    assert problem.startswith("STS12.json: no record of where its data came from")


def test_results_of_local_data_that_differ_from_mtebs_are_refused(tiny_folder, tmp_path, hub, capsys):
    from hpd_toolkit.eval.mteb_eval import run_mteb
    from test_eval_mteb import _write_raw_sts

    _write_raw_sts(tmp_path / "sts-raw", random.Random(1))
    run_mteb(str(tiny_folder), ["STS12"], tmp_path / "mteb-out", data_dir=tmp_path / "sts-raw", show_progress_bar=False)
    capsys.readouterr()  # the evaluation's own output
    err = run_release(capsys, tiny_folder, "--out", tmp_path / "release", "--repo-id", "my-org/tiny-hpd",
                      "--mteb-results", tmp_path / "mteb-out", "--push")
    assert "nothing was pushed: the MTEB submission is refused: STS12 was scored on local data that differ from " \
           "MTEB's (test num_samples is 25 where MTEB's dataset has 3108" in err
    assert "run `hpd eval mteb` without --data on a machine with the Hub" in err
    assert hub.requests == []


def test_mteb_results_of_another_model_are_refused(tiny_folder, tmp_path, tokenizer, monkeypatch, capsys):
    other = tmp_path / "other-model"
    save_hpd_folder(tiny_model(seed=9, embedding_dim=12), tokenizer, other)
    mteb_from_the_hub(monkeypatch, str(other), tmp_path / "mteb-out", tasks=["STS12"])
    capsys.readouterr()
    err = run_release(capsys, tiny_folder, "--out", tmp_path / "release", "--repo-id", "my-org/tiny-hpd",
                      "--mteb-results", tmp_path / "mteb-out")
    assert "holds results of another model" in err and "other-model" in err


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


@pytest.mark.parametrize("variant", [{"backend": "onnx"}, {"precision": "int8"}])
def test_error_for_results_of_an_exported_graph_or_compact_vectors(tiny_folder, tmp_path, capsys, variant):
    results = results_for(tiny_folder, tmp_path / "sts.json")
    results.write_text(json.dumps({**json.loads(results.read_text()), **variant}))
    err = run_release(capsys, tiny_folder, "--out", tmp_path / "r", "--repo-id", "org/x", "--results", results)
    assert "the card reports the model itself" in err and not (tmp_path / "r").exists()


@pytest.mark.parametrize("repo_id", ["no-slash", "a/b/c", "org/has space", "org/"])
def test_error_for_a_malformed_repo_id(tiny_folder, tmp_path, capsys, repo_id):
    err = run_release(capsys, tiny_folder, "--out", tmp_path / "r", "--repo-id", repo_id)
    assert f"--repo-id {repo_id!r} is not a Hub id of the form ORG/NAME" in err


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


def test_card_training_rows_name_every_teacher_and_the_selection():
    from hpd_toolkit.training.release import training_rows

    record = {"settings": {"layers": [0, 2], "projection": "pca", "dim": 128, "pca_sentences": 50000, "lr": 1e-4,
                           "batch_size": 256, "warmup_steps": 20, "epochs": 1, "seed": 42, "head_init": "lstsq",
                           "unit": "mixed"},
              "teacher": ["models/all-mpnet-base-v2", "models/all-MiniLM-L6-v2"], "teacher_weights": [1.0, 0.5],
              "student": "models/all-MiniLM-L6-v2", "corpus": {"train": 50000, "valid": 5000, "sha256": "cd" * 32},
              "best_step": 196, "selected_by": "valid-mse", "validation": {"valid_mse": 0.002},
              "selection": "step 196 of 196: the lowest validation MSE against the projected teacher vectors"}
    rows = dict(training_rows(record))
    assert rows["teachers"] == "models/all-mpnet-base-v2 (weight 1) + models/all-MiniLM-L6-v2 (weight 0.5)"
    assert rows["training text"] == "sentences and passages"
    assert rows["checkpoint selected by"].startswith("step 196 of 196: the lowest validation MSE")
    assert rows["PCA fitted on"] == "50,000 teacher vectors"
    passages_only = {**record, "settings": {**record["settings"], "pca_min_words": 65}}
    assert dict(training_rows(passages_only))["PCA fitted on"] == (
        "50,000 teacher vectors (those of at least 65 words only)")

    # trained on from that model: each run in turn, the later one with only what it changed
    later = {**record, "settings": {**record["settings"], "layers": None, "lr": 3e-4}, "student": "/runs/first",
             "validation": {"valid_mse": 0.001}, "continues": record}
    rows = training_rows(later)
    assert rows[: len(training_rows(record))] == [(f"run 1: {name}", value) for name, value in training_rows(record)]
    assert dict(rows[len(training_rows(record)):]) == {
        "run 2: student base": "the model of run 1", "run 2: student layers kept": "all",
        "run 2: optimisation": "AdamW, lr 0.0003, batch 256, 20 warm-up steps, 1 epoch, seed 42",
        "run 2: valid mse": "0.001"}


def test_card_and_model_index_list_each_trained_size(tmp_path, tokenizer, capsys):
    folder = tmp_path / "matryoshka"
    save_hpd_folder(tiny_model(seed=7, embedding_dim=12, matryoshka_dims=[12, 6, 3]), tokenizer, folder)
    (folder / "distill_config.json").write_text(json.dumps({
        "settings": {"projection": "pca", "dim": 12, "matryoshka_dims": [12, 6, 3], "matryoshka_weights": [1, 1, 0.5],
                     "pca_sentences": 100, "lr": 1e-4, "batch_size": 32, "warmup_steps": 3, "epochs": 1, "seed": 42},
        "teacher": "/local/teacher", "student": "/local/student", "corpus": {"train": 578, "valid": 20,
        "sha256": "ab" * 32}, "best_step": 19, "validation": {"valid_mse": 0.0016, "valid_mse_d6": 0.0011},
        "selected_by": "valid-mse"}))
    smaller = {task: score - 2 for task, score in SCORES.items()}
    files = [results_for(folder, tmp_path / "sts-12.json"),
             results_for(folder, tmp_path / "sts-6.json", scores=smaller)]
    for path, dim, truncated in ((files[0], 12, None), (files[1], 6, 6)):
        path.write_text(json.dumps({**json.loads(path.read_text()), "embedding_dim": dim, "truncate_dim": truncated}))
    code = hpd_cli.main(["release", str(folder), "--out", str(tmp_path / "release"), "--repo-id", "my-org/tiny-mrl",
                         "--results", *map(str, files)])
    assert code == 0, capsys.readouterr().err
    out = tmp_path / "release"
    card = ModelCard.load(out / "README.md")
    parsed = {(e.dataset_name, e.metric_name): e.metric_value for e in card.data.eval_results}
    metric = "Spearman (cosine) x 100, senteval protocol, first {} dimensions"
    assert parsed == {(f"{t} (senteval protocol)", metric.format(k)): v
                      for k, scores in ((12, SCORES), (6, smaller)) for t, v in scores.items() if t != "Avg"}
    text = card.text
    assert "| **tiny-mrl**, first 12 dimensions | 70.10 |" in text
    assert "| **tiny-mrl**, first 6 dimensions | 68.10 |" in text
    assert text.count("## Results: STS, senteval protocol") == 1  # one table, a row per size
    assert "| embedding dimension | 12; also 6, 3 (Matryoshka" in text
    assert 'SentenceTransformer("my-org/tiny-mrl", trust_remote_code=True, truncate_dim=3)' in text
    assert "| Matryoshka sizes | 12, 6, 3 (the loss weighs each prefix's MSE by 1, 1, 0.5) |" in text
    assert check_release(out) == []  # the check names model-index entries the same way

    files[1].write_text(json.dumps({**json.loads(files[1].read_text()), "embedding_dim": 5, "truncate_dim": 5}))
    err = run_release(capsys, folder, "--out", tmp_path / "r", "--repo-id", "org/x", "--results", files[1])
    assert "scored the model's first 5 dimensions, a size it was not trained for (12, 6, 3)" in err
