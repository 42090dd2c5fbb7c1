"""Smoke test of benchmarks/retrieval.py on tiny sizes (in-process: one import of torch and faiss for both parts)."""

import importlib.util
import json

import pytest

from conftest import REPO, tiny_model
from test_eval_retrieval import write_beir
from hpd_models import save_hpd_folder

pytest.importorskip("faiss", reason="faiss-cpu is not installed: pip install -e '.[retrieval]'")


def _benchmark():
    spec = importlib.util.spec_from_file_location("retrieval_benchmark", REPO / "benchmarks" / "retrieval.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_measure_prints_ratios_to_the_teacher(tmp_path, tokenizer, capsys):
    save_hpd_folder(tiny_model(seed=1, embedding_dim=32, max_seq_length=32), tokenizer, tmp_path / "teacher")
    save_hpd_folder(tiny_model(seed=2, max_seq_length=32), tokenizer, tmp_path / "mini")
    save_hpd_folder(tiny_model(seed=3, max_seq_length=32), tokenizer, tmp_path / "hpd")
    data = write_beir(tmp_path / "beir")
    _benchmark().main(["measure", "--data", str(data), "--teacher", str(tmp_path / "teacher"), "--model",
                       f"mini={tmp_path / 'mini'}", "--hpd", str(tmp_path / "hpd"), "--json", str(tmp_path / "m.json")])
    out = capsys.readouterr().out
    table = [line for line in out.splitlines() if line.startswith("| ")]
    assert table[0].startswith("| model | nDCG@10 | Recall@100 | bytes/vector | index bytes | query p50 ms")
    labels = [line.split(" | ")[0][2:] for line in table[1:]]
    assert labels == ["teacher", "mini", "hpd float32", "hpd int8", "hpd binary", "hpd binary + rescore 100"]
    assert "| 128 (1.00x smaller) | 5,120 (1.00x smaller) |" in table[1]  # the teacher: 32-d float32, 40 documents
    assert "| 2 (64.00x smaller) | 80 (64.00x smaller) |" in table[5]  # 16-d binary: 2 bytes a vector
    assert "- index memory at float32: 2.00x (misses the goal of 6x)" in out
    assert "- index memory with binary: 64.00x (meets the goal of 48x)" in out
    assert "- end-to-end query speed (p50, one query at a time, encode + search): " in out
    # every setting of one model after the first comes from the document cache
    rows = json.loads((tmp_path / "m.json").read_text())["rows"]
    assert [row["corpus_encoding"]["cached"] for row in rows] == [False, False, False, True, True, True]

    # --reuse: the rows of unchanged models come from m.json; a changed model is measured again
    import hpd_toolkit.eval.retrieval as retrieval

    save_hpd_folder(tiny_model(seed=4, max_seq_length=32), tokenizer, tmp_path / "hpd")  # new weights
    measured, real = [], retrieval.evaluate_retrieval
    benchmark = _benchmark()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(retrieval, "evaluate_retrieval", lambda encoder, *a, **k: measured.append(a[2]) or
                      real(encoder, *a, **k))
        benchmark.main(["measure", "--data", str(data), "--teacher", str(tmp_path / "teacher"), "--model",
                        f"mini={tmp_path / 'mini'}", "--hpd", str(tmp_path / "hpd"), "--reuse",
                        str(tmp_path / "m.json"), "--json", str(tmp_path / "m2.json")])
    assert measured == ["float32", "int8", "binary", "binary"]  # only the changed model
    again = json.loads((tmp_path / "m2.json").read_text())["rows"]
    assert [r.get("reused_from") for r in again[:2]] == [str(tmp_path / "m.json")] * 2
    assert again[0]["scores"] == rows[0]["scores"] and not any(r.get("reused_from") for r in again[2:])
    assert again[2]["model_fingerprint"] != rows[2]["model_fingerprint"]
    out = capsys.readouterr().out
    assert "| teacher (reused) | " in out and "| mini (reused) | " in out and "| hpd float32 | " in out


def test_scale_reports_bytes_latency_and_what_fits(tmp_path, capsys):
    # 200 kB: at 64-d, 300 float32 vectors fit (76,800 bytes) and 1,200 do not (307,200); binary fits at both sizes
    _benchmark().main(["scale", "--sizes", "300,1200", "--dims", "64,16", "--kinds",
                       "flat-float32,hnsw-float32,flat-binary,hnsw-binary,flat-int8", "--queries", "10",
                       "--budget-gb", "0.0002", "--json", str(tmp_path / "s.json")])
    out = capsys.readouterr().out
    rows = json.loads((tmp_path / "s.json").read_text())["rows"]
    assert len(rows) == 2 * 2 * 5
    built = {(r["dim"], r["vectors"], r["index"]): r for r in rows if not r["predicted"]}
    assert built[(64, 300, "flat-float32")]["index_bytes"] == 300 * 64 * 4
    assert built[(64, 1200, "flat-binary")]["index_bytes"] == 1200 * 8
    assert built[(16, 1200, "flat-int8")]["index_bytes"] == 1200 * 16 + 2 * 16 * 4
    assert (64, 1200, "flat-float32") not in built and (64, 1200, "hnsw-float32") not in built
    assert 0 <= built[(64, 300, "hnsw-float32")]["recall_at_10_vs_exact"] <= 1
    assert all(r["search_p50_ms"] <= r["search_p95_ms"] for r in built.values())
    assert "| 64 | 1,200 | flat-float32 | ~307,200 (predicted) | | | not built | | | no (> 0.0002 GB) |" in out
    assert "- 64-d flat-float32: 256.0 bytes/vector, so at most 781 vectors fit in 0.0002 GB" in out
    assert "- 64-d float32: hnsw" in out and "- 16-d binary: hnsw" in out
