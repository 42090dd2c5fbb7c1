"""`hpd export` and `hpd calibrate`: an HPD model as one graph for ONNX Runtime / OpenVINO, and its int8 ranges.

The whole model (encoder, pooling, head, optional L2 normalisation) is exported by
`torch.onnx.export` (the dynamo exporter) as one graph with dynamic batch and sequence axes, inputs `input_ids`,
`attention_mask`, `token_type_ids` and output `sentence_embedding`, into the model folder in the layout of
sentence-transformers' backends:

    onnx/model.onnx                          float32
    onnx/model_qint8_avx512_vnni.onnx        int8 weights, dynamic int8 activations (onnxruntime.quantization;
                                             the name and settings of optimum's avx512_vnni config; also avx512,
                                             avx2 -> model_quint8_avx2.onnx, arm64); the feed-forward output
                                             projections stay float32 unless ffn_output="int8" (then the file
                                             name ends in _full)
    openvino/openvino_model.xml/.bin         float32 (OpenVINO's converter, from the ONNX graph)
    openvino/openvino_model_qint8_quantized.xml/.bin   int8, static: NNCF post-training quantization calibrated on
                                             sentences you give (--calibration)

Each graph records the SHA-256 of the weights it came from, so a stale export is refused at load time, and each is
checked against the PyTorch model on a ragged batch before it is written.
"""

import contextlib
import io
import json
import logging
import os
import random
import secrets
import shutil
import tempfile
import warnings
from pathlib import Path

import numpy as np

from hpd_inference import (BACKEND_FILES, OPENVINO_EXTRA, OUTPUT_NAME, RANGES_FILE, WEIGHTS_KEY, hpd_config,
                           require, weights_sha256)
from hpd_toolkit.training.output_dir import MARKER, MARKER_TEXT, write_atomic

FORMATS = ("onnx", "openvino")
QUANTIZE = ("none", "int8-dynamic", "int8-static")
# optimum's AutoQuantizationConfig presets for dynamic quantization: (file suffix, weight type, reduce_range)
ONNX_INT8_TARGETS = {
    "avx512_vnni": ("qint8_avx512_vnni", "QInt8", False),
    "avx512": ("qint8_avx512", "QInt8", False),
    "avx2": ("quint8_avx2", "QUInt8", False),
    "arm64": ("qint8_arm64", "QInt8", False),
}
OPENVINO_INT8_FILE = "openvino/openvino_model_qint8_quantized.xml"
INPUT_NAMES = ("input_ids", "attention_mask", "token_type_ids")
EXAMPLE_SENTENCES = ["A man is playing a guitar on a small stage in front of a quiet audience tonight.",
                     "Hello.", "Someone plays an instrument.", "The quick brown fox jumps over the lazy dog."]
VERIFY_ATOL = 1e-4  # float32 graph vs PyTorch (the observed difference is about 1e-6)


def onnx_int8_file(target="avx512_vnni", ffn_output="float"):
    return f"onnx/model_{ONNX_INT8_TARGETS[target][0]}{'_full' if ffn_output == 'int8' else ''}.onnx"


def _folder(model):
    folder = Path(model).expanduser()
    hpd_config(folder)  # a clear error for anything but an HPD folder
    return folder.resolve()


def export(model, format="onnx", quantize="none", calibration=None, target="avx512_vnni", overwrite=False,
           calibration_sentences=300, ffn_output="float", progress=print):
    """`hpd export`: writes the graph(s) into HPD folder `model`; returns the written paths (relative to it).

    Files hpd did not write (no `.hpd-toolkit` marker in `onnx/` or `openvino/`) are never replaced without
    `overwrite`."""
    if format not in FORMATS:
        raise ValueError(f"unknown format {format!r}; choose {' or '.join(FORMATS)}.")
    if quantize not in QUANTIZE:
        raise ValueError(f"unknown --quantize {quantize!r}; choose {', '.join(QUANTIZE)}.")
    if ffn_output not in ("float", "int8"):
        raise ValueError(f"unknown --int8-ffn-output {ffn_output!r}; choose float or int8.")
    if target not in ONNX_INT8_TARGETS:
        raise ValueError(f"unknown --target {target!r}; choose {', '.join(ONNX_INT8_TARGETS)}.")
    if format == "onnx" and quantize == "int8-static":
        raise ValueError("--quantize int8-static is for --format openvino (NNCF, calibrated); ONNX takes none or "
                         "int8-dynamic.")
    if format == "openvino" and quantize == "int8-dynamic":
        raise ValueError("--format openvino takes --quantize none or int8-static (with --calibration FILE); "
                         "int8-dynamic is ONNX Runtime's.")
    if quantize == "int8-static" and calibration is None:
        raise ValueError("--quantize int8-static needs --calibration FILE (sentences like the ones you will encode, "
                         "one per line, or any corpus hpd distill reads).")
    if calibration is not None and quantize != "int8-static":
        raise ValueError("--calibration is used by --quantize int8-static only.")
    folder = _folder(model)
    require("onnx", "hpd export")
    require("onnxruntime", "hpd export")
    require("onnxscript", "hpd export (torch.onnx's exporter)")
    if format == "openvino":
        require("openvino", "hpd export --format openvino", OPENVINO_EXTRA)
        if quantize == "int8-static":
            require("nncf", "hpd export --quantize int8-static", OPENVINO_EXTRA)
    files = [BACKEND_FILES[format]]
    if quantize == "int8-dynamic":
        files.append(onnx_int8_file(target, ffn_output))
    elif quantize == "int8-static":
        files.append(OPENVINO_INT8_FILE)
    calibration_texts = _calibration_sentences(calibration, calibration_sentences) if calibration else None
    subfolder = folder / format
    _check_writable(subfolder, files, folder, overwrite)

    from hpd_models import load_hpd

    hpd_model, tokenizer = load_hpd(folder)
    hpd_model = hpd_model.float().eval()
    sha = weights_sha256(folder)
    with tempfile.TemporaryDirectory(dir=folder, prefix=".export-") as scratch:
        scratch = Path(scratch)
        onnx_path = scratch / "model.onnx"
        progress(f"Exporting {folder.name} to ONNX (torch.onnx, dynamic batch and sequence length)...")
        export_onnx(hpd_model, tokenizer, onnx_path, sha)
        written = {}
        if format == "onnx":
            written[files[0]] = onnx_path
            if quantize == "int8-dynamic":
                progress(f"Quantizing to int8 (onnxruntime dynamic quantization, {target} settings)...")
                written[files[1]] = quantize_onnx_dynamic(onnx_path, scratch / "int8.onnx", target, sha,
                                                          hpd_model.config if ffn_output == "float" else None)
        else:
            progress("Converting to OpenVINO...")
            written[files[0]] = to_openvino(onnx_path, scratch / "openvino_model.xml", sha)
            if quantize == "int8-static":
                progress(f"Quantizing to int8 with NNCF on {len(calibration_texts)} calibration sentences...")
                written[files[1]] = quantize_openvino_static(written[files[0]], scratch / "int8.xml",
                                                             _features(tokenizer, hpd_model, calibration_texts), sha)
        for relative, produced in written.items():  # check every graph before any is moved into place
            verify(folder, produced, hpd_model, format, strict=relative == files[0])
        if not subfolder.is_dir() or not any(subfolder.iterdir()):  # a folder of someone else's stays unmarked
            subfolder.mkdir(exist_ok=True)
            (subfolder / MARKER).write_text(MARKER_TEXT, encoding="utf-8")
        for relative, produced in written.items():
            _move_into_place(produced, folder / relative)
    return files


def export_onnx(hpd_model, tokenizer, path, sha):
    """The whole model as one ONNX graph with dynamic batch and sequence axes, in one file."""
    import onnx
    import torch

    class SentenceEmbedding(torch.nn.Module):
        def __init__(self, model):
            super().__init__()
            self.model = model

        def forward(self, input_ids, attention_mask, token_type_ids):
            return self.model(input_ids=input_ids, attention_mask=attention_mask,
                              token_type_ids=token_type_ids).sentence_embedding

    # A ragged example (padding present) so that the attention and pooling masks are part of the traced graph.
    features = tokenizer(EXAMPLE_SENTENCES[:2], padding=True, truncation=True, return_tensors="pt",
                         max_length=hpd_model.config.max_seq_length)
    example = tuple(features.get(name, torch.zeros_like(features["input_ids"])).long() for name in INPUT_NAMES)
    batch = torch.export.Dim("batch")
    sequence = torch.export.Dim("sequence", max=hpd_model.config.max_seq_length)
    try:
        with torch.no_grad(), _quiet():
            program = torch.onnx.export(SentenceEmbedding(hpd_model).eval(), example, dynamo=True, external_data=False,
                                        input_names=list(INPUT_NAMES), output_names=[OUTPUT_NAME],
                                        dynamic_shapes={name: {0: batch, 1: sequence} for name in INPUT_NAMES},
                                        verbose=False)
            program.save(str(path), external_data=False)
    except Exception as error:
        raise ValueError(f"torch.onnx could not export the model ({str(error).splitlines()[0]}); run with "
                         "HPD_DEBUG=1 for the details.") from error
    graph = onnx.load(str(path))
    onnx.helper.set_model_props(graph, {WEIGHTS_KEY: sha, "hpd_output": OUTPUT_NAME})
    onnx.save(graph, str(path))
    return path


def quantize_onnx_dynamic(source, path, target, sha, keep_ffn_output=None):
    """int8 weights, activations quantized on the fly: optimum's settings for `target`, by onnxruntime itself.

    With `keep_ffn_output` (the model's config) the feed-forward down-projections (intermediate -> hidden) stay
    float32: their inputs, after GELU, hold the outliers that per-tensor activation quantisation handles worst
    (Bondarenko et al., 2021). On the default model and 300 STS-B sentences this lifts the lowest cosine to the
    float32 graph from 0.986 to 0.994, for a file of 26 instead of 19 MB."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    _suffix, weight_type, reduce_range = ONNX_INT8_TARGETS[target]
    excluded = []
    if keep_ffn_output is not None:
        graph = onnx.load(str(source))
        shapes = {tensor.name: tuple(tensor.dims) for tensor in graph.graph.initializer}
        down = (keep_ffn_output.intermediate_size, keep_ffn_output.hidden_size)
        excluded = [node.name for node in graph.graph.node
                    if node.op_type == "MatMul" and shapes.get(node.input[1]) == down]
        if len(excluded) != keep_ffn_output.num_hidden_layers:
            raise ValueError(f"found {len(excluded)} feed-forward output projections in the graph, expected one per "
                             f"layer ({keep_ffn_output.num_hidden_layers}); use --int8-ffn-output int8.")
    with _quiet():
        quantize_dynamic(source, path, per_channel=True, reduce_range=reduce_range,
                         weight_type=getattr(QuantType, weight_type), nodes_to_exclude=excluded,
                         extra_options={"WeightSymmetric": True, "ActivationSymmetric": False})
    graph = onnx.load(str(path))
    onnx.helper.set_model_props(graph, {WEIGHTS_KEY: sha, "hpd_output": OUTPUT_NAME,
                                        "hpd_quantization": f"int8-dynamic {target}, feed-forward outputs "
                                                            f"{'float32' if excluded else 'int8'}"})
    onnx.save(graph, str(path))
    return path


def to_openvino(onnx_path, xml_path, sha):
    import openvino as ov

    ov_model = ov.convert_model(str(onnx_path))
    ov_model.set_rt_info(sha, WEIGHTS_KEY)
    ov.save_model(ov_model, str(xml_path), compress_to_fp16=False)
    return xml_path


def quantize_openvino_static(xml_path, path, calibration_features, sha):
    """Post-training static int8 (weights and activations) by NNCF, its transformer preset, on the given features."""
    import nncf
    import openvino as ov

    ov_model = ov.Core().read_model(str(xml_path))
    with _quiet():
        quantized = nncf.quantize(ov_model, nncf.Dataset(calibration_features), model_type=nncf.ModelType.TRANSFORMER,
                                  subset_size=len(calibration_features))
    quantized.set_rt_info(sha, WEIGHTS_KEY)
    ov.save_model(quantized, str(path), compress_to_fp16=False)
    return path


def verify(folder, path, hpd_model, format, strict=True):
    """Runs the written graph (inside `folder`) on a ragged batch: float32 must equal PyTorch (<= VERIFY_ATOL); int8
    must keep cosine >= 0.9 (a broken quantisation, not a precise check: the tests measure real sentences)."""
    import torch

    from hpd_inference import BACKENDS

    encoder = BACKENDS[format](folder, file_name=str(Path(path).relative_to(folder)))
    features = encoder.preprocess(EXAMPLE_SENTENCES)
    got = encoder._run(features)
    with torch.no_grad():
        expected = hpd_model(**{name: torch.from_numpy(value) for name, value in features.items()}
                             ).sentence_embedding.numpy()
    if strict:
        difference = float(np.abs(got - expected).max())
        if not difference <= VERIFY_ATOL:
            raise ValueError(f"the exported graph differs from the PyTorch model by {difference:.2g} (more than "
                             f"{VERIFY_ATOL}); nothing was written. Run with HPD_DEBUG=1 and report it.")
    else:
        cosine = (got * expected).sum(1) / np.linalg.norm(got, axis=1) / np.linalg.norm(expected, axis=1)
        if not cosine.min() >= 0.9:
            raise ValueError(f"the int8 graph's embeddings have cosine {cosine.min():.3f} to the float32 ones; the "
                             "quantisation failed, nothing was written.")


def _torch_features(tokenizer, hpd_model, sentences):
    import torch

    features = tokenizer(sentences, padding=True, truncation=True, return_tensors="pt",
                         max_length=hpd_model.config.max_seq_length)
    return {name: features.get(name, torch.zeros_like(features["input_ids"])).long() for name in INPUT_NAMES}


def _features(tokenizer, hpd_model, sentences, batch_size=8):
    """Calibration batches as the runtime feeds them: numpy int64 inputs, sorted by length."""
    sentences = sorted(sentences, key=len)
    return [{name: value.numpy() for name, value in _torch_features(tokenizer, hpd_model,
                                                                     sentences[i : i + batch_size]).items()}
            for i in range(0, len(sentences), batch_size)]


def _calibration_sentences(paths, count, seed=0):
    from hpd_toolkit.training.corpus import read_corpus

    paths = [paths] if isinstance(paths, (str, Path)) else list(paths)
    for path in paths:
        if not Path(path).exists():
            raise FileNotFoundError(f"--calibration {path}: no such file or folder.")
    sentences = list(dict.fromkeys(s for s in read_corpus(paths) if s.strip()))
    if not sentences:
        raise ValueError(f"--calibration {', '.join(map(str, paths))} holds no sentences.")
    return random.Random(seed).sample(sentences, min(count, len(sentences)))


def _check_writable(subfolder, files, folder, overwrite):
    if subfolder.exists() and not subfolder.is_dir():
        raise ValueError(f"{subfolder} is a file, not a folder; move it away to export.")
    ours = (subfolder / MARKER).is_file()
    for relative in files:
        if (folder / relative).exists() and not ours and not overwrite:
            raise ValueError(f"{folder / relative} exists and was not written by hpd; move it away or pass "
                             "--overwrite.")


def _move_into_place(produced, target):
    """Moves a graph (and OpenVINO's .bin beside it) to `target` without a moment where a half file is there."""
    pairs = [(produced, target)]
    if produced.with_suffix(".bin").is_file():
        pairs.insert(0, (produced.with_suffix(".bin"), target.with_suffix(".bin")))
    for source, destination in pairs:
        temporary = destination.parent / f".{destination.name}.{secrets.token_hex(4)}.tmp"
        shutil.move(str(source), temporary)
        os.replace(temporary, destination)


@contextlib.contextmanager
def _quiet():
    """Silences the exporters' progress prints and warnings (HPD_DEBUG=1 shows them)."""
    with contextlib.ExitStack() as stack:
        if not os.environ.get("HPD_DEBUG"):
            stack.enter_context(contextlib.redirect_stdout(io.StringIO()))
            stack.enter_context(warnings.catch_warnings())
            warnings.simplefilter("ignore")
            for name in ("torch.onnx", "torch.export", "onnxscript", "nncf", "root"):
                logger = logging.getLogger(name)
                stack.callback(logger.setLevel, logger.level)
                logger.setLevel(logging.ERROR)
        yield


# --- hpd calibrate --------------------------------------------------------------------------------------------

def calibrate(model, corpus, sentences=10000, seed=0, batch_size=64, trust_remote_code=False, progress=print):
    """`hpd calibrate`: the per-dimension minimum and maximum of the model's embeddings over `sentences` sentences
    sampled from `corpus`, raw and L2-normalised, written to MODEL/embedding_ranges.json for int8/uint8."""
    from hpd_models import encode_by_length, load_encoder

    folder = Path(model).expanduser()
    if not folder.is_dir():
        raise FileNotFoundError(f"{model}: no such model folder (hpd calibrate writes into a local folder).")
    if sentences < 100:
        raise ValueError(f"--sentences {sentences}: calibrating int8 ranges needs at least 100 sentences "
                         "(10,000 is the default).")
    texts = _calibration_sentences(corpus, sentences, seed)
    if len(texts) < 100:
        raise ValueError(f"the corpus holds {len(texts)} distinct sentences; int8 ranges need at least 100.")
    encoder = load_encoder(str(folder), trust_remote_code=trust_remote_code)
    progress(f"Encoding {len(texts)} calibration sentences...")
    vectors = encode_by_length(encoder, texts, batch_size=batch_size, show_progress_bar=len(texts) > batch_size)
    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True).clip(min=1e-12)
    stored = {
        "raw": [vectors.min(0).tolist(), vectors.max(0).tolist()],
        "normalized": [unit.min(0).tolist(), unit.max(0).tolist()],
        "dim": int(vectors.shape[1]),
        "sentences": len(texts),
        "corpus": [str(Path(path)) for path in ([corpus] if isinstance(corpus, (str, Path)) else corpus)],
        "seed": seed,
        "model_sha256": weights_sha256(folder),
        "about": "Per-dimension minimum (row 0) and maximum (row 1) of this model's embeddings, for "
                 "sentence_transformers.quantize_embeddings(..., precision='int8' or 'uint8', ranges=...). "
                 "Written by hpd calibrate.",
    }
    path = folder / RANGES_FILE
    write_atomic(path, json.dumps(stored, indent=1) + "\n")
    return path
