"""The reproduction's helper scripts: the PCA-head baseline, the training-curve plot, the results table."""

import importlib.util
import json
import sys

import numpy as np
import pytest

from conftest import REPO, SENTENCES, tiny_model
from modeling_hpd import HPDModel
from training.convert import save_hpd_folder
from training.distill import fit_projection


def load_script(name):
    spec = importlib.util.spec_from_file_location(name, REPO / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_pca_head_baseline_is_the_cuts_own_uncentred_pca(tmp_path, tokenizer, monkeypatch):
    base = save_hpd_folder(tiny_model(seed=3, embedding_dim=None, num_hidden_layers=3), tokenizer, tmp_path / "base")
    sentences = tmp_path / "sentences.txt"
    sentences.write_text("\n".join(SENTENCES * 4) + "\n")
    monkeypatch.setattr(sys, "argv", ["pca_head_baseline.py", "--base", str(base), "--layers", "0,2", "--dim", "4",
                                      "--sentences", str(sentences), "--output", str(tmp_path / "out")])
    load_script("pca_head_baseline").main()

    model = HPDModel.from_pretrained(tmp_path / "out")
    assert model.config.num_hidden_layers == 2 and model.config.embedding_dim == 4
    assert model.config.projection_activation == "identity"
    pooled = model.encode(SENTENCES, tokenizer=tokenizer, convert_to_numpy=False)
    model.config.embedding_dim, model.projection = None, None  # the cut itself, no head
    cut = model.encode(SENTENCES * 4, tokenizer=tokenizer)
    weight, bias = fit_projection(cut, 4, "pca")
    np.testing.assert_allclose(pooled.numpy(), cut[: len(SENTENCES)] @ weight.T + bias, atol=1e-5)


def test_training_curve_from_a_distill_output_folder(tmp_path):
    run = tmp_path / "work" / "run-abc"
    run.mkdir(parents=True)
    records = [{"step": 0, "valid_mse": 0.01, "stsb_dev_spearman": 70.0}, {"step": 50, "loss": 0.004},
               {"step": 100, "valid_mse": 0.002, "stsb_dev_spearman": 84.5}]
    (run / "train_log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "distill_config.json").write_text(json.dumps({"run_dir": str(run)}))
    plot_training = load_script("plot_training")

    evaluations = plot_training.read_evaluations(tmp_path / "model")
    assert [r["step"] for r in evaluations] == [0, 100]  # training-loss records are not evaluations
    png = plot_training.plot(evaluations, tmp_path / "curve.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    (run / "train_log.jsonl").write_text(json.dumps({"step": 50, "loss": 0.1}) + "\n")
    with pytest.raises(SystemExit, match="holds no evaluations yet"):
        plot_training.read_evaluations(run / "train_log.jsonl")


def results_file(path, scores, parameters, dim, protocol="senteval"):
    tasks = ("STS12", "STS13", "STS14", "STS15", "STS16", "STSBenchmark", "SICKRelatedness")
    data = {"protocol": protocol, "parameters": parameters, "embedding_dim": dim,
            "scores": {**dict(zip(tasks, scores)), "Avg": round(float(np.mean(scores)), 2)}}
    path.write_text(json.dumps(data))
    return path


def test_reproduction_table_rows_and_goals(tmp_path, capsys, monkeypatch):
    teacher = results_file(tmp_path / "t.json", [80.0] * 7, 109_486_464, 768)
    student = results_file(tmp_path / "s.json", [79.3] * 7, 19_090_000, 128)  # 99.1% of the teacher
    baseline = results_file(tmp_path / "b.json", [79.5] * 7, 22_713_216, 384)  # but below this one
    speed = tmp_path / "speed.json"
    speed.write_text(json.dumps({"rows": {"T": {"sentences_per_s": 30.0}, "S": {"sentences_per_s": 250.0},
                                          "B": {"sentences_per_s": 200.0}}}))
    monkeypatch.setattr(sys, "argv", ["reproduction_table.py", "--speed", str(speed), "--results", f"T={teacher}",
                                      "--results", f"S={student}", "--results", f"B={baseline}",
                                      "--teacher", "T", "--student", "S", "--baseline", "B"])
    load_script("reproduction_table").main()
    out = capsys.readouterr().out
    assert "| T | 80.00 | 80.00 | 80.00 | 80.00 | 80.00 | 80.00 | 80.00 | 80.00 | 109.5M | 768 | 30 | 3,072 |" in out
    assert "| S |" in out and "| 19.1M | 128 | 250 | 512 |" in out
    assert "| B |" in out and "| 22.7M | 384 | 200 | 1,536 |" in out
    assert "| HPD-TinyBERT-F128 (paper) | 74.29 |" in out and "| 81.02 |" in out
    assert "| ≥ 99% | average 79.30 = 99.1% of the teacher's 80.00 | yes |" in out
    assert "| ≥ 8x | CPU throughput 8.3x the teacher's (250 vs 30 sentences/s) | yes |" in out
    assert "| ≥ 1.4x | CPU throughput 1.25x B's (250 vs 200 sentences/s) | no |" in out
    assert "| ≥ 6x | embeddings 6.0x smaller (512 vs 3072 bytes) | yes |" in out
    assert "| higher | average 79.30 vs B 79.50 | no |" in out


def test_reproduction_table_refuses_the_mteb_protocol(tmp_path, monkeypatch):
    mteb = results_file(tmp_path / "m.json", [80.0] * 7, 1, 8, protocol="mteb")
    monkeypatch.setattr(sys, "argv", ["reproduction_table.py", "--results", f"M={mteb}"])
    with pytest.raises(SystemExit, match="the paper's table is the senteval protocol"):
        load_script("reproduction_table").main()


def test_ablation_table_reads_each_models_training_record(tmp_path, capsys, monkeypatch):
    model = tmp_path / "ablation-lr"
    model.mkdir()
    (model / "distill_config.json").write_text(json.dumps({
        "settings": {"teacher": ["m/all-mpnet-base-v2", "m/all-MiniLM-L6-v2"], "teacher_weights": [1.0, 0.5],
                     "layers": [0, 2, 3, 5], "epochs": 1, "lr": 2e-4, "projection": "pca-centered",
                     "head_init": "lstsq", "student_dtype": "bfloat16"},
        "corpus": {"train": 50000}, "steps": 196, "training_seconds": 390.0,
        "best_step": 147, "validation": {"valid_mse": 0.00123, "stsb_dev_spearman": 85.4321}}))
    results = results_file(tmp_path / "lr-2e-4.json", [78.0] * 6 + [81.5], 1, 128)
    monkeypatch.setattr(sys, "argv", ["ablation_table.py", f"lr-2e-4={model}", "--results", f"lr-2e-4={results}"])
    load_script("ablation_table").main()
    assert ("| lr-2e-4 | all-mpnet-base-v2 ×1 + all-MiniLM-L6-v2 ×0.5 | 0,2,3,5 | sentence | 50,000 | 1 | 0.0002 | "
            "pca-centered | lstsq | bfloat16 | 196 | 6.5 | 147 | 1.230e-03 | 85.43 | 78.50 |"
            in capsys.readouterr().out)

    monkeypatch.setattr(sys, "argv", ["ablation_table.py", f"lr-2e-4={model}"])  # no test figures: a dash
    load_script("ablation_table").main()
    assert "| 147 | 1.230e-03 | 85.43 | – |" in capsys.readouterr().out

    (model / "distill_config.json").unlink()
    with pytest.raises(SystemExit, match="distill_config.json is missing"):
        load_script("ablation_table").main()


def test_speed_quality_plot(tmp_path, monkeypatch, capsys):
    teacher = results_file(tmp_path / "t.json", [80.0] * 7, 109_486_464, 768)
    student = results_file(tmp_path / "s.json", [79.3] * 7, 19_090_000, 128)
    speed = tmp_path / "speed.json"
    speed.write_text(json.dumps({"rows": {"T": {"sentences_per_s": 30.0}, "S": {"sentences_per_s": 450.0}}}))
    argv = ["reproduction_table.py", "--speed", str(speed), "--results", f"T={teacher}", "--results", f"S={student}",
            "--plot", str(tmp_path / "plot.png")]
    monkeypatch.setattr(sys, "argv", argv)
    load_script("reproduction_table").main()
    assert (tmp_path / "plot.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    monkeypatch.setattr(sys, "argv", [a for a in argv if a not in ("--speed", str(speed))])
    with pytest.raises(SystemExit, match="--plot needs --speed"):
        load_script("reproduction_table").main()


def test_pca_ceiling_scores_the_first_k_coordinates_of_the_projected_joint_target(tmp_path, tokenizer, capsys):
    from safetensors.numpy import save_file

    from eval.sts import load_encoder, spearman_x100
    from test_matryoshka import sts_pairs, write_stsb
    from training.distill import join_teachers, projection_path

    teachers = [str(save_hpd_folder(tiny_model(seed=1, embedding_dim=24), tokenizer, tmp_path / "t1")),
                str(save_hpd_folder(tiny_model(seed=3, embedding_dim=12), tokenizer, tmp_path / "t2"))]
    pairs = sts_pairs(4)
    data = write_stsb(tmp_path / "data", "test", pairs)
    encoders = [load_encoder(t) for t in teachers]
    sample = join_teachers([e.encode(SENTENCES * 3 + [a for a, _, _ in pairs]) for e in encoders], [1.0, 0.5])
    weight, bias = fit_projection(sample, 8, "pca")
    work = tmp_path / "work"
    work.mkdir()
    save_file({"weight": weight, "bias": bias}, str(projection_path(work, "pca", 8, 100, teachers, [1.0, 0.5])))

    ceiling = load_script("pca_ceiling")
    ceiling.main(["--work-dir", str(work), *[a for t in teachers for a in ("--teacher", t)], "--teacher-weights",
                  "1,0.5", "--projection-dim", "8", "--pca-sentences", "100", "--dim", "8,3", "--data", str(data),
                  "--tasks", "STS-B", "--output", str(tmp_path / "ceiling")])
    for k in (8, 3):
        e1, e2 = ([join_teachers([e.encode([p[side] for p in pairs]) for e in encoders], [1.0, 0.5]) @ weight.T + bias
                   for side in (0, 1)])
        by_hand = spearman_x100(e1[:, :k], e2[:, :k], [gold for _, _, gold in pairs])
        results = json.loads((tmp_path / f"ceiling-d{k}.json").read_text())
        assert results["scores"]["STSBenchmark"] == pytest.approx(by_hand, abs=0.01)
        assert results["embedding_dim"] == k and f"first {k} of projection-pca-d8-n100-mix" in results["model"]
    assert "ceiling-d3.json" in capsys.readouterr().out

    with pytest.raises(SystemExit, match="projection-pca-d8-n200.* is not in .*run hpd distill with these settings"):
        ceiling.main(["--work-dir", str(work), "--teacher", teachers[0], "--projection-dim", "8", "--pca-sentences",
                      "200", "--dim", "8", "--data", str(data)])
    with pytest.raises(SystemExit, match="each size must be from 1 to --projection-dim 8"):
        ceiling.main(["--work-dir", str(work), "--teacher", teachers[0], "--projection-dim", "8", "--pca-sentences",
                      "100", "--dim", "16", "--data", str(data)])
