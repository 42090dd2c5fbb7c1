"""Compact embeddings: --precision float32|int8|uint8|binary|ubinary, int8 ranges stored with the model, and how
quantized vectors are scored."""

import json

import numpy as np
import pytest
from conftest import WORDS, run_hpd, tiny_model
from test_eval_sts import FixedCosineEncoder, write_year

import hpd_cli
from hpd_toolkit.eval.sts import evaluate_sts
from hpd_inference import RANGES_FILE, dequantize, load_ranges, pair_similarity, quantize
from hpd_models import save_hpd_folder


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    import random

    rng = random.Random(0)
    path = tmp_path_factory.mktemp("corpus") / "corpus.txt"
    path.write_text("\n".join(" ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 12))) + "."
                              for _ in range(600)) + "\n")
    return path


@pytest.fixture(scope="module")
def calibrated(tmp_path_factory, tokenizer, corpus):
    folder = tmp_path_factory.mktemp("precision") / "tiny"
    save_hpd_folder(tiny_model(seed=5, embedding_dim=20), tokenizer, folder)
    assert hpd_cli.main(["calibrate", str(folder), "--corpus", str(corpus), "--sentences", "300"]) == 0
    return folder


def test_calibrate_stores_the_ranges_of_raw_and_unit_vectors(calibrated, corpus):
    stored = json.loads((calibrated / RANGES_FILE).read_text())
    assert stored["dim"] == 20 and stored["sentences"] == 300
    from sentence_transformers import SentenceTransformer

    from hpd_models import register_hpd_classes
    from hpd_toolkit.training.export import _calibration_sentences

    register_hpd_classes()
    vectors = SentenceTransformer(str(calibrated)).encode(_calibration_sentences([corpus], 300))
    np.testing.assert_allclose(load_ranges(calibrated), [vectors.min(0), vectors.max(0)], atol=1e-5)
    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    np.testing.assert_allclose(load_ranges(calibrated, normalized=True), [unit.min(0), unit.max(0)], atol=1e-5)


def test_int8_codes_do_not_depend_on_the_batch(calibrated, tmp_path, capsys):
    """Queries and documents encoded in separate runs share the stored buckets: a sentence gets the same codes."""
    shared = "the man plays the guitar."
    for name, others in (("a", ["a dog.", "the cat sleeps on the mat."]), ("b", ["is it 42?", "the woman runs far."])):
        code, _, err = run_hpd(capsys, "encode", "--model", calibrated, "--precision", "int8", "--output",
                           tmp_path / name, shared, *others)
        assert code == 0 and "x 20 int8" in err, err
    a, b = np.load(tmp_path / "a.npy"), np.load(tmp_path / "b.npy")
    assert a.dtype == np.int8 and np.array_equal(a[0], b[0])
    code, _, _ = run_hpd(capsys, "encode", "--model", calibrated, "--output", tmp_path / "f", shared, "a dog.")
    expected = quantize(np.load(tmp_path / "f.npy"), "int8", load_ranges(calibrated))
    np.testing.assert_array_equal(a[:2], expected)


@pytest.mark.parametrize("precision, dtype, width", [("float32", np.float32, 20), ("int8", np.int8, 20),
                                                     ("uint8", np.uint8, 20), ("binary", np.int8, 3),
                                                     ("ubinary", np.uint8, 3)])
def test_every_precision_from_the_cli(calibrated, tmp_path, capsys, precision, dtype, width):
    code, _, err = run_hpd(capsys, "encode", "--model", calibrated, "--precision", precision, "--normalize",
                       "--output", tmp_path / "e.npy", "the cat sleeps.", "a man plays the guitar!")
    assert code == 0, err
    vectors = np.load(tmp_path / "e.npy")
    assert vectors.dtype == dtype and vectors.shape == (2, width)
    code, out, _ = run_hpd(capsys, "encode", "--model", calibrated, "--precision", precision, "dog")
    assert len(out.split()) == width


def test_int8_needs_calibrated_ranges_and_fresh_ones(calibrated, tmp_path, tokenizer, capsys):
    import shutil

    folder = tmp_path / "m"
    save_hpd_folder(tiny_model(seed=6, embedding_dim=20), tokenizer, folder)
    for precision in ("int8", "uint8"):
        code, _, err = run_hpd(capsys, "encode", "--model", folder, "--precision", precision, "hello")
        assert code == 1 and f"has no {RANGES_FILE}" in err and f"hpd calibrate {folder} --corpus FILE" in err
    assert run_hpd(capsys, "encode", "--model", folder, "--precision", "binary", "hello")[0] == 0  # needs no ranges
    shutil.copy(calibrated / RANGES_FILE, folder / RANGES_FILE)  # ranges of another model's weights
    code, _, err = run_hpd(capsys, "encode", "--model", folder, "--precision", "int8", "hello")
    assert code == 1 and "calibrated on other weights" in err
    (folder / RANGES_FILE).write_text("{not json")
    code, _, err = run_hpd(capsys, "encode", "--model", folder, "--precision", "int8", "hello")
    assert code == 1 and "is damaged" in err


def test_calibrate_bad_input(calibrated, tmp_path, capsys):
    code, _, err = run_hpd(capsys, "calibrate", calibrated, "--corpus", tmp_path / "none.txt")
    assert code == 1 and "no such file or folder" in err
    (tmp_path / "few.txt").write_text("one sentence.\nanother one.\n")
    code, _, err = run_hpd(capsys, "calibrate", calibrated, "--corpus", tmp_path / "few.txt")
    assert code == 1 and "holds 2 distinct sentences; int8 ranges need at least 100" in err
    code, _, err = run_hpd(capsys, "calibrate", calibrated, "--corpus", tmp_path / "few.txt", "--sentences", 10)
    assert code == 1 and "at least 100 sentences" in err


def test_int8_decodes_to_the_middle_of_its_bucket():
    rng = np.random.default_rng(0)
    vectors = rng.uniform(-1, 1, (50, 7)).astype(np.float32)
    ranges = np.stack([vectors.min(0), vectors.max(0)])
    step = (ranges[1] - ranges[0]) / 255
    for precision in ("int8", "uint8"):
        decoded = dequantize(quantize(vectors, precision, ranges), precision, ranges)
        assert np.all(np.abs(decoded - vectors) <= step / 2 + 1e-6)  # at most half a bucket away


def test_binary_similarity_is_one_minus_twice_the_hamming_fraction():
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=(40, 13)), rng.normal(size=(40, 13))  # 13 bits: three padding bits per vector
    hamming = ((a > 0) != (b > 0)).sum(1)
    for precision in ("binary", "ubinary"):
        similarity = pair_similarity(quantize(a, precision), quantize(b, precision), precision, dim=13)
        np.testing.assert_allclose(similarity, 1 - 2 * hamming / 13, atol=1e-6)


def test_float32_similarity_is_the_cosine():
    rng = np.random.default_rng(2)
    a, b = rng.normal(size=(5, 4)), rng.normal(size=(5, 4))
    cosine = [x @ y / np.linalg.norm(x) / np.linalg.norm(y) for x, y in zip(a, b)]
    np.testing.assert_allclose(pair_similarity(a, b), cosine, atol=1e-6)


def test_eval_scores_the_stored_vectors(tmp_path):
    """Binary vectors of the hand-made encoder: right = (c, sqrt(1 - c^2)) -> bits (1, 1) whatever c, left (1, 0):
    every pair is 1 - 2 * 1/2 = 0, so the Spearman is undefined and refused, where float32 gives 100."""
    encoder = FixedCosineEncoder()
    write_year(tmp_path, "STS12", {}, encoder)
    assert evaluate_sts(encoder, tmp_path, tasks=["STS12"], show_progress_bar=False)["scores"]["STS12"] > 0
    with pytest.raises(ValueError, match="every pair has the same cosine"):
        evaluate_sts(encoder, tmp_path, tasks=["STS12"], show_progress_bar=False, precision="binary")
    with pytest.raises(ValueError, match="needs the model folder"):
        evaluate_sts(encoder, tmp_path, tasks=["STS12"], show_progress_bar=False, precision="int8")


@pytest.mark.integration
def test_default_model_sts_at_every_precision(tmp_path, shared_data, capsys):
    """The default model on STS-B: int8 within 0.3 of float32, binary loses more but still ranks."""
    import shutil

    from conftest import REPO

    source = REPO / "releases" / "HPD-MiniLM-L4-F128"
    if not (source / "model.safetensors").is_file():
        pytest.skip(f"the default model {source} is absent")
    folder = tmp_path / source.name
    shutil.copytree(source, folder)
    code, _, err = run_hpd(capsys, "calibrate", folder, "--corpus", shared_data / "corpus" / "senteval_transfer",
                       "--sentences", 3000)
    assert code == 0, err
    scores = {}
    for precision in ("float32", "int8", "binary"):
        results = evaluate_sts(str(folder), shared_data / "senteval", tasks=["STSBenchmark"],
                               show_progress_bar=False, precision=precision)
        scores[precision] = results["scores"]["STSBenchmark"]
        assert results["bytes_per_embedding"] == {"float32": 512, "int8": 128, "binary": 16}[precision]
    assert abs(scores["int8"] - scores["float32"]) <= 0.3, scores
    assert 50 < scores["binary"] < scores["float32"], scores
