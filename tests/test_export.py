"""hpd export / hpd_inference: the whole model as one ONNX graph (float32 and int8), run without PyTorch's forward.

Tiny random models check the graph against PyTorch on ragged batches for every head (projection or none, tanh,
normalisation, each pooling); the default model checks int8 on real sentences."""

import shutil
import sys

import numpy as np
import pytest
from conftest import REPO, SENTENCES, run_hpd, tiny_model

import hpd_cli
from hpd_inference import OUTPUT_NAME, HPDOnnxEncoder, load_backend
from modeling_hpd import HPDModel
from hpd_toolkit.training.convert import save_sentence_transformers_folder
from hpd_models import save_hpd_folder
from hpd_toolkit.training.export import onnx_int8_file

pytest.importorskip("onnxruntime", reason="the ONNX runtime is an extra: pip install -e '.[onnx]'")

RAGGED = [*SENTENCES, "a", "the dog runs " * 20]  # one token ... 60+ tokens in one batch
DEFAULT_MODEL = REPO / "releases" / "HPD-MiniLM-L4-F128"
INT8 = onnx_int8_file()


@pytest.fixture(scope="module")
def exported(tmp_path_factory, tokenizer):
    """A tiny HPD folder (tanh projection to 12-d) with its float32 and int8 ONNX graphs."""
    folder = tmp_path_factory.mktemp("export") / "tiny"
    save_hpd_folder(tiny_model(seed=3, embedding_dim=12), tokenizer, folder)
    assert hpd_cli.main(["export", str(folder), "--quantize", "int8-dynamic"]) == 0
    return folder


def copy_of(folder, tmp_path):
    shutil.copytree(folder, tmp_path / folder.name)
    return tmp_path / folder.name


def test_export_writes_one_graph_per_precision_in_the_backend_layout(exported):
    import onnx

    assert sorted(p.name for p in (exported / "onnx").iterdir()) == [".hpd-toolkit", "model.onnx",
                                                                     "model_qint8_avx512_vnni.onnx"]
    for name in ("onnx/model.onnx", INT8):
        graph = onnx.load(str(exported / name), load_external_data=False)
        assert [i.name for i in graph.graph.input] == ["input_ids", "attention_mask", "token_type_ids"]
        assert [o.name for o in graph.graph.output] == [OUTPUT_NAME]
        dims = [[d.dim_param or d.dim_value for d in i.type.tensor_type.shape.dim] for i in graph.graph.input]
        assert all(isinstance(a, str) and isinstance(b, str) for a, b in dims), dims  # dynamic batch and length
        assert not any(t.data_location == onnx.TensorProto.EXTERNAL for t in graph.graph.initializer)
    quantized = onnx.load(str(exported / INT8))
    assert any(node.op_type in ("MatMulInteger", "DynamicQuantizeMatMul") for node in quantized.graph.node)
    shapes = {tensor.name: tuple(tensor.dims) for tensor in quantized.graph.initializer}
    float_ffn_outputs = [node for node in quantized.graph.node if node.op_type == "MatMul"
                         and shapes.get(node.input[1]) == (64, 32)]  # intermediate -> hidden, kept float32
    assert len(float_ffn_outputs) == 2  # one per layer


def test_int8_ffn_output_quantizes_every_weight_matmul(exported, tmp_path, capsys):
    import onnx

    folder = copy_of(exported, tmp_path)
    code, out, err = run_hpd(capsys, "export", folder, "--quantize", "int8-dynamic", "--int8-ffn-output", "int8")
    assert code == 0 and "onnx/model_qint8_avx512_vnni_full.onnx" in out, err
    graph = onnx.load(str(folder / "onnx" / "model_qint8_avx512_vnni_full.onnx"))
    constants = {tensor.name for tensor in graph.graph.initializer}
    assert not [node for node in graph.graph.node if node.op_type == "MatMul" and node.input[1] in constants]
    assert (folder / INT8).is_file()  # the other int8 file is kept


@pytest.mark.parametrize("head", [
    dict(embedding_dim=12),
    dict(embedding_dim=12, normalize=True, pooling="max"),
    dict(embedding_dim=None, pooling="cls"),
    dict(embedding_dim=8, projection_activation="identity", projection_bias=False, normalize=True),
], ids=["tanh", "normalize-max", "no-projection-cls", "identity-normalize"])
def test_float32_graph_equals_pytorch_on_ragged_batches(head, tmp_path, tokenizer, exported):
    if head == dict(embedding_dim=12):
        folder = exported
    else:
        folder = tmp_path / "model"
        save_hpd_folder(tiny_model(seed=4, **head), tokenizer, folder)
        assert hpd_cli.main(["export", str(folder)]) == 0
    model = HPDModel.from_pretrained(folder)
    encoder = HPDOnnxEncoder(folder)
    for batch_size in (1, 3, 64):
        np.testing.assert_allclose(encoder.encode(RAGGED, batch_size=batch_size), model.encode(RAGGED), atol=1e-4)
    assert encoder.encode(RAGGED).shape == (len(RAGGED), model.config.projection_dim)
    if head.get("normalize"):
        np.testing.assert_allclose(np.linalg.norm(encoder.encode(RAGGED), axis=1), 1, atol=1e-5)


def test_the_encode_api_matches_hpdmodel(exported):
    encoder, model = HPDOnnxEncoder(exported), HPDModel.from_pretrained(exported)
    single = encoder.encode("the cat sleeps on the mat.")
    assert single.shape == (12,) and np.allclose(single, model.encode("the cat sleeps on the mat."), atol=1e-4)
    unit = encoder.encode(RAGGED, normalize_embeddings=True)
    np.testing.assert_allclose(unit, model.encode(RAGGED, normalize_embeddings=True), atol=1e-4)
    tensor = encoder.encode(RAGGED, convert_to_numpy=False)
    assert type(tensor).__name__ == "Tensor" and tuple(tensor.shape) == (len(RAGGED), 12)
    assert encoder.encode([]).shape == (0, 12)


def test_int8_graph_stays_close_on_the_tiny_model(exported):
    float32 = HPDOnnxEncoder(exported).encode(RAGGED)
    int8 = load_backend(exported, "onnx", INT8).encode(RAGGED)
    cosine = (float32 * int8).sum(1) / np.linalg.norm(float32, axis=1) / np.linalg.norm(int8, axis=1)
    assert cosine.min() > 0.98 and not np.array_equal(float32, int8)


def test_cli_encode_and_eval_with_the_onnx_backend(exported, tmp_path, capsys, shared_data):
    lines = tmp_path / "in.txt"
    lines.write_text("\n".join(RAGGED) + "\n")
    for backend in ("torch", "onnx"):
        code, _, err = run_hpd(capsys, "encode", "--model", exported, "--input", lines, "--backend", backend,
                           "--output", tmp_path / f"{backend}.npy")
        assert code == 0, err
    np.testing.assert_allclose(np.load(tmp_path / "onnx.npy"), np.load(tmp_path / "torch.npy"), atol=1e-4)

    scores = {}
    for backend, file_name in (("torch", None), ("onnx", None), ("onnx", INT8)):
        code, out, err = run_hpd(capsys, "eval", "sts", "--model", exported, "--data", shared_data / "senteval",
                             "--tasks", "STS-B", "--backend", backend,
                             *(["--file-name", file_name] if file_name else []),
                             "--output", tmp_path / "r.json")
        assert code == 0, err
        import json

        results = json.loads((tmp_path / "r.json").read_text())
        assert results["backend"] == backend and results["file_name"] == file_name
        scores[file_name or backend] = results["scores"]["STSBenchmark"]
    assert "(senteval, onnx model_qint8_avx512_vnni.onnx)" in out
    assert abs(scores["onnx"] - scores["torch"]) < 0.01
    assert abs(scores[INT8] - scores["torch"]) < 2


def test_sentence_transformers_still_loads_an_exported_folder(exported):
    from sentence_transformers import SentenceTransformer

    from hpd_models import register_hpd_classes

    register_hpd_classes()
    vectors = SentenceTransformer(str(exported)).encode(RAGGED)
    np.testing.assert_allclose(vectors, HPDOnnxEncoder(exported).encode(RAGGED), atol=1e-4)


def test_export_again_replaces_its_own_files_but_not_foreign_ones(exported, tmp_path, capsys):
    folder = copy_of(exported, tmp_path)
    code, out, err = run_hpd(capsys, "export", folder)
    assert code == 0 and "Wrote" in out and "checked against the PyTorch model" in out, err
    (folder / "onnx" / ".hpd-toolkit").unlink()
    (folder / "onnx" / "model.onnx").write_bytes(b"someone else's model")
    code, _, err = run_hpd(capsys, "export", folder)
    assert code == 1 and "was not written by hpd" in err and "--overwrite" in err
    assert (folder / "onnx" / "model.onnx").read_bytes() == b"someone else's model"
    assert run_hpd(capsys, "export", folder, "--overwrite")[0] == 0
    np.testing.assert_allclose(HPDOnnxEncoder(folder).encode(RAGGED), HPDModel.from_pretrained(folder).encode(RAGGED),
                               atol=1e-4)


# --- bad input: one line naming the problem and the fix -------------------------------------------------

def test_a_folder_that_is_not_hpd(tmp_path, tokenizer, capsys):
    st_folder = tmp_path / "st"
    save_sentence_transformers_folder(tiny_model(seed=1), tokenizer, st_folder)
    for args in (["export", st_folder], ["encode", "--model", st_folder, "--backend", "onnx", "hi"]):
        code, _, err = run_hpd(capsys, *args)
        assert code == 1 and "is not an HPD folder" in err and "hpd convert" in err
    assert not (st_folder / "onnx").exists()
    code, _, err = run_hpd(capsys, "export", tmp_path / "missing")
    assert code == 1 and "no such model folder" in err


@pytest.mark.parametrize("args, message", [
    (["--format", "tflite"], "unknown format 'tflite'; choose onnx or openvino"),
    (["--quantize", "int4"], "unknown --quantize 'int4'; choose none, int8-dynamic, int8-static"),
    (["--quantize", "int8-static"], "int8-static is for --format openvino"),
    (["--quantize", "int8-dynamic", "--target", "avx9000"], "unknown --target 'avx9000'"),
    (["--format", "openvino", "--quantize", "int8-static"], "needs --calibration FILE"),
])
def test_unknown_export_options(exported, capsys, args, message):
    code, _, err = run_hpd(capsys, "export", exported, *args)
    assert code == 1 and message in err


@pytest.mark.parametrize("args, message", [
    (["--backend", "tensorrt"], "unknown backend 'tensorrt'; choose torch, onnx, openvino"),
    (["--precision", "int4"], "unknown precision 'int4'; choose one of float32, int8, uint8, binary, ubinary"),
    (["--backend", "onnx", "--file-name", "onnx/model_fp16.onnx"], "model_fp16.onnx: missing; export the model first"),
    (["--file-name", INT8], "--file-name chooses an exported graph: use it with --backend onnx or openvino"),
])
def test_unknown_encode_options(exported, capsys, args, message):
    code, _, err = run_hpd(capsys, "encode", "--model", exported, "hello", *args)
    assert code == 1 and message in err


def test_missing_runtime_names_the_extra(exported, capsys, monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import onnxruntime now raises ImportError
    for args in (["encode", "--model", exported, "--backend", "onnx", "hi"], ["export", copy_of(exported, tmp_path)]):
        code, _, err = run_hpd(capsys, *args)
        assert code == 1 and "needs the onnxruntime package" in err and "pip install 'hpd-toolkit[onnx]'" in err


@pytest.mark.parametrize("damage", ["garbage", "truncated", "empty"])
def test_a_corrupt_onnx_file(exported, tmp_path, capsys, damage):
    folder = copy_of(exported, tmp_path)
    path = folder / "onnx" / "model.onnx"
    path.write_bytes({"garbage": b"\x00not an onnx model\xff" * 50, "empty": b"",
                      "truncated": path.read_bytes()[: path.stat().st_size // 2]}[damage])
    code, _, err = run_hpd(capsys, "encode", "--model", folder, "--backend", "onnx", "hello")
    assert code == 1 and "model.onnx cannot be read by ONNX Runtime" in err and "export it again" in err


def test_a_stale_export_is_refused(exported, tmp_path, tokenizer, capsys):
    folder = copy_of(exported, tmp_path)
    retrained = tiny_model(seed=9, embedding_dim=12)
    (folder / "model.safetensors").unlink()
    save_hpd_folder(retrained, tokenizer, folder)  # new weights, the old onnx/ left behind
    code, _, err = run_hpd(capsys, "encode", "--model", folder, "--backend", "onnx", "hello")
    assert code == 1 and "was exported from other weights" in err and f"hpd export {folder}" in err


def test_a_graph_hpd_did_not_export_is_refused(exported, tmp_path, capsys):
    import onnx

    folder = copy_of(exported, tmp_path)
    graph = onnx.load(str(folder / "onnx" / "model.onnx"))
    del graph.metadata_props[:]
    onnx.save(graph, str(folder / "onnx" / "model.onnx"))
    code, _, err = run_hpd(capsys, "encode", "--model", folder, "--backend", "onnx", "hello")
    assert code == 1 and "it was not written by hpd export" in err and "export it again" in err


# --- real sentences on the default model ---------------------------------------------------------------

@pytest.fixture(scope="module")
def default_model_exported(tmp_path_factory):
    if not (DEFAULT_MODEL / "model.safetensors").is_file():
        pytest.skip(f"the default model {DEFAULT_MODEL} is absent")
    folder = tmp_path_factory.mktemp("default") / DEFAULT_MODEL.name
    shutil.copytree(DEFAULT_MODEL, folder)
    assert hpd_cli.main(["export", str(folder), "--quantize", "int8-dynamic"]) == 0
    return folder


@pytest.mark.integration
def test_default_model_float32_and_int8_on_real_sentences(default_model_exported, shared_data):
    from hpd_toolkit.eval.sts import load_pairs

    pairs = load_pairs(shared_data / "senteval", "senteval", ["STSBenchmark"])["STSBenchmark"]["test"]
    sentences = sorted(set(pairs.sentences1[:150] + pairs.sentences2[:150]))
    reference = HPDModel.from_pretrained(default_model_exported).encode(sentences, batch_size=32)
    float32 = HPDOnnxEncoder(default_model_exported).encode(sentences, batch_size=32)
    np.testing.assert_allclose(float32, reference, atol=1e-4)
    int8 = HPDOnnxEncoder(default_model_exported, file_name=INT8).encode(sentences, batch_size=32)
    cosine = (float32 * int8).sum(1) / np.linalg.norm(float32, axis=1) / np.linalg.norm(int8, axis=1)
    assert cosine.min() >= 0.99, cosine.min()
    sizes = {name: (default_model_exported / name).stat().st_size for name in ("onnx/model.onnx", INT8)}
    assert sizes[INT8] < 0.4 * sizes["onnx/model.onnx"]  # the feed-forward outputs stay float32


@pytest.mark.integration
def test_packaged_minilm_converted_to_hpd_exports_with_normalize_and_no_projection(minilm_path, tmp_path):
    from hpd_toolkit.training.convert import convert

    folder = convert(minilm_path, tmp_path / "minilm-hpd")
    model = HPDModel.from_pretrained(folder)
    assert model.config.normalize and model.config.embedding_dim is None
    assert hpd_cli.main(["export", str(folder)]) == 0
    sentences = ["A man is playing a guitar.", "Someone plays an instrument on a stage tonight, loudly.", "Hi"]
    np.testing.assert_allclose(HPDOnnxEncoder(folder).encode(sentences), model.encode(sentences), atol=1e-4)


# --- OpenVINO -------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def openvino_exported(exported, tmp_path_factory):
    pytest.importorskip("openvino", reason="OpenVINO is an extra: pip install -e '.[openvino]'")
    pytest.importorskip("nncf", reason="NNCF is an extra: pip install -e '.[openvino]'")
    import random

    from conftest import WORDS

    folder = tmp_path_factory.mktemp("openvino") / "tiny"
    shutil.copytree(exported, folder)
    rng = random.Random(0)
    calibration = folder.parent / "calibration.txt"
    calibration.write_text("\n".join(" ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 14))) + "."
                                      for _ in range(120)) + "\n")
    assert hpd_cli.main(["export", str(folder), "--format", "openvino"]) == 0
    assert hpd_cli.main(["export", str(folder), "--format", "openvino", "--quantize", "int8-static",
                         "--calibration", str(calibration)]) == 0
    return folder


def test_openvino_float32_equals_pytorch_and_static_int8_stays_close(openvino_exported):
    from hpd_inference import HPDOpenVINOEncoder
    from hpd_toolkit.training.export import OPENVINO_INT8_FILE

    names = sorted(p.name for p in (openvino_exported / "openvino").iterdir())
    assert names == [".hpd-toolkit", "openvino_model.bin", "openvino_model.xml", "openvino_model_qint8_quantized.bin",
                     "openvino_model_qint8_quantized.xml"]
    reference = HPDModel.from_pretrained(openvino_exported).encode(RAGGED)
    for batch_size in (1, 3, 64):
        np.testing.assert_allclose(HPDOpenVINOEncoder(openvino_exported).encode(RAGGED, batch_size=batch_size),
                                   reference, atol=1e-4)
    int8 = load_backend(openvino_exported, "openvino", OPENVINO_INT8_FILE).encode(RAGGED)
    cosine = (int8 * reference).sum(1) / np.linalg.norm(int8, axis=1) / np.linalg.norm(reference, axis=1)
    assert cosine.min() > 0.98 and not np.allclose(int8, reference, atol=1e-4)


def test_openvino_from_the_cli_and_its_bad_input(openvino_exported, tmp_path, capsys, monkeypatch):
    code, out, err = run_hpd(capsys, "encode", "--model", openvino_exported, "--backend", "openvino", *RAGGED[:3])
    assert code == 0, err
    printed = np.array([[float(x) for x in line.split()] for line in out.splitlines()])
    np.testing.assert_allclose(printed, HPDModel.from_pretrained(openvino_exported).encode(RAGGED[:3]), atol=1e-4)

    code, _, err = run_hpd(capsys, "export", openvino_exported, "--format", "openvino", "--quantize", "int8-dynamic")
    assert code == 1 and "--format openvino takes --quantize none or int8-static" in err
    folder = copy_of(openvino_exported, tmp_path)
    (folder / "openvino" / "openvino_model.xml").write_text("<net><broken")
    code, _, err = run_hpd(capsys, "encode", "--model", folder, "--backend", "openvino", "hello")
    assert code == 1 and "cannot be read by OpenVINO" in err and "export it again" in err
    monkeypatch.setitem(sys.modules, "openvino", None)
    code, _, err = run_hpd(capsys, "encode", "--model", openvino_exported, "--backend", "openvino", "hello")
    assert code == 1 and "needs the openvino package" in err and "pip install 'hpd-toolkit[openvino]'" in err


# --- hpd release --export ------------------------------------------------------------------------------

def test_release_ships_the_exported_graphs_and_shows_how_to_run_them(exported, tmp_path, capsys):
    pytest.importorskip("openvino", reason="OpenVINO is an extra: pip install -e '.[openvino]'")
    from huggingface_hub import ModelCard

    from hpd_toolkit.training.hub_push import files_to_push
    from hpd_toolkit.training.release import NOT_PUSHED, check_release

    source = tmp_path / "source"
    shutil.copytree(exported, source, ignore=shutil.ignore_patterns("onnx"))
    code, out, err = run_hpd(capsys, "release", source, "--out", tmp_path / "release", "--repo-id", "org/tiny",
                         "--export", "onnx,openvino")
    assert code == 0, err
    release = tmp_path / "release"
    pushed = set(files_to_push(release, NOT_PUSHED))
    assert {"onnx/model.onnx", INT8, "openvino/openvino_model.xml", "openvino/openvino_model.bin"} <= pushed
    assert not any(name.endswith(".hpd-toolkit") for name in pushed)
    card = ModelCard.load(release / "README.md").text
    assert 'hf_hub_download("org/tiny", "onnx/model_qint8_avx512_vnni.onnx")' in card
    assert "HPDOpenVINOEncoder(folder)" in card
    assert check_release(release) == []
    (release / "onnx" / "model.onnx").write_bytes(b"broken")
    assert any("onnx/model.onnx" in problem and "cannot be read" in problem for problem in check_release(release))
    code, _, err = run_hpd(capsys, "release", source, "--out", tmp_path / "r2", "--repo-id", "org/tiny",
                       "--export", "onnx,tflite")
    assert code == 1 and "unknown format tflite" in err
