"""hpd distill with real models and real text: all-MiniLM-L6-v2 teaches a 2-layer cut of itself at d = 64."""

import json

import pytest

import hpd_cli

pytestmark = pytest.mark.integration


def test_student_learns_the_projected_teacher(minilm_path, shared_data, tmp_path, capsys):
    shard = shared_data / "corpus" / "enwiki_wikitasks" / "text" / "AA" / "wiki_00"
    output = tmp_path / "student"
    code = hpd_cli.main([
        "distill", "--teacher", minilm_path, "--student", minilm_path, "--layers", "0,5",
        "--corpus", str(shard), "--max-sentences", "2000", "--valid-sentences", "500", "--pca-sentences", "1000",
        "--dim", "64", "--epochs", "1", "--batch-size", "32", "--lr", "2e-4", "--warmup-steps", "5",
        "--eval-steps", "20", "--sts-dev", str(shared_data / "senteval"), "--output", str(output)])
    assert code == 0, capsys.readouterr().err[-3000:]

    (run,) = (tmp_path / "student.work").glob("run-*")
    log = [json.loads(line) for line in (run / "train_log.jsonl").open()]
    evaluations = [record for record in log if "valid_mse" in record]
    start, best = evaluations[0], min(record["valid_mse"] for record in evaluations)
    print(f"valid MSE {start['valid_mse']:.5f} -> {best:.5f}; STS-B dev "
          f"{start['stsb_dev_spearman']} -> {evaluations[-1]['stsb_dev_spearman']}")
    assert best < 0.5 * start["valid_mse"]
    record = json.loads((output / "distill_config.json").read_text())
    assert record["corpus"]["train"] == 2000 and record["selected_by"] == "valid-mse"
    config = json.loads((output / "config.json").read_text())
    assert (config["num_hidden_layers"], config["embedding_dim"], config["hidden_size"]) == (2, 64, 384)
