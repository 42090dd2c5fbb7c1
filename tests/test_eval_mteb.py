"""`run_mteb`: the real mteb scores local raw STS files, writes its results layout and a ModelMeta, offline."""

import importlib
import json
import random
from pathlib import Path

import pytest

from conftest import WORDS, tiny_model
from hpd_toolkit.eval.sts import SUBSETS, spearman_x100
from hpd_models import load_encoder
from hpd_models import save_hpd_folder
from hpd_inference import weights_sha256

PUBLISHED_MINILM = {"STS12": 72.37, "STS13": 80.60, "STS14": 75.59, "STS15": 85.39, "STS16": 78.99,
                    "STSBenchmark": 82.03}  # mteb's all-MiniLM-L6-v2 results


def _sentence(rng):
    return " ".join(rng.choice(WORDS) for _ in range(rng.randint(2, 9))) + rng.choice([".", "!", ""])


def _write_raw_sts(folder, rng):
    """A tiny folder in the sts-raw layout for STS12 (its five subsets) and STSBenchmark; returns the pairs in order."""
    pairs = {"STS12": [], "STSBenchmark": []}
    (folder / "STS12").mkdir(parents=True)
    for subset in SUBSETS["STS12"]:
        inputs, gold = [], []
        for i in range(6):
            s1, s2, score = _sentence(rng), _sentence(rng), round(rng.uniform(0, 5), 3)
            inputs.append(f"{s1}\t{s2}")
            gold.append("" if i == 2 else str(score))  # an unscored pair, which must be dropped
            if i != 2:
                pairs["STS12"].append((s1, s2, score))
        (folder / "STS12" / f"STS.input.{subset}.txt").write_text("\n".join(inputs) + "\n", encoding="utf-8")
        (folder / "STS12" / f"STS.gs.{subset}.txt").write_text("\n".join(gold) + "\n", encoding="utf-8")
    (folder / "STSBenchmark").mkdir()
    lines = []
    for i in range(25):
        s1, s2, score = _sentence(rng), _sentence(rng), round(rng.uniform(0, 5), 3)
        lines.append(f"main-captions\tMSRvid\t2012test\t{i:04d}\t{score}\t{s1}\t{s2}")
        pairs["STSBenchmark"].append((s1, s2, score))
    (folder / "STSBenchmark" / "sts-test.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return pairs


def _files(folder):
    return sorted(p for p in Path(folder).rglob("*") if p.is_file()) if Path(folder).exists() else []


def test_mteb_scores_local_raw_files_and_writes_its_layout(tmp_path, tokenizer, monkeypatch, capsys):
    import mteb
    from mteb.results import TaskResult

    from hpd_toolkit.eval.mteb_eval import run_mteb

    model_dir = tmp_path / "tiny-hpd"
    save_hpd_folder(tiny_model(seed=5, pooling="mean", max_seq_length=32), tokenizer, model_dir)
    pairs = _write_raw_sts(tmp_path / "sts-raw", random.Random(0))

    # mteb's default cache: $MTEB_CACHE when set, else ~/.cache/mteb; the default ResultCache that
    # mteb.evaluate uses was built when mteb was imported, so watch its folder as well as a fresh one.
    default_cache = importlib.import_module("mteb.evaluate")._DEFAULT_CACHE.cache_path
    before = _files(default_cache)
    monkeypatch.setenv("MTEB_CACHE", str(tmp_path / "mteb-default-cache"))
    # mteb rounds the scores it writes to 6 decimals; keep the unrounded results it serialises
    written = {}
    original_to_disk = TaskResult.to_disk
    monkeypatch.setattr(TaskResult, "to_disk", lambda self, path: (written.setdefault(self.task_name, self),
                                                                   original_to_disk(self, path))[1])

    out = tmp_path / "out"
    result = run_mteb(str(model_dir), ["STS12", "STS-B"], out, data_dir=tmp_path / "sts-raw", batch_size=64,
                      show_progress_bar=False)

    folder = out / "local__tiny-hpd" / "no_revision_available"
    assert result["results_folder"] == str(folder)
    assert result["data_source"] == f"local raw files in {tmp_path / 'sts-raw'}"
    assert list(result["scores"]) == ["STS12", "STSBenchmark"]
    assert all(type(score) is float for score in result["scores"].values())
    assert f"fed from the local raw files in {tmp_path / 'sts-raw'}, not from the Hugging Face Hub" in capsys.readouterr().out
    encoder = load_encoder(str(model_dir))
    for task, task_pairs in pairs.items():
        saved = json.loads((folder / f"{task}.json").read_text())
        assert saved["task_name"] == task and saved["scores"]["test"][0]["hf_subset"] == "default"
        # our own Spearman over the concatenated pairs, with the same model; all pairs fit in one batch in both
        s1, s2, gold = map(list, zip(*task_pairs))
        ours = spearman_x100(encoder.encode(s1, batch_size=64), encoder.encode(s2, batch_size=64), gold)
        assert abs(100 * written[task].get_score() - ours) <= 1e-6
        assert abs(100 * saved["scores"]["test"][0]["main_score"] - ours) <= 1e-4  # written with 6 decimals
        assert abs(result["scores"][task] - ours) <= 0.005 + 1e-9
        assert saved["scores"]["test"][0]["main_score"] == saved["scores"]["test"][0]["cosine_spearman"]

    saved_meta = json.loads((folder / "model_meta.json").read_text())
    assert saved_meta["name"] == "local/tiny-hpd" and saved_meta["embed_dim"] == 16
    assert result["model_meta_file"] == str(folder / "model_meta.py")
    source = (folder / "model_meta.py").read_text()
    namespace = {}
    exec(compile(source, "model_meta.py", "exec"), namespace)
    meta = namespace["tiny_hpd"]
    assert isinstance(meta, mteb.models.ModelMeta)
    assert (meta.name, meta.revision, meta.embed_dim, meta.max_tokens) == ("local/tiny-hpd", "no_revision_available",
                                                                          16, 32)
    assert meta.n_parameters == sum(p.numel() for p in encoder.parameters()) and meta.license is None
    assert meta.use_instructions is False and meta.loader_kwargs == {"trust_remote_code": True}

    # where each task's data came from, for `hpd release`; not *.json, which mteb's loaders take for a task result
    from hpd_toolkit.eval.mteb_eval import read_provenance

    assert (folder / "hpd_provenance.jsonl").is_file()
    recorded = read_provenance(folder)
    assert sorted(recorded) == ["STS12", "STSBenchmark"]
    for task, pair_count in (("STS12", 3108), ("STSBenchmark", 1379)):
        assert recorded[task]["data"] == "local" and recorded[task]["data_dir"] == str(tmp_path / "sts-raw")
        assert recorded[task]["model_sha256"] == weights_sha256(model_dir)
        difference = f"test num_samples is {len(pairs[task])} where MTEB's dataset has {pair_count}"
        assert recorded[task]["differs_from_mteb"] == difference == result["differs_from_mteb"][task]

    assert _files(tmp_path / "mteb-default-cache") == []
    assert _files(default_cache) == before
    assert not any(p.name.endswith(".json") for p in _files(Path.home() / ".cache" / "mteb"))


def test_the_command_says_which_local_data_differ_from_mtebs(tmp_path, tokenizer, capsys):
    import hpd_cli

    save_hpd_folder(tiny_model(seed=5), tokenizer, tmp_path / "tiny-hpd")
    _write_raw_sts(tmp_path / "sts-raw", random.Random(0))
    assert hpd_cli.main(["eval", "mteb", "--model", str(tmp_path / "tiny-hpd"), "--tasks", "STS12", "--data",
                         str(tmp_path / "sts-raw"), "--output-folder", str(tmp_path / "out")]) == 0
    assert ("Note: the local data of STS12 differ from MTEB's (test num_samples is 25 where MTEB's dataset has 3108), "
            "so `hpd release` will not submit this result") in capsys.readouterr().out


def test_which_shared_raw_files_equal_mtebs_datasets(shared_data):
    """mteb's statistics of the raw releases against those it ships for its own datasets: only STS-B's match.

    MTEB's STS12-16 hold the tokenised text (the character counts of ../shared/data/senteval), and its SICK-R
    has 9,927 pairs from the SemEval split files, not the 9,840 of SICK.txt."""
    import mteb

    from hpd_toolkit.eval.mteb_eval import _feed_local_data, local_data_difference
    from hpd_toolkit.eval.sts import TASK_TABLE, load_pairs

    tasks = mteb.get_tasks(tasks=[task.mteb for task in TASK_TABLE.values()])
    _feed_local_data(tasks, load_pairs(shared_data / "sts-raw", protocol="mteb"))
    differences = {task.metadata.name: local_data_difference(task) for task in tasks}
    assert differences.pop("STSBenchmark") is None
    assert differences.pop("SICK-R") == "test num_samples is 9840 where MTEB's dataset has 9927"
    assert differences["STS12"] == "test number_of_characters is 391921 where MTEB's dataset has 402118"
    assert all(difference.startswith("test number_of_characters is ") for difference in differences.values())


def test_missing_data_file_and_unknown_task_fail_before_loading_the_model(tmp_path):
    from hpd_toolkit.eval.mteb_eval import run_mteb

    with pytest.raises(ValueError, match="unknown task STS99"):
        run_mteb("/nonexistent-model", ["STS99"], tmp_path / "out", data_dir=tmp_path)
    (tmp_path / "STS12").mkdir()
    with pytest.raises(FileNotFoundError, match="STS.input.MSRpar.txt: missing"):
        run_mteb("/nonexistent-model", ["STS12"], tmp_path / "out", data_dir=tmp_path)
    assert not (tmp_path / "out").exists()


@pytest.mark.integration
def test_minilm_reproduces_mteb_published_scores(minilm_path, shared_data, tmp_path, capsys):
    import hpd_cli

    out = tmp_path / "out"
    code = hpd_cli.main(["eval", "mteb", "--model", minilm_path, "--data", str(shared_data / "sts-raw"),
                         "--output-folder", str(out), "--name", "sentence-transformers/all-MiniLM-L6-v2"])
    captured = capsys.readouterr()
    assert code == 0, captured.err[-2000:]
    folder = out / "sentence-transformers__all-MiniLM-L6-v2" / "no_revision_available"
    scores = {path.stem: 100 * json.loads(path.read_text())["scores"]["test"][0]["main_score"]
              for path in folder.glob("*.json") if path.name != "model_meta.json"}
    with capsys.disabled():
        print(f"\nall-MiniLM-L6-v2, mteb on the raw files: {scores}")
    for task, published in PUBLISHED_MINILM.items():
        assert abs(scores[task] - published) <= 0.02 + 1e-9, (task, scores[task], published)
    # the local SICK.txt has 9,840 pairs, MTEB's SICK-R 9,927: close to, not equal to, MTEB's figure
    assert 76.5 <= scores["SICK-R"] <= 78.5
    assert "Note: the local data of SICK-R differ from MTEB's (test num_samples is 9840 where" in captured.out
    assert "Note: the local data of STSBenchmark" not in captured.out  # the raw sts-test.csv is MTEB's
    assert (folder / "model_meta.py").is_file()


def test_malformed_name_is_one_clear_line(capsys):
    import hpd_cli

    assert hpd_cli.main(["eval", "mteb", "--model", "x", "--output-folder", "o", "--name", "no-org"]) == 1
    assert "--name 'no-org' is not a Hub id of the form ORG/NAME" in capsys.readouterr().err


def test_without_mteb_installed_the_command_names_the_extra(capsys, monkeypatch):
    import sys

    import hpd_cli

    monkeypatch.setitem(sys.modules, "mteb", None)  # import mteb now raises ImportError
    assert hpd_cli.main(["eval", "mteb", "--model", "x", "--output-folder", "o"]) == 1
    err = capsys.readouterr().err
    assert "hpd eval mteb needs the mteb package" in err and "pip install 'hpd-toolkit[eval]'" in err
    assert "Traceback" not in err
