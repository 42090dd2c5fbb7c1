"""Smoke tests: every benchmark runs end to end on tiny inputs and prints its table, so none can rot unseen."""

import json
import random

import pytest

from conftest import WORDS, run_script, tiny_model
from hpd_models import save_hpd_folder


def run_benchmark(name, *args):
    return run_script(f"benchmarks/{name}", *args)


def test_distill_benchmark_prints_before_and_after(tmp_path, tokenizer):
    save_hpd_folder(tiny_model(seed=1, embedding_dim=None), tokenizer, tmp_path / "model")
    rng = random.Random(0)
    lines = {" ".join(rng.choice(WORDS) for _ in range(rng.randint(4, 12))) + "." for _ in range(900)}
    (tmp_path / "corpus.txt").write_text("\n".join(sorted(lines)) + "\n")
    out = run_benchmark("distill.py", "--corpus", tmp_path / "corpus.txt", "--model", tmp_path / "model",
                        "--sizes", "200,400", "--pca-sentences", 100, "--compare-sentences", 100,
                        "--train-steps", 3, "--train-batch-size", 32)
    table = [line for line in out.splitlines() if line.startswith("| ")]
    assert table[0] == "| measurement | value | note |"
    assert sum("peak RAM" in line for line in table) == 2
    training = [line for line in table if "student training" in line]
    assert len(training) == 3 and "float32 (before)" in training[0] and "| 1.00x; valid MSE" in training[0]
    assert all("sentences/s" in line for line in training)


def test_encode_speed_benchmark_alternates_models(tmp_path, tokenizer, shared_data):
    for seed in (1, 2):
        save_hpd_folder(tiny_model(seed=seed), tokenizer, tmp_path / f"m{seed}")
    out = run_benchmark("encode_speed.py", "--data", shared_data / "senteval", "--model", f"a={tmp_path / 'm1'}",
                        "--model", f"b={tmp_path / 'm2'}", "--sentences", 60, "--rounds", 2,
                        "--json", tmp_path / "speed.json")
    assert "| a | " in out and "| 1.00x |" in out and "| b | " in out
    rows = json.loads((tmp_path / "speed.json").read_text())["rows"]
    assert [len(rows[name]["sentences_per_s_by_round"]) for name in "ab"] == [2, 2]
    assert rows["a"]["speed_vs_a"] == 1.0 and rows["b"]["speed_vs_a"] > 0


def test_encode_speed_benchmark_exported_rows(tmp_path, tokenizer, shared_data):
    """Torch, ONNX float32 and ONNX int8 rows of one tiny model: each exported row has its speed-up over the torch
    row of the same folder, its file size and its STS average."""
    pytest.importorskip("onnxruntime", reason="the ONNX runtime is an extra: pip install -e '.[onnx]'")
    from hpd_toolkit.training.export import export, onnx_int8_file

    save_hpd_folder(tiny_model(seed=1), tokenizer, tmp_path / "m")
    export(tmp_path / "m", quantize="int8-dynamic", progress=lambda message: None)
    out = run_benchmark("encode_speed.py", "--data", shared_data / "senteval", "--model", f"torch={tmp_path / 'm'}",
                        "--model", f"onnx={tmp_path / 'm'}@onnx",
                        "--model", f"int8={tmp_path / 'm'}@onnx:{onnx_int8_file()}", "--sentences", 40,
                        "--rounds", 2, "--sts", "--sts-tasks", "STS-B", "--json", tmp_path / "speed.json")
    assert "| int8 | onnx model_qint8_avx512_vnni.onnx |" in out and "STS avg" in out
    rows = json.loads((tmp_path / "speed.json").read_text())["rows"]
    assert rows["torch"]["speed_vs_torch_same_weights"] == 1.0
    assert all(rows[name]["speed_vs_torch_same_weights"] > 0 for name in ("onnx", "int8"))
    assert rows["int8"]["model_bytes"] == (tmp_path / "m" / onnx_int8_file()).stat().st_size
    assert rows["torch"]["model_bytes"] == (tmp_path / "m" / "model.safetensors").stat().st_size
    assert abs(rows["onnx"]["sts"]["STSBenchmark"] - rows["torch"]["sts"]["STSBenchmark"]) < 0.01


def test_eval_sts_benchmark(tmp_path, tokenizer, shared_data):
    save_hpd_folder(tiny_model(seed=1), tokenizer, tmp_path / "m")
    out = run_benchmark("eval_sts.py", "--data", shared_data / "senteval", "--model", tmp_path / "m",
                        "--tasks", "STS-B")
    assert "sentences/s" in out
