"""The STS harness on tiny synthetic data folders, with an encoder whose cosines are chosen by hand."""

import json
import math

import numpy as np
import pytest

import hpd_cli
from hpd_toolkit.eval.sts import SUBSETS, evaluate_sts, format_table, load_pairs, parse_tasks
from hpd_models import encode_distinct, load_encoder


class FixedCosineEncoder:
    """Left sentences map to (1, 0); right sentences to (c, sqrt(1 - c^2)), so each pair's cosine is c."""

    def __init__(self):
        self.vectors, self.encoded = {}, []

    def pair(self, name, cosine):
        left, right = f"{name} left", f"{name} right"
        self.vectors[left] = [1.0, 0.0]
        self.vectors[right] = [cosine, math.sqrt(max(0.0, 1 - cosine**2))]
        return left, right

    def preprocess(self, sentences):
        return {"attention_mask": np.array([[1] * len(s.split()) + [0] * (9 - len(s.split())) for s in sentences])}

    def encode(self, sentences, **kwargs):
        self.encoded.extend(sentences)
        return np.array([self.vectors[s] for s in sentences], dtype=np.float32)


def write_year(root, year, subsets, encoder):
    """SentEval layout for one year; `subsets` maps subset -> [(cosine, gold or '')]; absent subsets get 2 pairs."""
    folder = root / "STS" / f"{year}-en-test"
    folder.mkdir(parents=True, exist_ok=True)
    for subset in SUBSETS[year]:
        rows = subsets.get(subset, [(0.3, "1"), (0.7, "4")])
        pairs = [encoder.pair(f"{year} {subset} {i}", cos) for i, (cos, _) in enumerate(rows)]
        (folder / f"STS.input.{subset}.txt").write_text("".join(f"{a}\t{b}\n" for a, b in pairs))
        (folder / f"STS.gs.{subset}.txt").write_text("".join(f"{gold}\n" for _, gold in rows))
    return folder


@pytest.fixture
def sts12(tmp_path):
    encoder = FixedCosineEncoder()
    rows = {
        "MSRpar": [(0.9, "5"), (0.5, "3"), (0.1, "1"), (0.95, "")],  # the unscored pair would break the order
        "MSRvid": [(0.2, "1"), (0.4, "2"), (0.6, "3")],
        "SMTeuroparl": [(0.1, "1"), (0.2, "2")],
        "surprise.OnWN": [(0.1, "1"), (0.2, "2")],
        "surprise.SMTnews": [(0.1, "1"), (0.2, "2")],
    }
    write_year(tmp_path, "STS12", rows, encoder)
    return tmp_path, encoder


def test_all_setting_is_one_spearman_over_the_concatenated_subsets(sts12):
    data, encoder = sts12
    results = evaluate_sts(encoder, data, tasks=["STS12"], show_progress_bar=False)
    task = results["tasks"]["STS12"]
    # Every subset is perfectly ordered, so the per-subset mean is 100; pooled, the orders disagree.
    assert task["spearman_mean"] == 100 and task["spearman_wmean"] == 100
    # By hand for MSRpar + MSRvid alone: cosine ranks [6,4,1,2,3,5], gold ranks [6,4.5,1.5,1.5,3,4.5],
    # r = 16.5 / sqrt(17.5 * 16.5) = 0.97101; the three two-pair subsets add 6 more pairs below.
    cos = [0.9, 0.5, 0.1, 0.2, 0.4, 0.6] + [0.1, 0.2] * 3
    gold = [5, 3, 1, 1, 2, 3] + [1, 2] * 3
    from scipy.stats import spearmanr

    assert task["spearman"] == pytest.approx(100 * spearmanr(cos, gold).statistic, abs=1e-4)
    assert task["spearman"] < 100
    assert task["pairs"] == 12 and task["subsets"]["MSRpar"]["pairs"] == 3  # the empty gold line is skipped
    assert results["scores"] == {"STS12": round(task["spearman"], 2), "Avg": round(task["spearman"], 2)}


def test_hand_checked_spearman_of_two_subsets(tmp_path):
    encoder = FixedCosineEncoder()
    write_year(tmp_path, "STS13", {"FNWN": [(0.9, "4.5"), (0.5, "3"), (0.1, "1")],
                                   "headlines": [(0.2, "1"), (0.4, "2"), (0.6, "3")],
                                   "OnWN": [(0.99, "5"), (0.98, "4.9")]}, encoder)
    task = evaluate_sts(encoder, tmp_path, tasks=["STS13"], show_progress_bar=False)["tasks"]["STS13"]
    # cosine ranks [6,4,1,2,3,5,8,7], gold ranks [6,4.5,1.5,1.5,3,4.5,8,7]: sum dx*dy = 41, sum dx^2 = 42,
    # sum dy^2 = 41, so r = 41 / sqrt(42 * 41) = 0.988024; each subset alone is perfectly ordered.
    assert task["spearman"] == pytest.approx(100 * 41 / math.sqrt(42 * 41), abs=1e-4)
    assert task["spearman_mean"] == 100
    assert {s["spearman"] for s in task["subsets"].values()} == {100}


def test_each_distinct_sentence_is_encoded_once(sts12):
    data, encoder = sts12
    # the same sentence in two pairs, in two subsets
    folder = data / "STS" / "STS12-en-test"
    (folder / "STS.input.SMTeuroparl.txt").write_text("STS12 MSRpar 0 left\tSTS12 MSRpar 1 right\n"
                                                      "STS12 MSRpar 0 left\tSTS12 MSRpar 2 right\n")
    evaluate_sts(encoder, data, tasks=["STS12"], show_progress_bar=False)
    assert len(encoder.encoded) == len(set(encoder.encoded))


def test_senteval_rejoins_tokens_and_mteb_keeps_raw_text(tmp_path):
    encoder = FixedCosineEncoder()
    write_year(tmp_path, "STS12", {}, encoder)
    (tmp_path / "STS" / "STS12-en-test" / "STS.input.MSRpar.txt").write_text("a  girl\t is brushing  .\nb\tc\n")
    assert load_pairs(tmp_path, "senteval", ["STS12"])["STS12"]["MSRpar"].sentences2[0] == "is brushing ."

    raw = tmp_path / "raw" / "STS16"
    raw.mkdir(parents=True)
    for subset in SUBSETS["STS16"]:
        (raw / f"STS2016.input.{subset}.txt").write_text("Digital  era\tDigital Era\tsource a\tsource b\nx\ty\tz\tw\n")
        (raw / f"STS2016.gs.{subset}.txt").write_text("4\n\n")
    pairs = load_pairs(tmp_path / "raw", "mteb", ["STS16"])["STS16"]["headlines"]
    assert pairs == (["Digital  era"], ["Digital Era"], [4.0])  # extra columns ignored, unscored pair skipped


def test_table_files_with_header_and_extra_columns(tmp_path):
    (tmp_path / "STSBenchmark").mkdir()
    (tmp_path / "STSBenchmark" / "sts-test.csv").write_text(
        "g\tf\ty\t1\t2.5\tA girl.\tA kid.\n" "g\tf\ty\t2\t4.0\tTwo.\tDeux.\tsrc1\tsrc2\n")
    (tmp_path / "SICK").mkdir()
    (tmp_path / "SICK" / "SICK.txt").write_text("pair_ID\tsentence_A\tsentence_B\tentailment_label\trelatedness_score\n"
                                              "1\tA b.\tC d.\tNEUTRAL\t4.5\n")
    pairs = load_pairs(tmp_path, "mteb", ["STSBenchmark", "SICKRelatedness"])
    assert pairs["STSBenchmark"]["test"] == (["A girl.", "Two."], ["A kid.", "Deux."], [2.5, 4.0])
    assert pairs["SICKRelatedness"]["test"] == (["A b."], ["C d."], [4.5])


def test_task_names_and_aliases():
    assert parse_tasks("SICK-R,STS12,STS-B") == ["STS12", "STSBenchmark", "SICKRelatedness"]
    with pytest.raises(ValueError, match="unknown task STS99; choose from STS12"):
        parse_tasks("STS12,STS99")


def test_table_and_comparison_with_the_published_rows():
    scores = {"STS12": 74.29, "STS13": 83.05, "STS14": 78.8, "STS15": 84.62, "STS16": 81.17,
              "STSBenchmark": 84.36, "SICKRelatedness": 80.83, "Avg": 81.02}
    table = format_table({"model": "/x/my-model", "protocol": "senteval", "scores": scores}, compare=True)
    lines = table.splitlines()
    assert lines[0].split() == ["STS12", "STS13", "STS14", "STS15", "STS16", "STS-B", "SICK-R", "Avg"]
    assert lines[1].split()[0] == "my-model" and "HPD-TinyBERT-F128" in lines[2]
    assert lines[3].split()[1:] == ["+0.00"] * 8  # the evaluated scores equal the TinyBERT row
    assert "SimCSE-RoBERTa-large" in table and "+2.01" not in lines[3]


# --- bad input: one clear line ----------------------------------------------------------------

def run_eval(capsys, *args):
    code = hpd_cli.main(["eval", "sts", *args])
    return code, capsys.readouterr().err.strip()


def test_error_for_a_folder_in_the_wrong_layout(tmp_path, capsys):
    (tmp_path / "STS12").mkdir()  # raw layout handed to the senteval protocol
    code, err = run_eval(capsys, "--model", str(tmp_path), "--data", str(tmp_path))
    assert code == 1 and len(err.splitlines()) == 1
    assert "STS/STS12-en-test/STS.input.MSRpar.txt: missing" in err and "SentEval" in err


def test_error_for_a_missing_task_file(sts12, capsys):
    data, _ = sts12
    (data / "STS" / "STS12-en-test" / "STS.gs.MSRvid.txt").unlink()
    code, err = run_eval(capsys, "--model", str(data), "--data", str(data), "--tasks", "STS12")
    assert code == 1 and "STS.gs.MSRvid.txt: missing" in err


def test_error_for_gold_and_input_of_different_lengths(sts12, capsys):
    data, _ = sts12
    (data / "STS" / "STS12-en-test" / "STS.gs.MSRvid.txt").write_text("1\n2\n")
    code, err = run_eval(capsys, "--model", str(data), "--data", str(data), "--tasks", "STS12")
    assert code == 1 and "STS.gs.MSRvid.txt has 2 lines but STS.input.MSRvid.txt has 3" in err


def test_error_for_an_unknown_task(sts12, capsys):
    data, _ = sts12
    code, err = run_eval(capsys, "--model", str(data), "--data", str(data), "--tasks", "STS12,MRPC")
    assert code == 1 and "unknown task MRPC" in err


def test_error_for_a_model_folder_that_cannot_load(sts12, tmp_path, capsys):
    data, _ = sts12
    broken = tmp_path / "broken-model"
    broken.mkdir()
    (broken / "modules.json").write_text("[]")
    (broken / "config.json").write_text("{not json")
    code, err = run_eval(capsys, "--model", str(broken), "--data", str(data), "--tasks", "STS12")
    assert code == 1 and len(err.splitlines()) == 1 and "cannot be loaded as a sentence encoder" in err
    with pytest.raises(FileNotFoundError, match="no such model folder"):
        load_encoder(str(tmp_path / "absent"))


def test_error_for_a_model_that_embeds_everything_alike(sts12):
    data, encoder = sts12
    encoder.vectors = {s: [1.0, 0.0] for s in encoder.vectors}
    with pytest.raises(ValueError, match="every pair has the same cosine"):
        evaluate_sts(encoder, data, tasks=["STS12"], show_progress_bar=False)


def test_error_for_nan_embeddings(sts12):
    data, encoder = sts12
    encoder.vectors["STS12 MSRvid 1 right"] = [float("nan"), 0.0]
    with pytest.raises(ValueError, match="NaN or infinite embeddings"):
        evaluate_sts(encoder, data, tasks=["STS12"], show_progress_bar=False)
    with pytest.raises(ValueError, match="NaN"):
        encode_distinct(encoder, ["STS12 MSRvid 1 right"], show_progress_bar=False)


def test_output_json_has_the_scores_scripts_rely_on(sts12, tmp_path):
    from hpd_toolkit.eval.sts import write_results

    data, encoder = sts12
    results = evaluate_sts(encoder, data, tasks=["STS12"], show_progress_bar=False)
    write_results(results, tmp_path / "out" / "results.json")
    saved = json.loads((tmp_path / "out" / "results.json").read_text())
    assert set(saved["scores"]) == {"STS12", "Avg"} and saved["protocol"] == "senteval"
    assert {"versions", "wall_seconds", "sentences_per_s", "tasks", "distinct_sentences"} <= set(saved)
    assert saved["parameters"] is None  # a stand-in encoder without torch parameters
    assert saved["embedding_dim"] == len(encoder.encode(["STS12 MSRvid 1 right"])[0])
