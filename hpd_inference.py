"""Exported HPD models without PyTorch, and compact embeddings.

- `HPDOnnxEncoder`, `HPDOpenVINOEncoder` (or `load_backend(folder, "onnx" | "openvino")`): the one-graph model that
  `hpd export` wrote into an HPD folder (`onnx/model.onnx`, `onnx/model_qint8_avx512_vnni.onnx`,
  `openvino/openvino_model.xml`, ...), run by ONNX Runtime or OpenVINO with `HPDModel.encode`'s API, plus
  `precision`.
- `quantize`, `pair_similarity`, `load_ranges`: float32, int8, uint8, binary or ubinary vectors through
  sentence-transformers' `quantize_embeddings`, with the int8/uint8 ranges that `hpd calibrate` stored in the model
  folder (`embedding_ranges.json`), so that queries and documents encoded at different times share them.

Needs numpy, transformers' tokenizer and the backend's runtime (`pip install 'hpd-toolkit[onnx]'`), not torch.
"""

import functools
import hashlib
import json
import os
from pathlib import Path

import numpy as np

PRECISIONS = ("float32", "int8", "uint8", "binary", "ubinary")
RANGES_FILE = "embedding_ranges.json"
EXTRA = "pip install 'hpd-toolkit[onnx]'"
OPENVINO_EXTRA = "pip install 'hpd-toolkit[openvino]'"
OUTPUT_NAME = "sentence_embedding"
WEIGHTS_KEY = "hpd_weights_sha256"  # metadata of an exported graph: the weights it was exported from
BACKEND_FILES = {"onnx": "onnx/model.onnx", "openvino": "openvino/openvino_model.xml"}


def require(module, purpose, extra=EXTRA):
    """Imports `module` or says in one line which extra installs it."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as error:
        raise ValueError(f"{purpose} needs the {module.split('.')[0]} package, which is not installed ({error}): "
                         f"{extra}") from None


def weights_sha256(folder):
    """SHA-256 over a model folder's weight files (paths and bytes): which model a file derived from it belongs to.

    Exported graphs (`openvino/` holds OpenVINO's weights as a .bin file) and hidden scratch folders are no part
    of it."""
    digest = hashlib.sha256()
    for path in sorted(Path(folder).rglob("*")):
        relative = path.relative_to(folder)
        if path.suffix in (".safetensors", ".bin") and path.is_file() and relative.parts[0] != "openvino" \
                and not relative.parts[0].startswith("."):
            digest.update(str(relative).encode())
            hash_file(digest, path)
    return digest.hexdigest()


def hash_file(digest, path):
    """Feeds the bytes of the file at `path` to `digest`, a block at a time (weights and corpora can be large)."""
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)


def hpd_config(folder):
    """config.json of an HPD folder; a clear error for anything else."""
    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: no such model folder.")
    try:
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (FileNotFoundError, json.JSONDecodeError, UnicodeDecodeError):
        config = {}
    if config.get("model_type") != "hpd":
        raise ValueError(f"{folder} is not an HPD folder (no config.json with model_type 'hpd'); convert the model "
                         f"first: hpd convert {folder} OUT, then use OUT.")
    return config


# --- compact embeddings -------------------------------------------------------------------------------------

def check_precision(precision):
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; choose one of {', '.join(PRECISIONS)}.")
    return precision


def load_ranges(folder, normalized=False, dim=None):
    """The `(2, dim)` int8/uint8 ranges (per-dimension minimum and maximum) calibrated for the model in `folder`;
    with `dim`, those of the first `dim` coordinates (embeddings truncated to a Matryoshka size)."""
    folder = Path(folder).expanduser()
    path = folder / RANGES_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{folder} has no {RANGES_FILE}: int8 and uint8 need ranges calibrated once for the "
                                f"model; run hpd calibrate {folder} --corpus FILE.")
    try:
        stored = json.loads(path.read_text(encoding="utf-8"))
        ranges = np.array(stored["normalized" if normalized else "raw"], dtype=np.float32)
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError, ValueError):
        raise ValueError(f"{path} is damaged (expected 'raw' and 'normalized' ranges); run hpd calibrate {folder} "
                         "--corpus FILE again.") from None
    if ranges.ndim != 2 or ranges.shape[0] != 2 or not np.isfinite(ranges).all():
        raise ValueError(f"{path} is damaged (ranges must be two finite rows); run hpd calibrate again.")
    if stored.get("model_sha256") != weights_sha256(folder):
        raise ValueError(f"{path} was calibrated on other weights than {folder} holds now; run hpd calibrate {folder} "
                         "--corpus FILE again.")
    if dim is not None and dim < ranges.shape[1]:
        if normalized:  # a truncated vector normalised again has other ranges than the prefix of a unit vector
            raise ValueError(f"{path} holds the ranges of unit vectors of all {ranges.shape[1]} dimensions, not of "
                             f"vectors cut to {dim} and then normalised; drop --normalize (cosine scores are the same) "
                             "or use --precision binary.")
        ranges = ranges[:, :dim]
    return ranges


def quantize(embeddings, precision, ranges=None):
    """float32 `(n, dim)` embeddings at `precision` (sentence-transformers' quantize_embeddings).

    int8/uint8 need the model's calibrated `ranges` (never the batch's own: a query would get other buckets than
    the documents); binary/ubinary keep the sign bits, packed 8 to a byte."""
    check_precision(precision)
    if precision == "float32":
        return np.asarray(embeddings, dtype=np.float32)
    if precision in ("int8", "uint8") and ranges is None:
        raise ValueError(f"{precision} needs calibrated ranges (load_ranges(folder) after hpd calibrate).")
    if ranges is not None and precision in ("int8", "uint8") and ranges.shape[1] != np.shape(embeddings)[-1]:
        raise ValueError(f"the ranges are {ranges.shape[1]}-d but the embeddings {np.shape(embeddings)[-1]}-d: "
                         "they belong to another model; run hpd calibrate again.")
    from sentence_transformers import quantize_embeddings

    return quantize_embeddings(np.asarray(embeddings, dtype=np.float32), precision=precision, ranges=ranges)


def dequantize(vectors, precision, ranges=None, dim=None):
    """Float vectors that quantized `vectors` stand for: int8/uint8 -> the middle of each bucket (what a
    per-dimension scalar quantiser such as faiss' SQ8 decodes), binary/ubinary -> +1/-1 per bit (`dim` drops the
    padding bits)."""
    vectors = np.asarray(vectors)
    if precision == "float32":
        return vectors.astype(np.float32)
    if precision in ("int8", "uint8"):
        codes = vectors.astype(np.float64) + (128 if precision == "int8" else 0)
        steps = (ranges[1] - ranges[0]).astype(np.float64) / 255
        steps = np.where(steps == 0, 1, steps)
        return (ranges[0] + (codes + 0.5) * steps).astype(np.float32)
    packed = (vectors.astype(np.int16) + 128).astype(np.uint8) if precision == "binary" else vectors.astype(np.uint8)
    bits = np.unpackbits(packed, axis=-1)
    if dim is not None:
        bits = bits[..., :dim]
    return bits.astype(np.float32) * 2 - 1


def pair_similarity(a, b, precision="float32", ranges=None, dim=None):
    """Row-wise similarity of two equally long arrays of embeddings stored at `precision`.

    float32, int8, uint8: cosine of the (decoded) vectors. binary, ubinary: 1 - 2 * hamming / dim, i.e. the cosine
    of the +1/-1 sign vectors (a Hamming index ranks the same way)."""
    a, b = dequantize(a, precision, ranges, dim), dequantize(b, precision, ranges, dim)
    a = a / np.linalg.norm(a, axis=1, keepdims=True).clip(min=1e-12)
    b = b / np.linalg.norm(b, axis=1, keepdims=True).clip(min=1e-12)
    return (a * b).sum(axis=1)


# --- exported graphs ----------------------------------------------------------------------------------------

class _ExportedEncoder:
    """Tokenizer + one exported graph (encoder, pooling, head, optional normalisation). A backend names itself
    (`backend`, `runtime`) and runs the graph: `_load(threads)`, `_metadata()` (stored strings), `_run(features)`."""

    backend = None

    def __init__(self, model, file_name=None, threads=None):
        self.folder = Path(model).expanduser()
        self.config = hpd_config(self.folder)
        self.file_name = file_name or BACKEND_FILES[self.backend]
        self.path = self.folder / self.file_name
        if not self.path.is_file():
            raise FileNotFoundError(f"{self.path}: missing; export the model first: hpd export {self.folder} "
                                    f"--format {self.backend}.")
        if threads is None and os.environ.get("OMP_NUM_THREADS", "").isdigit():
            threads = int(os.environ["OMP_NUM_THREADS"])  # as torch does
        self._load(threads)
        exported_from = self._metadata().get(WEIGHTS_KEY)
        again = f"export it again: hpd export {self.folder} --format {self.backend}."
        if exported_from is None:
            raise ValueError(f"{self.path} records no weights fingerprint, so it was not written by hpd export; "
                             f"{again}")
        if exported_from != weights_sha256(self.folder):
            raise ValueError(f"{self.path} was exported from other weights than {self.folder} holds now; {again}")
        self.embedding_dim = self.config.get("embedding_dim") or self.config["hidden_size"]
        self.max_seq_length = self.config.get("max_seq_length") or self.config.get("max_position_embeddings", 512)
        self._ranges = {}

    @functools.cached_property
    def tokenizer(self):
        from transformers import AutoTokenizer

        try:
            return AutoTokenizer.from_pretrained(str(self.folder), trust_remote_code=False)
        except Exception as error:  # a missing or damaged tokenizer: one line
            raise ValueError(f"{self.folder}: the tokenizer cannot be loaded ({str(error).splitlines()[0]}); "
                             "restore the model's tokenizer files.") from None

    def __repr__(self):
        return f"{type(self).__name__}({str(self.folder)!r}, file_name={self.file_name!r})"

    def preprocess(self, sentences, tokenizer=None):
        """Tokenizer output as numpy arrays (`input_ids`, `attention_mask`, `token_type_ids`), padded and truncated."""
        features = dict((tokenizer or self.tokenizer)(list(sentences), padding=True, truncation=True,
                                                      max_length=self.max_seq_length, return_tensors="np"))
        features.setdefault("token_type_ids", np.zeros_like(features["input_ids"]))
        return {name: np.asarray(value, dtype=np.int64) for name, value in features.items()}

    def ranges(self, normalized=False):
        if normalized not in self._ranges:
            self._ranges[normalized] = load_ranges(self.folder, normalized)
        return self._ranges[normalized]

    def encode(self, sentences, tokenizer=None, batch_size=64, normalize_embeddings=False, convert_to_numpy=True,
               show_progress_bar=None, precision="float32"):
        """Embeds a string or a list of strings: `(dim,)` or `(len(sentences), dim)`, as `HPDModel.encode`.

        `precision` other than float32 returns quantized vectors (`quantize`); int8/uint8 use the ranges stored
        with the model (after `normalize_embeddings`, the ranges of unit vectors)."""
        from tqdm.auto import tqdm

        check_precision(precision)
        single = isinstance(sentences, str)
        sentences = [sentences] if single else list(sentences)
        if show_progress_bar is None:
            show_progress_bar = len(sentences) > batch_size
        order = sorted(range(len(sentences)), key=lambda i: -len(sentences[i]))
        embeddings = np.empty((len(sentences), self.embedding_dim), dtype=np.float32)
        for start in tqdm(range(0, len(order), batch_size), desc="Encoding", disable=not show_progress_bar):
            indices = order[start : start + batch_size]
            embeddings[indices] = self._run(self.preprocess([sentences[i] for i in indices], tokenizer))
        if not np.isfinite(embeddings).all():
            raise ValueError(f"{self.path} produced NaN or infinite embeddings; export the model again from "
                             "float32 weights.")
        if normalize_embeddings:
            embeddings /= np.linalg.norm(embeddings, axis=1, keepdims=True).clip(min=1e-12)
        if precision != "float32":
            ranges = self.ranges(normalize_embeddings) if precision in ("int8", "uint8") else None
            embeddings = quantize(embeddings, precision, ranges)
        if not convert_to_numpy:
            import torch

            embeddings = torch.from_numpy(embeddings)
        return embeddings[0] if single else embeddings

    def get_embedding_dimension(self):
        return self.embedding_dim

    def _unreadable(self, error):
        lines = [line.strip() for line in str(error).splitlines() if line.strip()]
        return ValueError(f"{self.path} cannot be read by {self.runtime} ({lines[0] if lines else type(error).__name__}"
                          f"): the file is damaged or not an exported model; export it again: hpd export "
                          f"{self.folder} --format {self.backend}.")


class HPDOnnxEncoder(_ExportedEncoder):
    """An HPD folder's ONNX graph (default `onnx/model.onnx`; `file_name="onnx/model_qint8_avx512_vnni.onnx"` for
    int8) on ONNX Runtime's CPU provider, or `providers=[...]`."""

    backend, runtime = "onnx", "ONNX Runtime"

    def __init__(self, model, file_name=None, threads=None, providers=None):
        self.providers = providers or ["CPUExecutionProvider"]
        super().__init__(model, file_name, threads)

    def _load(self, threads):
        ort = require("onnxruntime", "the ONNX backend")
        options = ort.SessionOptions()
        options.log_severity_level = 3
        if threads:
            options.intra_op_num_threads = threads
        try:
            self.session = ort.InferenceSession(str(self.path), options, providers=self.providers)
        except Exception as error:  # protobuf parse errors, invalid graphs: one line
            raise self._unreadable(error) from None
        self.input_names = [i.name for i in self.session.get_inputs()]
        if OUTPUT_NAME not in [o.name for o in self.session.get_outputs()] or "input_ids" not in self.input_names:
            raise self._unreadable(ValueError(f"no {OUTPUT_NAME} output"))

    def _metadata(self):
        return self.session.get_modelmeta().custom_metadata_map

    def _run(self, features):
        return self.session.run([OUTPUT_NAME], {name: features[name] for name in self.input_names})[0]


class HPDOpenVINOEncoder(_ExportedEncoder):
    """An HPD folder's OpenVINO model (default `openvino/openvino_model.xml`; the int8 one is
    `openvino/openvino_model_qint8_quantized.xml`) on OpenVINO's CPU device, computing in float32 where the model
    is not quantized (OpenVINO would pick bfloat16 on CPUs that have it)."""

    backend, runtime = "openvino", "OpenVINO"

    def _load(self, threads):
        ov = require("openvino", "the OpenVINO backend", OPENVINO_EXTRA)
        core = ov.Core()
        try:
            self.model = core.read_model(str(self.path))
            config = {"INFERENCE_PRECISION_HINT": "f32", **({"INFERENCE_NUM_THREADS": threads} if threads else {})}
            self.compiled = core.compile_model(self.model, "CPU", config)
        except Exception as error:
            raise self._unreadable(error) from None
        self.input_names = [name for port in self.model.inputs for name in port.get_names()
                            if name in ("input_ids", "attention_mask", "token_type_ids")]
        if OUTPUT_NAME not in {name for port in self.model.outputs for name in port.get_names()}:
            raise self._unreadable(ValueError(f"no {OUTPUT_NAME} output"))
        self.request = self.compiled.create_infer_request()

    def _metadata(self):
        if not self.model.has_rt_info(WEIGHTS_KEY):
            return {}
        return {WEIGHTS_KEY: self.model.get_rt_info(WEIGHTS_KEY).astype(str)}

    def _run(self, features):
        result = self.request.infer({name: features[name] for name in self.input_names})
        return np.array(result[self.compiled.output(OUTPUT_NAME)], dtype=np.float32)


BACKENDS = {"onnx": HPDOnnxEncoder, "openvino": HPDOpenVINOEncoder}


def load_backend(model, backend="onnx", file_name=None, threads=None):
    """The exported model in HPD folder `model` on `backend` ("onnx" or "openvino"); `file_name` relative to it."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; choose torch, {', '.join(BACKENDS)}.")
    return BACKENDS[backend](model, file_name=file_name, threads=threads)
