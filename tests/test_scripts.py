"""Every file of scripts/ on tiny inputs: the demo, the reproduction's helpers and, as a dry run, its shell scripts.

SMOKE_TESTS (at the end) names the test of each file of scripts/ and benchmarks/: a new file without one fails."""

import argparse
import importlib.util
import json
import os
import random
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import REPO, SENTENCES, WORDS, run_script, tiny_model
from modeling_hpd import HPDModel
from hpd_models import save_hpd_folder
from hpd_toolkit.training.distill import fit_projection


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


def test_plot_training_command(tmp_path):
    log = tmp_path / "train_log.jsonl"
    log.write_text("".join(json.dumps({"step": step, "valid_mse": 0.01 / (step + 1)}) + "\n" for step in (0, 10, 20)))
    out = run_script("scripts/plot_training.py", log, tmp_path / "curve.png")
    assert out.strip() == f"Wrote {tmp_path / 'curve.png'}"
    assert (tmp_path / "curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    out = run_script("scripts/plot_training.py", log, log, tmp_path / "stages.png")  # a run and its continuation
    assert out.strip() == f"Wrote {tmp_path / 'stages.png'}" and (tmp_path / "stages.png").stat().st_size > 1000


def test_training_curve_of_a_continued_run_is_one_curve():
    plot_training = load_script("plot_training")
    first = [{"step": 0, "valid_mse": 3.0}, {"step": 67, "valid_mse": 2.0}, {"step": 100, "valid_mse": 1.5}]
    second = [{"step": 0, "valid_mse": 1.4}, {"step": 50, "valid_mse": 1.0}]
    evaluations, joins = plot_training.chain([first, second, second])
    assert [r["step"] for r in evaluations] == [0, 67, 100, 100, 150, 150, 200]  # a stage starts where the last ended
    assert [r["valid_mse"] for r in evaluations] == [3.0, 2.0, 1.5, 1.4, 1.0, 1.4, 1.0] and joins == [100, 150]
    assert plot_training.chain([first]) == (first, [])


def test_pca_ceiling_scores_the_first_k_coordinates_of_the_projected_joint_target(tmp_path, tokenizer, capsys):
    from safetensors.numpy import save_file

    from hpd_toolkit.eval.sts import spearman_x100
    from hpd_models import load_encoder
    from test_matryoshka import sts_pairs, write_stsb
    from hpd_toolkit.training.distill import join_teachers, projection_path

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

    # --held-out-min-words alone, on the projection --pca-min-words names: the held-out items of >= 6 words
    from scipy.stats import spearmanr

    save_file({"weight": weight, "bias": bias}, str(projection_path(work, "pca", 8, 100, teachers, [1.0, 0.5], 6)))
    (work / "sentences").mkdir()
    held_out = SENTENCES + [f"{a} and {b}" for a in SENTENCES for b in SENTENCES[:2]]
    (work / "sentences" / "valid.txt").write_text("\n".join(held_out) + "\n")
    long_ones = [t for t in held_out if len(t.split()) >= 6]
    assert 5 <= len(long_ones) < len(held_out)
    ceiling.main(["--work-dir", str(work), *[a for t in teachers for a in ("--teacher", t)], "--teacher-weights",
                  "1,0.5", "--projection-dim", "8", "--pca-sentences", "100", "--pca-min-words", "6", "--dim", "8,3",
                  "--held-out-min-words", "6"])
    out = capsys.readouterr().out
    assert f"of the {len(long_ones)} held-out items of at least 6 words" in out and "-n100-w6-mix" in out
    printed = {line.split(" | ")[0].strip("| "): line.split(" | ")[1:] for line in out.splitlines()
               if line.startswith("| 8 ") or line.startswith("| 3 ")}
    joined = join_teachers([e.encode(long_ones) for e in encoders], [1.0, 0.5]).astype(np.float64)
    cosines = lambda v: (v / np.linalg.norm(v, axis=1, keepdims=True)) @ (v / np.linalg.norm(v, axis=1, keepdims=True)).T  # noqa
    upper = np.triu_indices(len(long_ones), k=1)
    for k in (8, 3):
        projected = joined @ weight[:k].T.astype(np.float64) + bias[:k]
        by_hand = 100 * spearmanr(cosines(joined)[upper], cosines(projected)[upper]).statistic
        energy = 100 * ((projected ** 2).sum(1) / (joined ** 2).sum(1)).mean()
        assert float(printed[str(k)][0]) == pytest.approx(by_hand, abs=0.01)
        assert float(printed[str(k)][1].strip(" |")) == pytest.approx(energy, abs=0.01)
    assert float(printed["8"][1].strip(" |")) > float(printed["3"][1].strip(" |"))  # more coordinates keep more
    with pytest.raises(SystemExit, match="only 0 held-out items .* have at least 99 words"):
        ceiling.main(["--work-dir", str(work), "--teacher", teachers[0], "--projection-dim", "8", "--pca-sentences",
                      "100", "--dim", "8", "--held-out-min-words", "99"])

    # --beir alone: the target scored as a retriever, against a flat faiss search over the same vectors by hand
    faiss = pytest.importorskip("faiss", reason="faiss-cpu is not installed: pip install -e '.[retrieval]'")
    from test_eval_retrieval import write_beir
    from hpd_toolkit.eval.retrieval import document_texts, load_beir, normalize, retrieval_scores

    beir = load_beir(write_beir(tmp_path / "beir"))
    ceiling.main(["--work-dir", str(work), *[a for t in teachers for a in ("--teacher", t)], "--teacher-weights",
                  "1,0.5", "--projection-dim", "8", "--pca-sentences", "100", "--dim", "8,3", "--beir",
                  str(tmp_path / "beir")])
    printed = {line.split(" | ")[0].strip("| "): line.split(" | ")[1:] for line in capsys.readouterr().out.splitlines()
               if line.startswith("| 8 ") or line.startswith("| 3 ")}
    target = lambda texts: join_teachers([e.encode(texts) for e in encoders], [1.0, 0.5]) @ weight.T + bias  # noqa
    documents, queries = target(document_texts(beir)), target(beir.queries)
    for k in (8, 3):
        index = faiss.IndexFlatIP(k)
        index.add(normalize(documents[:, :k]))
        scores, ids = index.search(normalize(queries[:, :k]), 100)
        run = {q: {beir.doc_ids[i]: float(s) for s, i in zip(row_s, row_i) if i >= 0}
               for q, row_s, row_i in zip(beir.query_ids, scores, ids)}
        by_hand = retrieval_scores(run, beir.qrels)
        assert float(printed[str(k)][0]) == pytest.approx(100 * by_hand["ndcg_at_10"], abs=0.01)
        assert float(printed[str(k)][1].strip(" |")) == pytest.approx(100 * by_hand["recall_at_100"], abs=0.01)
    with pytest.raises(SystemExit, match="give --data .STS., --beir .retrieval. or --held-out-min-words"):
        ceiling.main(["--work-dir", str(work), "--teacher", teachers[0], "--projection-dim", "8", "--pca-sentences",
                      "100", "--dim", "8"])

    with pytest.raises(SystemExit, match="projection-pca-d8-n200.* is not in .*run hpd distill with these settings"):
        ceiling.main(["--work-dir", str(work), "--teacher", teachers[0], "--projection-dim", "8", "--pca-sentences",
                      "200", "--dim", "8", "--data", str(data)])
    with pytest.raises(SystemExit, match="each size must be from 1 to --projection-dim 8"):
        ceiling.main(["--work-dir", str(work), "--teacher", teachers[0], "--projection-dim", "8", "--pca-sentences",
                      "100", "--dim", "16", "--data", str(data)])


def test_residual_noise_scores_the_target_each_student_and_noise_of_its_size(tmp_path, tokenizer, capsys):
    from safetensors.numpy import save_file

    from hpd_toolkit.eval.sts import spearman_x100
    from hpd_models import load_encoder
    from test_matryoshka import sts_pairs, write_stsb
    from hpd_toolkit.training.distill import projection_path

    teacher = str(save_hpd_folder(tiny_model(seed=1, embedding_dim=24), tokenizer, tmp_path / "teacher"))
    student = str(save_hpd_folder(tiny_model(seed=5, embedding_dim=8), tokenizer, tmp_path / "student"))
    pairs = sts_pairs(4)
    data = write_stsb(tmp_path / "data", "dev", pairs)
    weight, bias = fit_projection(load_encoder(teacher).encode(SENTENCES * 3 + [a for a, _, _ in pairs]), 8, "pca")
    work = tmp_path / "work"
    work.mkdir()
    save_file({"weight": weight, "bias": bias}, str(projection_path(work, "pca", 8, 100, [teacher])))
    flags = ["--work-dir", str(work), "--teacher", teacher, "--projection-dim", "8", "--pca-sentences", "100",
             "--data", str(data), "--trials", "2"]

    load_script("residual_noise").main([*flags, "--student", f"tiny={student}"])
    lines = capsys.readouterr().out.splitlines()
    rows = {line.split(" | ")[0].strip("| "): line.split(" | ")[1:] for line in lines if line.startswith("| ")}
    sentences = list(dict.fromkeys([a for a, _, _ in pairs] + [b for _, b, _ in pairs]))
    target = load_encoder(teacher).encode(sentences) @ weight.T + bias
    vectors = load_encoder(student).encode(sentences)
    by_index = {s: i for i, s in enumerate(sentences)}
    first, second = ([by_index[p[side]] for p in pairs] for side in (0, 1))
    gold = [g for _, _, g in pairs]
    assert float(rows["target (a perfect copy)"][1].strip(" |")) == pytest.approx(
        spearman_x100(target[first], target[second], gold), abs=0.01)
    assert float(rows["tiny"][0]) == pytest.approx(np.mean((vectors - target) ** 2), rel=1e-3)
    assert float(rows["tiny"][1].strip(" |")) == pytest.approx(spearman_x100(vectors[first], vectors[second], gold),
                                                               abs=0.01)
    noise = [name for name in rows if name.startswith("target + ")]
    assert len(noise) == 3 and all(rows[name][0] == rows["tiny"][0] for name in noise)  # each of the student's size
    assert "STS-B dev: 30 pairs" in lines[0]

    with pytest.raises(SystemExit, match="gives 12-d vectors but the target has 8"):
        wider = save_hpd_folder(tiny_model(seed=6, embedding_dim=12), tokenizer, tmp_path / "wider")
        load_script("residual_noise").main([*flags, "--student", f"wider={wider}"])
    with pytest.raises(SystemExit, match="--student takes NAME=MODEL"):
        load_script("residual_noise").main([*flags, "--student", student])

    # --beir: the same on a retrieval test set, queries and documents each with noise of the student's error on them,
    # and --scales adds the error a closer copy would leave
    pytest.importorskip("pytrec_eval", reason="pytrec-eval-terrier is not installed: pip install -e '.[retrieval]'")
    from test_eval_retrieval import write_beir
    from hpd_toolkit.eval.retrieval import document_texts, load_beir

    exact_search_scores = load_script("pca_ceiling").exact_search_scores
    beir = load_beir(write_beir(tmp_path / "beir"))
    beir_flags = [*flags[: flags.index("--data")], "--beir", str(tmp_path / "beir"), "--trials", "2"]
    capsys.readouterr()
    load_script("residual_noise").main([*beir_flags, "--scales", "1,0.5", "--student", f"tiny={student}"])
    lines = capsys.readouterr().out.splitlines()
    rows = {line.split(" | ")[0].strip("| "): line.split(" | ")[1:] for line in lines if line.startswith("| ")}
    texts = beir.queries + document_texts(beir)
    count = len(beir.queries)
    target = load_encoder(teacher).encode(texts) @ weight.T + bias
    vectors = load_encoder(student).encode(texts)
    by_hand = lambda v: exact_search_scores(v[:count], v[count:], beir)["ndcg_at_10"]  # noqa: E731
    assert float(rows["target (a perfect copy)"][1].strip(" |")) == pytest.approx(by_hand(target), abs=0.01)
    assert float(rows["tiny"][1].strip(" |")) == pytest.approx(by_hand(vectors), abs=0.05)
    half = [name for name in rows if name.endswith("of tiny at 0.5x its size")]
    assert len(half) == 3 and all(float(rows[name][0]) == pytest.approx(0.25 * float(rows["tiny"][0]), rel=1e-3)
                                  for name in half)
    assert f"{count} queries, {len(beir.doc_ids)} documents" in lines[0] and "never chosen on" in lines[0]
    with pytest.raises(SystemExit, match="not both"):
        load_script("residual_noise").main([*flags, "--beir", str(tmp_path / "beir"), "--student", f"tiny={student}"])


def test_gpu_run_trains_on_packed_targets_without_the_teacher(tmp_path, tokenizer, capsys):
    import torch
    from safetensors.torch import load_file

    import hpd_cli
    from hpd_models import load_encoder
    from hpd_toolkit.training.distill import DistillConfig, TeacherStore, read_log_record
    from test_matryoshka import sts_pairs, write_stsb

    teacher = save_hpd_folder(tiny_model(seed=1, embedding_dim=24), tokenizer, tmp_path / "teacher")
    student = save_hpd_folder(tiny_model(seed=2, embedding_dim=None), tokenizer, tmp_path / "student")
    rng = random.Random(0)
    (tmp_path / "corpus.txt").write_text("\n".join(" ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 12)))
                                                   + "." for _ in range(400)) + "\n")
    flags = ["--teacher", str(teacher), "--student", str(student), "--corpus", str(tmp_path / "corpus.txt"),
             "--output", str(tmp_path / "unused"), "--work-dir", str(tmp_path / "work"), "--dim", "8",
             "--pca-sentences", "100", "--valid-sentences", "20", "--epochs", "1", "--batch-size", "32",
             "--warmup-steps", "3", "--eval-steps", "5", "--chunk-size", "64", "--head-init", "lstsq",
             "--sts-dev", str(write_stsb(tmp_path / "data", "dev", sts_pairs(4)))]
    gpu_run = load_script("gpu_run")
    with pytest.raises(SystemExit, match="has no projection-pca-d8-n100.safetensors: run the same hpd distill flags "
                                         "with --stop-after start first"):
        gpu_run.main(["pack", "--out", str(tmp_path / "pack"), "--", *flags])
    assert hpd_cli.main(["distill", *flags, "--stop-after", "start"]) == 0  # here: vectors, projection, the start
    with pytest.raises(SystemExit, match="over --max-mb 0.01: lower --max-sentences"):
        gpu_run.main(["pack", "--out", str(tmp_path / "pack"), "--max-mb", "0.01", "--", *flags])
    gpu_run.main(["pack", "--out", str(tmp_path / "pack"), "--", *flags])
    config = DistillConfig(**hpd_cli.distill_settings(hpd_cli.build_parser().parse_args(["distill", *flags])))
    record = json.loads((tmp_path / "pack" / "pack.json").read_text())
    count = record["valid"] + record["train"]
    assert record["valid"] == 20 and 380 <= count <= 400  # the corpus less its duplicates
    projection = load_file(str(config.projection_path()))
    stored = TeacherStore(config.teacher_dir(str(teacher)), count, 64).rows(np.arange(count))
    expected = stored @ projection["weight"].numpy().T + projection["bias"].numpy()
    np.testing.assert_allclose(np.load(tmp_path / "pack" / "targets.npy").astype(np.float32), expected, atol=2e-3)

    shutil.rmtree(teacher)  # what travels to the device: the pack and the student, never the teacher
    gpu_run.main(["train", "--pack", str(tmp_path / "pack"), "--student", str(student), "--output",
                  str(tmp_path / "trained"), "--epochs", "2", "--parts-dir", str(tmp_path / "parts")])
    trained = json.loads((tmp_path / "trained" / "distill_config.json").read_text())
    assert trained["targets_pack"]["targets_sha256"] == record["targets_sha256"] and trained["steps"] == 24
    run_dir = Path(trained["run_dir"])
    # the same student, head fitted the same way, on the same targets (float16 here): the same start as hpd distill's,
    # validated on the STS-B dev the pack carries
    here, there = read_log_record(config.run_dir(), 0), read_log_record(run_dir, 0)
    assert there["valid_mse"] == pytest.approx(here["valid_mse"], rel=1e-2)
    assert there["stsb_dev_spearman"] == pytest.approx(here["stsb_dev_spearman"], abs=0.5)
    evaluated = [json.loads(line)["step"] for line in (run_dir / "train_log.jsonl").read_text().splitlines()
                 if "valid_mse" in line]
    assert evaluated == [0, 5, 10, 15, 20, 24]  # trained and validated as hpd distill does (--eval-steps 5)
    assert load_encoder(str(tmp_path / "trained")).encode(["a man plays the guitar."]).shape == (1, 8)
    parts = sorted((tmp_path / "parts").glob("model.tar.part-*"))
    assert parts and (tmp_path / "parts" / "train_log.jsonl").is_file()
    (tmp_path / "back").mkdir()
    subprocess.run(["tar", "-x", "-C", str(tmp_path / "back")], input=b"".join(p.read_bytes() for p in parts),
                   check=True)
    assert (tmp_path / "back" / "trained" / "distill_config.json").read_text() == (
        tmp_path / "trained" / "distill_config.json").read_text()
    back = load_file(str(tmp_path / "back" / "trained" / "model.safetensors"))
    assert {tensor.dtype for tensor in back.values()} == {torch.float16}  # half the bytes on the way back
    sentences = ["a man plays the guitar.", "the cat sleeps on the mat."]
    np.testing.assert_allclose(load_encoder(str(tmp_path / "back" / "trained")).encode(sentences),
                               load_encoder(str(tmp_path / "trained")).encode(sentences), atol=2e-3)

    targets = np.load(tmp_path / "pack" / "targets.npy")
    np.save(tmp_path / "pack" / "targets.npy", targets[:-1])
    with pytest.raises(SystemExit, match="targets.npy does not match pack.json: the pack is damaged"):
        gpu_run.main(["train", "--pack", str(tmp_path / "pack"), "--student", str(student), "--output",
                      str(tmp_path / "again")])
    with pytest.raises(SystemExit, match="exists: give a new --out folder"):
        gpu_run.main(["pack", "--out", str(tmp_path / "pack"), "--", *flags])


def test_average_weights_writes_the_mean_of_every_tensor(tmp_path, tokenizer, capsys):
    import torch

    average_weights = load_script("average_weights")
    first = save_hpd_folder(tiny_model(seed=1, embedding_dim=8), tokenizer, tmp_path / "first")
    second = save_hpd_folder(tiny_model(seed=2, embedding_dim=8), tokenizer, tmp_path / "second")
    average_weights.main([str(first), str(second), "--output", str(tmp_path / "mean")])

    weights = [HPDModel.from_pretrained(folder).state_dict() for folder in (first, second, tmp_path / "mean")]
    assert weights[0].keys() == weights[2].keys()
    for name, tensor in weights[2].items():
        torch.testing.assert_close(tensor, (weights[0][name] + weights[1][name]) / 2)
    record = json.loads((tmp_path / "mean" / "averaged_from.json").read_text())
    assert [source["model"] for source in record["mean_of"]] == [str(first), str(second)]
    assert len({source["weights_sha256"] for source in record["mean_of"]}) == 2
    assert "Mean of 2 models written to" in capsys.readouterr().out

    wider = save_hpd_folder(tiny_model(seed=3, embedding_dim=12), tokenizer, tmp_path / "wider")
    with pytest.raises(SystemExit, match="differ in embedding_dim: only models of one architecture"):
        average_weights.main([str(first), str(wider), "--output", str(tmp_path / "bad")])
    (tmp_path / "theirs").mkdir()
    (tmp_path / "theirs" / "notes.txt").write_text("a user's file")
    with pytest.raises(ValueError, match="not empty and was not written by hpd"):
        average_weights.main([str(first), str(second), "--output", str(tmp_path / "theirs")])
    assert (tmp_path / "theirs" / "notes.txt").read_text() == "a user's file"
    with pytest.raises(SystemExit, match="give two or more"):
        average_weights.main([str(first), "--output", str(tmp_path / "one")])


def test_long_text_check_scores_the_student_at_each_length_against_the_target(tmp_path, tokenizer, capsys):
    from safetensors.numpy import save_file

    from hpd_models import load_encoder
    from hpd_toolkit.training.distill import projection_path

    paragraph = "The cat sleeps on the mat. A man plays the guitar. The dog runs on the mat."  # 17 words
    articles = [("Short", [paragraph]), ("Long one", [paragraph] * 3), ("Long two", [paragraph] * 4),
                ("Long three", ["A woman plays the guitar. The man sleeps. The dog is on the mat. A cat runs.",
                                paragraph])]
    wiki = tmp_path / "wiki" / "text" / "AA"
    wiki.mkdir(parents=True)
    (wiki / "wiki_00").write_text("".join(f'<doc id="{i}" title="{title}">\n{title}\n\nHeading.\n'
                                          + "\n".join(body) + "\n</doc>\n" for i, (title, body) in enumerate(articles)))
    texts = load_script("long_text_check").article_texts(tmp_path / "wiki", 10, 30, 60)
    three = " ".join([paragraph] * 3)  # 51 words: kept whole; the fourth paragraph cut after its first sentence
    assert texts[:2] == [three, three + " The cat sleeps on the mat."]  # the short article and headings dropped
    assert len(texts) == 3

    teacher = str(save_hpd_folder(tiny_model(seed=1, embedding_dim=24), tokenizer, tmp_path / "teacher"))
    student = str(save_hpd_folder(tiny_model(seed=5, embedding_dim=8), tokenizer, tmp_path / "student"))
    weight, bias = fit_projection(load_encoder(teacher).encode(SENTENCES * 3), 8, "pca")
    work = tmp_path / "work"
    work.mkdir()
    save_file({"weight": weight, "bias": bias}, str(projection_path(work, "pca", 8, 100, [teacher])))
    flags = ["--work-dir", str(work), "--teacher", teacher, "--projection-dim", "8", "--pca-sentences", "100",
             "--student", student, "--corpus", str(tmp_path / "wiki"), "--min-words", "30", "--max-words", "60"]
    load_script("long_text_check").main([*flags, "--lengths", "16,64"])
    rows = [line.split(" | ") for line in capsys.readouterr().out.splitlines() if line.startswith("| 16 ")
            or line.startswith("| 64 ")]
    target = load_encoder(teacher).encode(texts) @ weight.T + bias
    for row, length in zip(rows, (16, 64)):
        vectors = load_encoder(student, max_seq_length=length).encode(texts)
        tokens = [len(ids) for ids in tokenizer(texts)["input_ids"]]
        assert row[1] == f"{np.mean([t > length for t in tokens]):.0%}"
        assert float(row[2]) == pytest.approx(np.mean((vectors - target) ** 2), rel=1e-3)
    assert len(rows) == 2 and rows[0][1] == "100%" and rows[0][2] != rows[1][2]

    with pytest.raises(SystemExit, match="fewer than 3 articles of at least 500 words"):
        load_script("long_text_check").main([*flags[:-4], "--min-words", "500", "--max-words", "600"])
    with pytest.raises(SystemExit, match="--lengths x: give comma-separated token counts"):
        load_script("long_text_check").main([*flags, "--lengths", "x"])


# --- the demo ------------------------------------------------------------------------------------

def tiny_sentence(rng, low=3, high=9):
    return " ".join(rng.choice(WORDS) for _ in range(rng.randint(low, high)))


def test_start_search_scores_each_start_and_ranks_them(tmp_path, tokenizer, capsys):
    from hpd_toolkit.training.distill import read_log_record

    root = tmp_path / "models"
    save_hpd_folder(tiny_model(seed=1, embedding_dim=12), tokenizer, root / "teacher")
    save_hpd_folder(tiny_model(seed=3, embedding_dim=10), tokenizer, root / "teacher2")
    save_hpd_folder(tiny_model(seed=2, embedding_dim=None, num_hidden_layers=3), tokenizer, root / "student")
    rng = random.Random(0)
    (root / "corpus.txt").write_text("".join(f"{tiny_sentence(rng)}\n" for _ in range(300)))
    write_senteval(tmp_path / "senteval", pairs=12)
    flags = ["--teacher", str(root / "teacher"), "--student", str(root / "student"), "--corpus", str(root / "corpus.txt"),
             "--output", str(tmp_path / "out"), "--dim", "8", "--pca-sentences", "100", "--valid-sentences", "20",
             "--head-init", "lstsq", "--sts-dev", str(tmp_path / "senteval")]
    search = load_script("start_search")
    search.main(["--keep", "2", "--json", str(tmp_path / "cuts.json"), "--", *flags])

    ranked = json.loads((tmp_path / "cuts.json").read_text())
    assert ranked["ranked_by"] == "stsb_dev_spearman"
    assert sorted(row["layers"] for row in ranked["starts"]) == ["0,1", "0,2", "1,2"]  # every 2 of 3 layers
    scores = [row["stsb_dev_spearman"] for row in ranked["starts"]]
    assert scores == sorted(scores, reverse=True) and len({row["valid_mse"] for row in ranked["starts"]}) == 3
    for row in ranked["starts"]:  # each is its run's logged step 0, and nothing was trained
        record = read_log_record(row["run_dir"], 0)
        assert (record["valid_mse"], record["stsb_dev_spearman"]) == (row["valid_mse"], row["stsb_dev_spearman"])
        assert [json.loads(line)["step"] for line in open(f"{row['run_dir']}/train_log.jsonl")] == [0]
    assert not (tmp_path / "out").exists()
    assert f"| {ranked['starts'][0]['layers']} | default | {scores[0]:.2f} |" in capsys.readouterr().out

    # teacher weightings, on one cut: each its own target (projection) and run, ranked by STS-B dev
    two = [*flags, "--teacher", str(root / "teacher2"), "--work-dir", str(tmp_path / "work")]
    search.main(["--cuts", "0,2", "--teacher-weights", "1,1", "1,3", "--json", str(tmp_path / "weights.json"), "--",
                 *two])
    starts = json.loads((tmp_path / "weights.json").read_text())["starts"]
    assert sorted(row["teacher_weights"] for row in starts) == ["1,1", "1,3"]
    assert {row["layers"] for row in starts} == {"0,2"}
    assert starts[0]["stsb_dev_spearman"] >= starts[1]["stsb_dev_spearman"]
    assert starts[0]["run_dir"] != starts[1]["run_dir"] and starts[0]["valid_mse"] != starts[1]["valid_mse"]
    assert len(list((tmp_path / "work").glob("projection-*.safetensors"))) == 2
    assert all(json.loads(open(f"{row['run_dir']}/settings.json").read())["teacher_weights"] in ([1, 1], [1, 3])
               for row in starts)

    with pytest.raises(SystemExit):
        search.main(["--keep", "2", "--", *flags, "--layers", "0,1"])
    assert "without --layers: the search sets it" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        search.main(["--teacher-weights", "1,2", "--", *two, "--teacher-weights", "1,1"])
    assert "without --teacher-weights: the search sets it" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        search.main(["--", *flags])
    assert "give --keep or --cuts (layers), --teacher-weights, or both" in capsys.readouterr().err
    with pytest.raises(SystemExit, match="comparing teacher weightings needs --sts-dev"):
        search.main(["--teacher-weights", "1,1", "1,2", "--", *two[:-6], *two[-4:]])  # all but --sts-dev
    with pytest.raises(SystemExit, match="--keep must be between 1 and the student's 3 layers; got 4"):
        search.main(["--keep", "4", "--", *flags])
    with pytest.raises(SystemExit, match="--cuts takes comma-separated layer numbers"):
        search.main(["--cuts", "0,x", "--", *flags])

def write_senteval(root, pairs=6, seed=0):
    """A tiny folder in the SentEval layout: every file `hpd eval sts` and `hpd distill --sts-dev` read."""
    from hpd_toolkit.eval.sts import SUBSETS

    rng = random.Random(seed)
    for year, subsets in SUBSETS.items():
        folder = root / "STS" / f"{year}-en-test"
        folder.mkdir(parents=True)
        for subset in subsets:
            rows = [(tiny_sentence(rng), tiny_sentence(rng), rng.uniform(0, 5)) for _ in range(pairs)]
            (folder / f"STS.input.{subset}.txt").write_text("".join(f"{a}\t{b}\n" for a, b, _ in rows))
            (folder / f"STS.gs.{subset}.txt").write_text("".join(f"{score:.2f}\n" for *_, score in rows))
    (root / "STS" / "STSBenchmark").mkdir()
    for split in ("dev", "test"):
        (root / "STS" / "STSBenchmark" / f"sts-{split}.csv").write_text("".join(
            f"main-captions\tMSRvid\t2012test\t{i:04d}\t{rng.uniform(0, 5):.2f}\t{tiny_sentence(rng)}\t"
            f"{tiny_sentence(rng)}\n" for i in range(pairs)))
    (root / "SICK").mkdir()
    (root / "SICK" / "SICK_test_annotated.txt").write_text(
        "pair_ID\tsentence_A\tsentence_B\trelatedness_score\tentailment_judgment\n" + "".join(
            f"{i}\t{tiny_sentence(rng)}\t{tiny_sentence(rng)}\t{rng.uniform(1, 5):.2f}\tNEUTRAL\n"
            for i in range(pairs)))
    return root


def write_wiki(folder, sentences=400, seed=0):
    """A tiny WikiExtractor corpus: one shard of documents, one paragraph of 6-12-word sentences per line."""
    rng = random.Random(seed)
    lines = [tiny_sentence(rng, 6, 12).capitalize() + "." for _ in range(sentences)]
    shard = folder / "AA" / "wiki_00"
    shard.parent.mkdir(parents=True)
    shard.write_text("".join(f'<doc id="{i}" url="u" title="T">\nT\n\n{" ".join(lines[i : i + 4])}\n</doc>\n'
                             for i in range(0, len(lines), 4)))
    return folder


def test_demo_runs_the_whole_pipeline(tmp_path, tokenizer):
    """`make demo` on a tiny 6-layer teacher and tiny data (the default model is the real one in releases/)."""
    teacher = save_hpd_folder(tiny_model(seed=5, embedding_dim=None, num_hidden_layers=6, hidden_size=128,
                                         intermediate_size=128), tokenizer, tmp_path / "teacher")
    write_senteval(tmp_path / "data" / "senteval")
    write_wiki(tmp_path / "data" / "corpus" / "enwiki_wikitasks")
    out = run_script("scripts/demo.py", "--data", tmp_path / "data", "--output", tmp_path / "out", "--teacher", teacher,
                     "--sentences", 300)
    table = [line for line in out.splitlines() if line.startswith("| ")]
    assert table[0] == "| model | layers | parameters | dim | bytes/embedding | STS-B | STS Avg | encode sent/s |"
    assert [row.split(" | ")[:2] for row in table[1:]] == [["| teacher (teacher)", "6"],
                                                          ["| default model (releases/)", "4"],
                                                          ["| new student (this demo)", "2"]]
    assert "| 128 | 512 |" in table[3]
    assert "Reloaded out/release/HPD-MiniLM-L2-F128 with AutoModel(trust_remote_code=True): HPDModel, 128-d" in out
    assert (tmp_path / "out" / "release" / "HPD-MiniLM-L2-F128" / "README.md").is_file()


# --- the shell scripts, as a dry run -------------------------------------------------------------

STUB = """#!/usr/bin/env bash
{ printf '%s' "$(basename "$0")"; for a in "$@"; do printf '\\x1f%s' "$a"; done; printf '\\n'; } >> "$DRY_RUN_LOG"
if [ "$(basename "$0")" = python ] && [ "$1" = -c ]; then echo /packaged/all-MiniLM-L6-v2; fi
"""


class Parsed(Exception):
    pass


def check_script_arguments(relative, argv, monkeypatch):
    """Parses `argv` with the argument parser of scripts/ or benchmarks/ `relative` and stops there."""
    spec = importlib.util.spec_from_file_location(f"dry_run_{relative.replace('/', '_')[:-3]}", REPO / relative)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    parse_args = argparse.ArgumentParser.parse_args

    def parse_and_stop(parser, args=None, namespace=None):
        raise Parsed(parse_args(parser, args, namespace))

    with monkeypatch.context() as patch, pytest.raises(Parsed):
        patch.setattr(argparse.ArgumentParser, "parse_args", parse_and_stop)
        patch.setattr(sys, "argv", [relative, *argv])
        module.main()


def test_reproduce_and_ablations_call_only_commands_and_flags_that_exist(tmp_path, monkeypatch, capsys):
    """scripts/reproduce.sh (and the ablations.sh it runs, with ALL=1) against stub `hpd`, `python` and `make`
    that only record their arguments; then every `hpd` call is parsed by the real CLI (each `hpd distill` down to
    its DistillConfig), every script call by that script's parser, every make target looked up in the Makefile."""
    import hpd_cli
    import hpd_toolkit.training.distill

    clone = tmp_path / "repo"
    shutil.copytree(REPO / "scripts", clone / "scripts", ignore=shutil.ignore_patterns("__pycache__"))
    (clone / "models").mkdir()
    for stub in (clone / ".venv" / "bin" / "hpd", clone / ".venv" / "bin" / "python", clone / ".venv" / "bin" / "make",
                 tmp_path / "shared" / "tools" / "quiet"):
        stub.parent.mkdir(parents=True, exist_ok=True)
        stub.write_text(STUB if stub.name != "quiet" else '#!/usr/bin/env bash\nexec "$@"\n')
        stub.chmod(0o755)
    log = tmp_path / "calls.log"
    result = subprocess.run(["bash", clone / "scripts" / "reproduce.sh", tmp_path / "data", tmp_path / "work" / "wiki"],
                            capture_output=True, text=True,
                            env={**os.environ, "DRY_RUN_LOG": str(log), "ALL": "1", "MIXED": "1", "LOSS": "1",
                                 "SEARCH": "1", "WEIGHTS": "1", "TRAIN_WEIGHTS": "1,1.5",
                                 "PASSAGE_PCA": "1", "TRAIN_PASSAGE_PCA": "1",
                                 "SENTENCE_FINAL": "1"})
    assert result.returncode == 0, result.stderr
    calls = [line.split("\x1f") for line in log.read_text().splitlines()]

    configs, scripts = [], set()
    monkeypatch.setattr(hpd_toolkit.training.distill, "distill", configs.append)
    makefile = (REPO / "Makefile").read_text()
    for command, *argv in calls:
        if command == "make":
            assert all(re.search(rf"^{re.escape(target)}:", makefile, re.M) for target in argv), argv
        elif command == "hpd":
            try:
                args = hpd_cli.build_parser().parse_args(argv)
            except SystemExit:
                pytest.fail(f"hpd {' '.join(argv)}: {capsys.readouterr().err}")
            if args.command == "distill":
                args.run(args)  # builds the DistillConfig, then the stub above
        elif argv[0] != "-c":
            scripts.add(argv[0])
            check_script_arguments(argv[0], argv[1:], monkeypatch)
            if argv[0] == "scripts/start_search.py":  # the flags after -- are hpd distill's, less what it varies
                args = hpd_cli.build_parser().parse_args(["distill", *argv[argv.index("--") + 1 :]])
                args.run(args)
    # teacher vectors, the ablations (ALL=1: and the next ones; MIXED=1: sentences against mixed units), the final
    # run on mixed units, its continuation and the weighted run (rule 14), and with SENTENCE_FINAL=1 a final run on
    # sentences
    # (WEIGHTS=1: rule 14's search of the teachers' weights, and with TRAIN_WEIGHTS the weighting it chose; PASSAGE_PCA=1:
    # rule 15's two starts, and with TRAIN_PASSAGE_PCA the run on the passage-fitted target)
    assert len(configs) == 2 + 4 + 8 + 5 + 1 + 1 + 2 + 3 + 1 + 2 + 1
    following = configs[7:15]  # ALL=1 (after MIXED=1's run): each one change from two-teachers, so both teachers
    assert following[0].output.endswith("/two-teachers") and following[-1].output.endswith("/2-epochs")
    assert all(len(c.teacher) == 2 for c in following), [c.output for c in following]
    half_text = [c for c in following if c.output.endswith("half-text-2-epochs")][0]
    assert (half_text.max_sentences, half_text.pca_sentences, half_text.epochs) == (25000, 25000, 2)
    mse, cosine, similarity = configs[15:18]  # LOSS=1: each loss one change from two-teachers, with its selection
    assert mse.output.endswith("/two-teachers") and cosine.output.endswith("/cosine-loss")
    assert (mse.loss, cosine.loss, cosine.select, cosine.teacher, cosine.layers) == (
        "mse", "cosine", "valid-cosine", mse.teacher, mse.layers)
    assert (similarity.output.endswith("/similarity-loss"), similarity.loss, similarity.select, similarity.teacher,
            similarity.layers) == (True, "similarity", "valid-similarity", mse.teacher, mse.layers)
    mse_longer, longer = configs[18:20]  # and both at two epochs, as ALL=1's 2-epochs
    assert mse_longer.output.endswith("/2-epochs") and longer.output.endswith("/similarity-loss-2-epochs")
    assert (longer.loss, longer.epochs, longer.eval_steps) == ("similarity", mse_longer.epochs, mse_longer.eval_steps)
    search = configs[20]  # SEARCH=1: the starts of the 4-layer cuts, on the recipe of two-teachers
    assert search.output.endswith("/layer-search") and (search.teacher, search.head_init) == (mse.teacher, "lstsq")
    weights, weighted = configs[21:23]  # WEIGHTS=1 (rule 14): the default's first run at each weighting, one trained
    final, continued, default, final_sentences = configs[-4:]
    recipe = ("teacher", "student", "layers", "unit", "work_dir", "max_sentences", "pca_sentences", "epochs", "lr",
              "warmup_steps", "eval_steps", "head_init", "dim", "teacher_dtype", "student_dtype", "select")
    assert [getattr(weights, key) for key in recipe] == [getattr(final, key) for key in recipe]
    assert [getattr(weighted, key) for key in recipe] == [getattr(final, key) for key in recipe]
    assert (weights.output.endswith("/weight-search"), weights.teacher_weights, weighted.teacher_weights) == (
        True, None, [1.0, 1.5]) and weighted.output.endswith("/final-mixed-weights")
    own_start, passage_start, passage_run = configs[23:26]  # PASSAGE_PCA=1 (rule 15): one change, the PCA's text
    for config in (own_start, passage_start, passage_run):
        assert [getattr(config, key) for key in recipe] == [getattr(weighted, key) for key in recipe]
        assert config.teacher_weights == weighted.teacher_weights
    assert (own_start.stop_after, own_start.pca_min_words, passage_start.stop_after, passage_start.pca_min_words) == (
        "start", None, "start", 65)
    assert (passage_run.stop_after, passage_run.pca_min_words) == (None, 65)
    assert passage_run.output.endswith("/final-mixed-passage-pca")
    assert final.teacher == ["models/all-mpnet-base-v2", "models/all-MiniLM-L6-v2"] and final.epochs == 2
    assert final.unit == "mixed" and final.output.endswith("final-mixed") and final.layers == [0, 1, 3, 5]
    # rule 10: the final run's student trained on, on the same items and targets, all its layers, at lr 3e-4
    assert (continued.student, continued.layers, continued.lr, continued.output.endswith("final-mixed-continued")) == (
        final.output, None, 3e-4, True)
    assert [getattr(continued, key) for key in ("teacher", "unit", "work_dir", "max_sentences", "pca_sentences")] == [
        getattr(final, key) for key in ("teacher", "unit", "work_dir", "max_sentences", "pca_sentences")]
    assert (final_sentences.teacher, final_sentences.epochs, final_sentences.unit) == (final.teacher, 2, "sentence")
    # rule 14: the default model is step 3's recipe on the joint target with all-MiniLM-L6-v2 weighted 1.5
    assert [getattr(default, key) for key in recipe] == [getattr(final, key) for key in recipe]
    assert (default.teacher_weights, default.output.endswith("/final-mixed-weights")) == ([1.0, 1.5], True)
    released = [call for call in calls if call[:2] == ["hpd", "release"]][0]
    assert released[2] == default.output
    mixed = [c for c in configs if c.unit == "mixed"]  # passages need their own teacher vectors: another work dir
    assert len(mixed) == 9 and all(c.work_dir == str(tmp_path / "work" / "wiki-mixed") for c in mixed)
    assert scripts == {"scripts/ablation_table.py", "scripts/plot_training.py", "scripts/pca_head_baseline.py",
                       "scripts/start_search.py", "scripts/pca_ceiling.py",
                       "benchmarks/encode_speed.py", "scripts/reproduction_table.py", "benchmarks/retrieval.py"}
    assert sum(call[:3] == ["hpd", "eval", "sts"] for call in calls) >= 5 and ["make", "install", "mpnet"] in calls


# --- every script and benchmark has its smoke test -------------------------------------------------

SMOKE_TESTS = {  # file -> its test(s); "in process": the test calls main(), so `--help` checks the entry point too
    "benchmarks/distill.py": ["test_benchmarks.py::test_distill_benchmark_prints_before_and_after"],
    "benchmarks/encode_speed.py": ["test_benchmarks.py::test_encode_speed_benchmark_alternates_models",
                                   "test_benchmarks.py::test_encode_speed_benchmark_exported_rows"],
    "benchmarks/eval_sts.py": ["test_benchmarks.py::test_eval_sts_benchmark"],
    "benchmarks/retrieval.py": ["test_benchmark_retrieval.py::test_measure_prints_ratios_to_the_teacher",
                                "test_benchmark_retrieval.py::test_scale_reports_bytes_latency_and_what_fits",
                                "in process"],
    "scripts/ablation_table.py": ["test_scripts.py::test_ablation_table_reads_each_models_training_record",
                                  "in process"],
    "scripts/ablations.sh": ["test_scripts.py::test_reproduce_and_ablations_call_only_commands_and_flags_that_exist"],
    "scripts/demo.py": ["test_scripts.py::test_demo_runs_the_whole_pipeline"],
    "scripts/gpu_run.py": ["test_scripts.py::test_gpu_run_trains_on_packed_targets_without_the_teacher", "in process"],
    "scripts/average_weights.py": ["test_scripts.py::test_average_weights_writes_the_mean_of_every_tensor",
                                   "in process"],
    "scripts/install_mpnet.py": ["test_install_mpnet.py::test_the_command_installs_from_downloaded_wheels"],
    "scripts/start_search.py": ["test_scripts.py::test_start_search_scores_each_start_and_ranks_them",
                                "in process"],
    "scripts/long_text_check.py": [
        "test_scripts.py::test_long_text_check_scores_the_student_at_each_length_against_the_target", "in process"],
    "scripts/pca_ceiling.py": [
        "test_scripts.py::test_pca_ceiling_scores_the_first_k_coordinates_of_the_projected_joint_target", "in process"],
    "scripts/residual_noise.py": [
        "test_scripts.py::test_residual_noise_scores_the_target_each_student_and_noise_of_its_size", "in process"],
    "scripts/pca_head_baseline.py": ["test_scripts.py::test_pca_head_baseline_is_the_cuts_own_uncentred_pca",
                                     "in process"],
    "scripts/plot_training.py": ["test_scripts.py::test_plot_training_command"],
    "scripts/reproduce.sh": ["test_scripts.py::test_reproduce_and_ablations_call_only_commands_and_flags_that_exist"],
    "scripts/reproduction_table.py": ["test_scripts.py::test_reproduction_table_rows_and_goals", "in process"],
}


def test_every_script_and_benchmark_has_a_smoke_test():
    files = {path.relative_to(REPO).as_posix() for folder in ("scripts", "benchmarks")
             for path in (REPO / folder).iterdir() if path.is_file()}
    assert files == set(SMOKE_TESTS), "add the smoke test of each new file of scripts/ or benchmarks/ to SMOKE_TESTS"
    for tests in SMOKE_TESTS.values():
        for test in tests:
            if test != "in process":
                module, name = test.split("::")
                assert f"def {name}(" in (REPO / "tests" / module).read_text(), test


@pytest.mark.parametrize("relative", [name for name, tests in SMOKE_TESTS.items() if "in process" in tests])
def test_entry_point_of_a_file_tested_in_process(relative):
    assert run_script(relative, "--help").startswith("usage:")
