"""`hpd distill`: Homomorphic Projective Distillation from any teacher into any BERT-family student.

The whole method, stage by stage; each stage leaves its artefact in the work dir, is skipped when
that artefact is complete and resumes when it is not:

1. sentences   corpus -> de-duplicated, shuffled train/valid lists      work/sentences/
2. teacher     each teacher's embeddings of the sentences used, chunked  work/teachers/<teacher>/chunk_*.npy
3. projection  PCA of `pca_sentences` target vectors -> d x D map        work/projection-*.safetensors
               (several teachers: each L2-normalised, scaled by its weight, concatenated, then projected)
4. training    student(s) -> W t(s) + b, MSE, AdamW, warm-up            work/run-<hash>/
               (head random as published, or first fitted by least squares: --head-init lstsq;
               --loss cosine: 1 - cosine instead of MSE, the angle alone, which is all STS and search use;
               --loss similarity: the MSE of the batch's pairwise cosines against the targets', the pairs alone;
               --matryoshka-dims: the weighted sum of the MSE of each prefix, so the output can be truncated)
5. output      the checkpoint chosen by --select as HPD folder --output, with distill_config.json

Stage 1 belongs to the data settings of the work dir (corpus content, unit, split, seed, chunking);
each teacher's vectors live in a folder of their own, so adding a teacher encodes only that one; every
projection and training configuration gets artefacts of its own beside them, so ablations share them.
`--max-sentences` takes a prefix of the work dir's shuffled corpus and chunks are cut from that
whole order, so a run with more (or fewer) sentences reuses every chunk already encoded.

The same command runs in one process or under `torchrun` / `accelerate launch`: teacher chunks are
shared out across processes, training is data-parallel (DDP) through accelerate.
"""

import contextlib
import dataclasses
import fcntl
import functools
import hashlib
import json
import math
import os
import re
import shutil
import time
from pathlib import Path
import typing
from typing import NamedTuple

import numpy as np
import torch
from safetensors.numpy import load_file, save_file
from tqdm.auto import tqdm

from configuration_hpd import HPDConfig
from hpd_inference import hash_file
from hpd_models import save_hpd_folder
from hpd_toolkit.training.corpus import UNITS
from hpd_toolkit.training.output_dir import write_atomic
from modeling_hpd import HPDModel

PROJECTIONS = ("pca", "pca-centered", "none")
HEAD_INITS = ("random", "lstsq")
LOSSES = ("mse", "cosine", "similarity")
SELECTIONS = ("valid-mse", "valid-cosine", "valid-similarity", "stsb-dev", "last")
STUDENT_DTYPES = ("auto", "float32", "bfloat16")
TEACHER_DTYPES = ("float32", "bfloat16")
STORE_DTYPES = ("float16", "float32")
STOP_AFTER = ("teacher", "start")
HEAD_INIT_SENTENCES = 10_000  # training sentences the least-squares head is fitted on (hidden + 1 unknowns each)
DATA_SETTINGS = ("corpus", "unit", "valid_sentences", "seed", "chunk_size", "store_dtype")
TEACHER_SETTINGS = ("teacher", "teacher_dtype")  # each teacher's own folder records these, with its weights' hash


def setting(default=dataclasses.MISSING, help="", **flag):
    """A DistillConfig field with its `hpd distill` flag's help text and any argparse keywords (choices, action,
    nargs) its type does not imply: hpd_cli builds the flags from these, so a setting is written in one place."""
    return dataclasses.field(default=default, metadata={"help": help, **flag})


@dataclasses.dataclass
class DistillConfig:
    """Every `hpd distill` setting. A list setting also takes a comma-separated string (`--layers 0,2,4`)."""

    teacher: list[str] = setting(action="append", help="sentence-transformers or HPD model (folder or Hub id); "
                                 "repeat for several teachers, whose L2-normalised vectors are joined before the "
                                 "projection")
    student: str = setting(help="student base: HPD, sentence-transformers or BERT model (folder or Hub id)")
    corpus: list[str] = setting(nargs="+", help="text files (.txt[.gz]), AllNLI .tsv.gz or WikiExtractor folders")
    output: str = setting(help="HPD folder to write")
    teacher_weights: list[float] | None = setting(None, help="several teachers: comma-separated weight of each in "
                                                  "the joint target (default 1 each)")
    dim: int = setting(128, help="embedding dimension d")
    matryoshka_dims: list[int] | None = setting(None, help="also train the output's prefixes as embeddings of their "
                                                "own, e.g. 128,64,32 (--dim first, descending): the loss is the "
                                                "weighted sum of each prefix's MSE")
    matryoshka_weights: list[float] | None = setting(None, help="each --matryoshka-dims size's weight in the loss, "
                                                     "e.g. 1,1,1 (default 1 each)")
    loss: str = setting("mse", choices=LOSSES, help="mse: the squared error to the projected teacher vectors, as "
                        "published; cosine: 1 - their cosine, which leaves each vector's length free (pair it with "
                        "--select valid-cosine, stsb-dev or last); similarity: the squared error of the cosines "
                        "between the batch's sentences against the targets' cosines, the pairs alone (pair it "
                        "with --select valid-similarity, stsb-dev or last)")
    layers: list[int] | None = setting(None, help="student layers to keep, e.g. 0,2,4 (default: all)")
    max_sentences: int | None = setting(None, help="use at most this many training sentences (default: all)")
    pca_sentences: int = setting(100_000, help="teacher vectors the PCA is fitted on")
    pca_min_words: int | None = setting(None, help="fit the PCA only on those of the first --pca-sentences training "
                                        "items that have at least N words (e.g. the passages of --unit mixed), so "
                                        "that the projection keeps what tells long texts apart")
    valid_sentences: int = setting(5000, help="held-out sentences for valid MSE")
    projection: str = setting("pca", choices=PROJECTIONS, help="pca: PCA without mean-centring, as published; "
                              "pca-centered subtracts the mean; none keeps the teacher's vectors and dimension")
    head_init: str = setting("random", choices=HEAD_INITS, help="the head before training: random, as published, "
                             "or the least-squares map from the student's pooled embeddings, a linear probe first so "
                             "that a random head does not disturb the encoder early on: steadier on short runs")
    unit: str = setting("sentence", choices=UNITS, help="what WikiExtractor corpora are cut into: sentences; "
                        "paragraph: passages of whole sentences up to 160 words; mixed: both")
    # docs/reproduction.md says why valid-mse is the default
    select: str = setting("valid-mse", choices=SELECTIONS, help="which evaluated checkpoint becomes --output: lowest "
                          "validation MSE, lowest validation cosine distance, lowest validation similarity MSE, "
                          "highest STS-B dev Spearman (needs --sts-dev) or the last")
    epochs: int = setting(5, help="training epochs")
    batch_size: int = setting(256, help="global batch size")
    lr: float = setting(1e-4, help="AdamW learning rate")
    warmup_steps: int = setting(1000, help="linear warm-up steps")
    eval_steps: int | None = setting(None, help="validate and checkpoint every N steps (default: each epoch)")
    sts_dev: str | None = setting(None, help="data folder with STS-B dev: logged at every evaluation")
    seed: int = setting(42, help="seed of the corpus shuffle and split, the PCA, the student's new weights and the "
                        "training order")
    work_dir: str | None = setting(None, help="artefacts and checkpoints (default: OUTPUT.work)")
    teacher_batch_size: int = setting(64, help="teacher encoding batch size")
    micro_batch_size: int = setting(32, help="sentences per forward pass, grouped by length; gradients add up to "
                                    "--batch-size")
    chunk_size: int = setting(8192, help="teacher vectors per stored chunk: the most a killed run can lose")
    store_dtype: str = setting("float32", choices=STORE_DTYPES, help="teacher store dtype")
    teacher_dtype: str = setting("float32", choices=TEACHER_DTYPES, help="teacher compute precision; bfloat16 "
                                 "autocast is ~1.6x faster on CPUs with AVX512-BF16 or AMX, cosine to float32 >= "
                                 "0.9999")
    student_dtype: str = setting("auto", choices=STUDENT_DTYPES, help="training precision; auto: mixed bf16/fp16 on "
                                 "GPU, float32 on CPU; bfloat16 autocast is faster on CPUs with AVX512-BF16 or AMX")
    freeze_embeddings: bool = setting(False, help="keep the student's word-embedding matrix fixed (faster steps, "
                                      "fewer weights to move)")
    stop_after: str | None = setting(None, choices=STOP_AFTER, help="teacher: stop once the teacher vectors are "
                                     "cached (start a long run's expensive part early); start: once the starting "
                                     "point (step 0: the cut and its head) is validated and logged, to compare "
                                     "students before training any (scripts/start_search.py)")
    overwrite: bool = setting(False, help="replace --output even if hpd did not write it")
    trust_remote_code: bool = setting(False, help="allow teacher or student folders that run their own Python code")
    log_steps: int = setting(50, help="training log interval")

    def __post_init__(self):
        for field in dataclasses.fields(self):  # a list setting may come as one path or a comma-separated string
            value, item = getattr(self, field.name), _list_item_type(field.type)
            if item is None or value is None:
                continue
            if isinstance(value, (str, Path)):
                value = [value] if item is str else [x for x in value.split(",") if x.strip()]
            try:
                setattr(self, field.name, [item(x) for x in value])
            except (TypeError, ValueError):
                raise ValueError(f"--{field.name.replace('_', '-')} takes comma-separated "
                                 f"{'integers' if item is int else 'numbers'}; got {value!r}.") from None
        if not self.teacher:
            raise ValueError("give at least one --teacher.")
        if self.teacher_weights is not None:
            if len(self.teacher_weights) != len(self.teacher) or not all(w > 0 for w in self.teacher_weights):
                raise ValueError(f"--teacher-weights needs one positive weight per teacher ({len(self.teacher)}); "
                                 f"got {self.teacher_weights}.")
            if len(self.teacher) == 1:
                self.teacher_weights = None  # one teacher's target is its own vectors, as published
        if len(set(self.teacher)) != len(self.teacher):
            raise ValueError(f"--teacher names the same model twice ({', '.join(self.teacher)}).")
        self._check_matryoshka()
        for field in dataclasses.fields(self):  # the settings with a fixed set of values, and the counts
            allowed, value = field.metadata.get("choices"), getattr(self, field.name)
            if allowed and value not in allowed and not (value is None is field.default):
                raise ValueError(f"--{field.name.replace('_', '-')} must be one of {', '.join(allowed)}; "
                                 f"got {value!r}.")
            if field.type in (int, int | None) and field.name not in ("seed", "warmup_steps") and value is not None \
                    and (not isinstance(value, int) or value < 1):
                raise ValueError(f"--{field.name.replace('_', '-')} must be a positive integer; got {value!r}.")
        if self.loss != "mse" and self.select == "valid-mse":
            frees = {"cosine": "the vectors' lengths", "similarity": "the vectors themselves (only their cosines count)"}
            raise ValueError(f"--loss {self.loss} leaves {frees[self.loss]} free, so validation MSE cannot choose its "
                             f"checkpoint: add --select valid-{self.loss} (or stsb-dev, last).")
        if self.loss == "similarity" and self.batch_size < 2:
            raise ValueError("--loss similarity compares the sentences of a batch in pairs: it needs --batch-size >= 2.")
        if self.select == "stsb-dev" and not self.sts_dev:
            raise ValueError("--select stsb-dev needs --sts-dev FOLDER (the data folder holding STS-B dev).")
        if self.pca_min_words is not None and self.projection == "none":
            raise ValueError("--pca-min-words chooses the text the PCA is fitted on; --projection none fits none: "
                             "use --projection pca or leave --pca-min-words out.")
        if not self.lr > 0 or not isinstance(self.warmup_steps, int) or self.warmup_steps < 0:
            raise ValueError(f"--lr must be positive and --warmup-steps >= 0; got {self.lr!r}, {self.warmup_steps!r}.")
        if self.work_dir is None:
            self.work_dir = str(Path(self.output).with_name(Path(self.output).name + ".work"))

    def _check_matryoshka(self):
        """--matryoshka-dims: the full --dim first, then smaller prefixes, each with a positive weight."""
        dims, weights = self.matryoshka_dims, self.matryoshka_weights
        if dims is None:
            if weights is not None:
                raise ValueError("--matryoshka-weights needs --matryoshka-dims (the prefixes they weigh), e.g. "
                                 "--matryoshka-dims 128,64,32 --matryoshka-weights 1,1,1.")
            return
        example = f"e.g. --matryoshka-dims {self.dim},{self.dim // 2},{self.dim // 4}" if self.dim >= 4 else ""
        weights = [1.0] * len(dims) if weights is None else weights
        problem = None
        if len(dims) < 2:
            problem = "needs the full --dim and at least one smaller size"
        elif len(set(dims)) != len(dims):
            problem = "names a size twice"
        elif any(d > self.dim for d in dims):
            problem = f"has a size larger than --dim {self.dim}"
        elif dims != sorted(dims, reverse=True) or min(dims) < 1:
            problem = "must be positive sizes in descending order"
        elif dims[0] != self.dim:
            problem = f"must start with --dim {self.dim} (the full output is always trained)"
        if problem:
            raise ValueError(f"--matryoshka-dims {','.join(map(str, dims))} {problem}; "
                             f"{example or 'see hpd distill -h'}.")
        if len(weights) != len(dims) or not all(math.isfinite(w) and w > 0 for w in weights):
            raise ValueError(f"--matryoshka-weights needs one positive weight per size in --matryoshka-dims "
                             f"({len(dims)}); got {','.join(f'{w:g}' for w in weights)}.")
        if self.projection == "none":
            raise ValueError("--matryoshka-dims needs a PCA projection, whose coordinates come in order of variance; "
                             "--projection none keeps the teacher's own, unordered ones: use --projection pca.")
        self.matryoshka_dims, self.matryoshka_weights = dims, weights

    @classmethod
    def fields(cls):
        return {f.name for f in dataclasses.fields(cls)}

    def data_settings(self):
        """What shapes the shared sentence lists: a work dir holds one set of these (the corpus by content)."""
        return {name: getattr(self, name) for name in DATA_SETTINGS} | {"corpus": corpus_fingerprint(self.corpus)}

    def run_settings(self):
        """What shapes one projection + training run on top of the data (its folder is named by their hash).

        Settings that change only speed or bookkeeping are left out, so changing them resumes the same run."""
        settings = dataclasses.asdict(self)
        for name in (*DATA_SETTINGS, "output", "work_dir", "log_steps", "teacher_batch_size", "micro_batch_size",
                     "stop_after", "overwrite", "trust_remote_code"):
            settings.pop(name)
        for name, default in (("teacher_weights", None), ("student_dtype", "auto"), ("freeze_embeddings", False),
                              ("matryoshka_dims", None), ("matryoshka_weights", None), ("loss", "mse"),
                              ("pca_min_words", None)):
            if settings[name] == default:
                settings.pop(name)  # runs made before these settings existed keep their folders
        if len(self.teacher) == 1:
            settings["teacher"] = self.teacher[0]
        return settings

    def run_dir(self):
        digest = hashlib.sha256(json.dumps(self.run_settings(), sort_keys=True).encode()).hexdigest()[:10]
        return Path(self.work_dir) / f"run-{digest}"

    def projection_path(self):
        return projection_path(self.work_dir, self.projection, self.dim, self.pca_sentences, self.teacher,
                               self.teacher_weights, self.pca_min_words)

    def pca_rows(self, train):
        """Positions, within the training sentences, of those the PCA is fitted on."""
        rows = range(min(self.pca_sentences, len(train)))
        if self.pca_min_words is None:
            return np.asarray(rows)
        return np.asarray([i for i in rows if len(train[i].split()) >= self.pca_min_words], dtype=int)

    def teacher_dir(self, teacher):
        """Each teacher's vectors in a folder of its own, keyed by its weights and compute precision, so the same
        model named by another path (or moved) finds its vectors, and a changed model gets new ones."""
        key = hashlib.sha256(json.dumps([teacher_weights_sha256(teacher), self.teacher_dtype]).encode()).hexdigest()
        readable = re.sub(r"[^A-Za-z0-9._-]+", "-", Path(teacher).name).strip("-")[:48] or "teacher"
        return Path(self.work_dir) / "teachers" / f"{readable}-{self.teacher_dtype}-{key[:8]}"


def _list_item_type(annotation):
    """int for a setting typed list[int] or list[int] | None; None for a setting that is no list."""
    for option in (annotation, *typing.get_args(annotation)):
        if typing.get_origin(option) is list:
            return typing.get_args(option)[0]
    return None


def projection_path(work_dir, projection, dim, pca_sentences, teachers, teacher_weights=None, pca_min_words=None):
    """Where a work dir keeps the projection of these settings (hpd distill fits it, scripts/pca_ceiling.py reads
    it)."""
    name = f"projection-{projection}-d{dim}-n{pca_sentences}" + (f"-w{pca_min_words}" if pca_min_words else "")
    if len(teachers) > 1:  # one teacher keeps the earlier name; a mix is named by its members and weights
        mix = json.dumps([list(teachers), teacher_weights or [1.0] * len(teachers)])
        name += "-mix" + hashlib.sha256(mix.encode()).hexdigest()[:8]
    return Path(work_dir) / f"{name}.safetensors"


@functools.cache
def teacher_weights_sha256(teacher):
    from hpd_models import resolve
    from hpd_inference import weights_sha256

    return weights_sha256(resolve(teacher))


def corpus_fingerprint(paths):
    """Each corpus path with the size and SHA-256 of the files read from it: what the sentences came from.

    A corpus edited in place gets another fingerprint; the same files named another way (absolute or relative)
    get the same one."""
    from hpd_toolkit.training.corpus import corpus_files

    fingerprint = []
    for path in paths:
        digest, size = hashlib.sha256(), 0
        for file in corpus_files(Path(path)):
            digest.update(str(file.relative_to(path) if file != Path(path) else file.name).encode() + b"\0")
            hash_file(digest, file)
            size += file.stat().st_size
        fingerprint.append({"name": Path(path).name, "bytes": size, "sha256": digest.hexdigest()})
    return fingerprint


# --- stage 1: sentences -------------------------------------------------------------------------

def prepare_sentences_stage(config, work):
    """(valid, train, corpus info). The work dir keeps the whole shuffled corpus, `valid + train` being the
    order teacher chunks are cut from; training uses the first `max_sentences` of `train`."""
    from hpd_toolkit.training.corpus import prepare_sentences

    folder = work / "sentences"
    info_file = folder / "corpus.json"
    if not info_file.is_file():
        train, valid, digest = prepare_sentences(config.corpus, None, config.valid_sentences, config.seed, config.unit)
        folder.mkdir(parents=True, exist_ok=True)
        # The work dir now holds artefacts of these settings (a run that failed earlier left nothing).
        write_atomic(work / "settings.json", json.dumps(config.data_settings(), indent=2))
        write_atomic(folder / "train.txt", "\n".join(train) + "\n")
        write_atomic(folder / "valid.txt", "\n".join(valid) + "\n")
        write_atomic(info_file, json.dumps({"train": len(train), "valid": len(valid), "sha256": digest}))
    info = json.loads(info_file.read_text())
    # split("\n"), not splitlines(): the lists are one item per "\n"-terminated line, whatever else they hold
    train = (folder / "train.txt").read_text(encoding="utf-8").split("\n")[:-1]
    valid = (folder / "valid.txt").read_text(encoding="utf-8").split("\n")[:-1]
    if (len(train), len(valid)) != (info["train"], info["valid"]):
        raise ValueError(f"{folder} holds {len(train)} + {len(valid)} sentences where corpus.json records "
                         f"{info['train']} + {info['valid']}: the files were changed; delete {config.work_dir} "
                         "to start fresh.")
    used = train[: config.max_sentences]
    digest = hashlib.sha256("\n".join(valid + used).encode("utf-8")).hexdigest()
    return valid, train, {"train": len(used), "valid": len(valid), "available": len(train), "sha256": digest}


# --- stage 2: teacher vectors -------------------------------------------------------------------

class TeacherStore:
    """One teacher's vectors of `valid + train` (in that order), in .npy chunks of `chunk_size` rows, read
    memory-mapped. Chunk i always holds sentences [i * chunk_size, (i + 1) * chunk_size); the last chunk a run
    needs may hold only the rows it needs, and a later, larger run extends it."""

    def __init__(self, folder, total, chunk_size):
        self.folder, self.total, self.chunk_size = Path(folder), total, chunk_size
        self.chunk_count = math.ceil(total / chunk_size)
        self._chunks = {}

    def chunk_path(self, index):
        return self.folder / f"chunk_{index:06d}.npy"

    def rows_needed(self, index):
        return min(self.chunk_size, self.total - index * self.chunk_size)

    def rows_stored(self, index):
        path = self.chunk_path(index)
        return np.load(path, mmap_mode="r").shape[0] if path.is_file() else 0

    def missing_chunks(self):
        return [i for i in range(self.chunk_count) if self.rows_stored(i) < self.rows_needed(i)]

    @property
    def dim(self):
        return np.load(self.chunk_path(0), mmap_mode="r").shape[1]

    def rows(self, indices):
        """float32 vectors of the given sentence positions; only the chunks touched are paged in."""
        indices = np.asarray(indices)
        out = None
        for chunk in np.unique(indices // self.chunk_size):
            if chunk not in self._chunks:
                self._chunks[chunk] = np.load(self.chunk_path(chunk), mmap_mode="r")
            data = self._chunks[chunk]
            where = np.nonzero(indices // self.chunk_size == chunk)[0]
            if out is None:
                out = np.empty((len(indices), data.shape[1]), dtype=np.float32)
            out[where] = data[indices[where] - chunk * self.chunk_size]
        return out


class TargetVectors:
    """The distillation target before projection: one teacher's vectors as they are (as published), or several
    teachers' vectors, each L2-normalised and scaled by its weight, side by side."""

    def __init__(self, stores, weights=None):
        self.stores, self.weights = stores, weights if len(stores) > 1 else None
        self.dim = sum(store.dim for store in stores)

    def rows(self, indices):
        return join_teachers([store.rows(indices) for store in self.stores], self.weights)


def join_teachers(vectors, weights=None):
    """The target before projection from each teacher's vectors of the same sentences: one teacher's as they are,
    several L2-normalised, scaled by their weights and side by side."""
    if len(vectors) == 1:
        return vectors[0]
    parts = [weight * v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12)
             for v, weight in zip(vectors, weights or [1.0] * len(vectors))]
    return np.concatenate(parts, axis=1).astype(np.float32)


def load_teacher(config, teacher, device):
    from hpd_models import load_encoder

    encoder = load_encoder(teacher, device=device, trust_remote_code=config.trust_remote_code)
    try:
        probe = encoder.encode(["A teacher must be able to encode this sentence."], convert_to_numpy=True)
    except Exception as error:
        raise ValueError(f"teacher {teacher} cannot encode sentences ({type(error).__name__}: {error}); "
                         "pass a sentence-transformers or HPD model folder.") from None
    check_dim(config, probe.shape[-1])
    return encoder


def check_dim(config, target_dim):
    """--dim against the (joint) teacher dimension, before any projection is fitted."""
    if config.projection == "none" and config.dim != target_dim:
        raise ValueError(f"--projection none keeps the teacher's {target_dim} dimensions; pass --dim {target_dim}.")
    if config.dim > target_dim:
        raise ValueError(f"--dim {config.dim} is larger than the teacher's embedding dimension ({target_dim}); "
                         f"choose --dim <= {target_dim}.")


def teacher_stage(config, work, sentences, used, accelerator):
    """Encodes, for every teacher, the rows missing from the chunks that cover the first `used` of `sentences`
    (valid + all train), so runs of other sizes and other teacher mixes share vectors. Chunk i belongs to
    process i % world_size; each chunk is written atomically. Returns the TargetVectors."""
    from hpd_models import encode_by_length

    stores = []
    for teacher in config.teacher:
        folder = config.teacher_dir(teacher)
        store = TeacherStore(folder, used, config.chunk_size)
        missing = store.missing_chunks()
        if missing:
            if accelerator.is_main_process and not (folder / "teacher.json").is_file():
                folder.mkdir(parents=True, exist_ok=True)
                write_atomic(folder / "teacher.json", json.dumps(
                    {"teacher": teacher, "teacher_dtype": config.teacher_dtype,
                     "weights_sha256": teacher_weights_sha256(teacher)}, indent=2))
            accelerator.wait_for_everyone()
            encoder = load_teacher(config, teacher, accelerator.device)
            mine = [i for i in missing if i % accelerator.num_processes == accelerator.process_index]
            todo = sum(store.rows_needed(i) - store.rows_stored(i) for i in missing)
            with tqdm(total=todo, desc=f"Teacher vectors ({Path(teacher).name})", unit="sent", smoothing=0.05,
                      disable=not accelerator.is_main_process) as bar:
                for index in mine:
                    have, need = store.rows_stored(index), store.rows_needed(index)
                    start = index * config.chunk_size
                    with torch.autocast(accelerator.device.type, dtype=torch.bfloat16,
                                        enabled=config.teacher_dtype == "bfloat16"):
                        vectors = encode_by_length(encoder, sentences[start + have : start + need],
                                                   config.teacher_batch_size, show_progress_bar=False)
                    if have:
                        vectors = np.concatenate([np.load(store.chunk_path(index)), vectors])
                    vectors = vectors.astype(config.store_dtype)
                    write_atomic(store.chunk_path(index), lambda temporary: np.save(temporary, vectors))
                    bar.update((need - have) * accelerator.num_processes)  # the others advance alike
            del encoder
        accelerator.wait_for_everyone()
        if store.missing_chunks():
            raise RuntimeError(f"teacher chunks {store.missing_chunks()[:5]} of {folder} are missing after encoding; "
                               "run again to resume.")
        stores.append(store)
    vectors = TargetVectors(stores, config.teacher_weights or [1.0] * len(stores))
    check_dim(config, vectors.dim)  # also when the vectors were there already
    return vectors


# --- stage 3: the homomorphic projection ----------------------------------------------------------

def fit_projection(vectors, dim, kind, seed=0):
    """(weight d x D, bias d) mapping teacher vectors t to W t + b.

    `pca`: the principal axes of the sample, applied without subtracting its mean (bias 0) as HPD's
    released code does; `pca-centered`: W (t - mean); `none`: the identity."""
    vectors = np.asarray(vectors, dtype=np.float32)
    if kind == "none":
        return np.eye(vectors.shape[1], dtype=np.float32), np.zeros(vectors.shape[1], dtype=np.float32)
    from sklearn.decomposition import PCA

    pca = PCA(n_components=dim, random_state=seed).fit(vectors.astype(np.float64))
    # components_ can be Fortran-ordered (the covariance_eigh solver): safetensors stores the raw buffer
    weight = np.ascontiguousarray(pca.components_, dtype=np.float32)
    bias = -(weight @ pca.mean_).astype(np.float32) if kind == "pca-centered" else np.zeros(dim, dtype=np.float32)
    check_projection(weight, kind, "the fitted projection")
    return weight, bias


def check_projection(weight, kind, name):
    """PCA axes are orthonormal; anything else would silently train the student on wrong targets."""
    if kind == "none":
        return
    error = float(np.abs(weight.astype(np.float64) @ weight.T.astype(np.float64) - np.eye(len(weight))).max())
    if error > 1e-3:
        raise RuntimeError(f"{name} is not orthonormal (max |W W^T - I| = {error:.3g}): the PCA went wrong or "
                           "the file is damaged; delete the projection file from the work dir and run again.")


def projection_stage(config, vectors, valid_count, accelerator, train):
    path = config.projection_path()
    if accelerator.is_main_process and not path.is_file():
        sample = vectors.rows(valid_count + config.pca_rows(train))
        weight, bias = fit_projection(sample, config.dim, config.projection, config.seed)
        write_atomic(path, lambda temporary: save_file({"weight": weight, "bias": bias}, str(temporary),
                                                       metadata={"kind": config.projection}))
    accelerator.wait_for_everyone()
    tensors = load_file(str(path))
    check_projection(tensors["weight"], config.projection, path)
    return torch.from_numpy(tensors["weight"]), torch.from_numpy(tensors["bias"])


# --- stage 4: the student ---------------------------------------------------------------------------

def build_student(base, embedding_dim, layers=None, seed=42, trust_remote_code=False, matryoshka_dims=None):
    """(HPDModel, tokenizer): the base's encoder (optionally only `layers`) under a fresh tanh head of
    `embedding_dim` outputs; its config records `matryoshka_dims`, the sizes it will be trained to be truncated to.

    `base` is an HPD or sentence-transformers model, or a plain BERT checkpoint (e.g. TinyBERT)."""
    from transformers import AutoTokenizer, BertModel

    from hpd_models import HEAD_FIELDS, load_hpd, model_format, resolve

    folder = resolve(base)
    try:
        model_format(folder)
        source, tokenizer = load_hpd(folder, trust_remote_code=trust_remote_code)
        encoder, pooling, max_seq_length = source.bert, source.config.pooling, source.config.max_seq_length
    except ValueError:  # no sentence encoder: maybe a plain BERT checkpoint
        model_type = json.loads((folder / "config.json").read_text()).get("model_type") \
            if (folder / "config.json").is_file() else None
        if model_type != "bert":
            raise ValueError(f"student {base} is neither an HPD, sentence-transformers nor BERT model folder "
                             f"(model_type {model_type!r}); HPD students are BERT-family encoders.") from None
        encoder = BertModel.from_pretrained(folder, add_pooling_layer=False)
        tokenizer = AutoTokenizer.from_pretrained(folder)
        pooling, max_seq_length = "mean", min(256, encoder.config.max_position_embeddings)

    layer_count = encoder.config.num_hidden_layers
    layers = list(range(layer_count)) if layers is None else list(layers)
    if not layers or any(not 0 <= i < layer_count for i in layers) or layers != sorted(set(layers)):
        raise ValueError(f"--layers {','.join(map(str, layers))} must be increasing layer indices from 0 to "
                         f"{layer_count - 1} (the student base has {layer_count} layers).")
    fields = {k: v for k, v in encoder.config.to_dict().items()
              if k not in ("model_type", "architectures", "auto_map", *HEAD_FIELDS)}
    config = HPDConfig(**{**fields, "num_hidden_layers": len(layers)}, pooling=pooling, embedding_dim=embedding_dim,
                       projection_activation="tanh", normalize=False, max_seq_length=max_seq_length,
                       matryoshka_dims=matryoshka_dims)
    torch.manual_seed(seed)
    student = HPDModel(config)
    renamed = {}
    for key, value in encoder.state_dict().items():
        if key.startswith("encoder.layer."):
            index, rest = key[len("encoder.layer."):].split(".", 1)
            if int(index) not in layers:
                continue
            key = f"encoder.layer.{layers.index(int(index))}.{rest}"
        renamed[key] = value
    student.bert.load_state_dict(renamed, strict=True)
    tokenizer.model_max_length = max_seq_length
    return student, tokenizer


def fit_head(model, tokenizer, sentences, goal, batch_size):
    """Sets the Dense of the tanh head to the least-squares map from the student's pooled embeddings to
    atanh(goal) (ridge 1e-4 relative), i.e. linear probing before fine-tuning (Kumar et al., ICLR 2022):
    the student starts near its targets, and a random head's early gradients do not pull the encoder's
    geometry apart."""
    pooled = model.encode(sentences, tokenizer, batch_size, convert_to_numpy=False, show_progress_bar=False,
                          output_value="pooled_embedding").double()
    inputs = torch.cat([pooled, torch.ones(len(pooled), 1, dtype=pooled.dtype)], dim=1)
    wanted = torch.atanh(goal.double().clamp(-0.999, 0.999))  # the head's tanh, undone
    gram = inputs.T @ inputs
    gram += 1e-4 * gram.diagonal().mean() * torch.eye(len(gram), dtype=gram.dtype)
    solution = torch.linalg.solve(gram, inputs.T @ wanted)  # (hidden + 1) x dim
    with torch.no_grad():
        model.projection.weight.copy_(solution[:-1].T)
        if model.projection.bias is not None:
            model.projection.bias.copy_(solution[-1])


class Validation(NamedTuple):
    """What every evaluation scores: held-out corpus sentences against their projected teacher vectors, and
    STS-B dev (None without --sts-dev)."""

    sentences: list
    targets: torch.Tensor
    stsb_dev: object


def validate(model, tokenizer, validation, batch_size, matryoshka_dims=None, cosine=False, similarity=False):
    """valid MSE against the projected teacher vectors (with `cosine` also the mean cosine distance, with
    `similarity` the squared error of all pairwise cosines of the validation sentences), and
    STS-B dev Spearman x 100 when given; with `matryoshka_dims` also both for each smaller prefix k
    (`valid_mse_d<k>`, `stsb_dev_spearman_d<k>`)."""
    from hpd_toolkit.eval.sts import spearman_x100

    def embed(sentences):
        return model.encode(sentences, tokenizer, batch_size, convert_to_numpy=False, show_progress_bar=False)

    predicted, goal, stsb_dev = embed(validation.sentences), validation.targets, validation.stsb_dev
    smaller = (matryoshka_dims or [])[1:]  # the first is the full output: valid_mse and stsb_dev_spearman
    figures = {"valid_mse": float(torch.nn.functional.mse_loss(predicted, goal))}
    if cosine:
        figures["valid_cosine_distance"] = float(prefix_cosine_distance(predicted, goal, len(goal)))
    if similarity:
        figures["valid_similarity_mse"] = float(prefix_similarity_mse(predicted, goal))
    for dim in smaller:
        figures[f"valid_mse_d{dim}"] = float(torch.nn.functional.mse_loss(predicted[:, :dim], goal[:, :dim]))
    if stsb_dev is not None:
        e1, e2 = embed(stsb_dev.sentences1).numpy(), embed(stsb_dev.sentences2).numpy()
        figures["stsb_dev_spearman"] = round(float(spearman_x100(e1, e2, stsb_dev.scores)), 4)
        for dim in smaller:
            figures[f"stsb_dev_spearman_d{dim}"] = round(float(spearman_x100(e1[:, :dim], e2[:, :dim],
                                                                             stsb_dev.scores)), 4)
    return figures


def selection_metric(config, figures, step):
    """Higher is better. valid-mse (default): the distillation objective on held-out corpus sentences, which
    falls steadily while STS-B dev is flat and noisy on short runs (docs/reproduction.md); valid-cosine: the
    --loss cosine objective on the same sentences; valid-similarity: the --loss similarity objective over all
    their pairs; stsb-dev: STS-B dev Spearman; last: the final step."""
    if config.select == "valid-cosine":
        return -figures["valid_cosine_distance"]
    if config.select == "valid-similarity":
        return -figures["valid_similarity_mse"]
    if config.select == "stsb-dev":
        return figures["stsb_dev_spearman"]
    if config.select == "last":
        return step
    return -figures["valid_mse"]


@dataclasses.dataclass
class TrainState:
    """Where training stands; each checkpoint holds it as trainer_state.json, and a resumed run continues from it."""

    step: int = -1  # the last step checkpointed; -1: none, not even the starting point (step 0)
    best_metric: float | None = None  # selection_metric at best_step (higher is better)
    best_step: int | None = None
    best_figures: dict | None = None  # validate() at best_step
    finished: bool = False
    seconds: float = 0.0  # training time so far, summed over every resumption


def training_stage(config, student, stsb_dev, train, valid, vectors, projection, accelerator):
    """Trains the student towards the projected teacher vectors and returns the final TrainState.

    Step 0 (the start) and every `eval_steps`-th step are validated, the best by --select is kept in run/best,
    and a checkpoint is written from which a restarted run continues bit-identically: model, optimiser, schedule
    and RNG are in the checkpoint, and each step's batch follows from the step alone (`batch_rows`)."""
    from transformers import get_linear_schedule_with_warmup

    (model, tokenizer), (weight, bias), run = student, projection, config.run_dir()
    if config.head_init == "lstsq" and latest_checkpoint(run / "checkpoints") is None:
        # every process fits the same head; a resumed run gets its weights from the checkpoint instead
        count = min(HEAD_INIT_SENTENCES, len(train))
        accelerator.print(f"Fitting the head by least squares on {count} training sentences.")
        fit_head(model, tokenizer, train[:count], targets(vectors.rows(len(valid) + np.arange(count)), weight, bias),
                 config.teacher_batch_size)
    if config.freeze_embeddings:
        model.bert.embeddings.word_embeddings.weight.requires_grad_(False)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=config.lr)
    steps_per_epoch = math.ceil(len(train) / config.batch_size)
    total_steps = config.epochs * steps_per_epoch
    scheduler = get_linear_schedule_with_warmup(optimizer, min(config.warmup_steps, total_steps), total_steps)
    model, optimizer, scheduler = accelerator.prepare(model, optimizer, scheduler)
    eval_steps = config.eval_steps or steps_per_epoch
    validation = Validation(valid, targets(vectors.rows(np.arange(len(valid))), weight, bias), stsb_dev)
    matryoshka = (config.matryoshka_dims, config.matryoshka_weights) if config.matryoshka_dims else None
    if accelerator.is_main_process and not (run / "settings.json").is_file():
        run.mkdir(parents=True, exist_ok=True)
        write_atomic(run / "settings.json", json.dumps(config.run_settings(), indent=2))  # for the reader
    accelerator.wait_for_everyone()

    state = resume(accelerator, run)
    if state.finished or (config.stop_after == "start" and state.step >= 0):
        return state  # with --stop-after start: step 0 is in the log already
    resumed_at = time.perf_counter() - state.seconds
    bar = tqdm(total=total_steps, initial=max(state.step, 0), desc="Training", unit="step",
               disable=not accelerator.is_main_process)
    started, seen = time.perf_counter(), 0
    for step in range(state.step + 1, total_steps + 1):
        if step > 0:  # step 0 only validates the starting point
            epoch, rows = batch_rows(config, step, steps_per_epoch, len(train))
            mine = rows[accelerator.process_index :: accelerator.num_processes]  # this process's share
            model.train()
            loss = accumulate_gradients(model, tokenizer, [train[i] for i in mine],
                                        targets(vectors.rows(len(valid) + mine), weight, bias),
                                        config.micro_batch_size, accelerator,
                                        bfloat16=config.student_dtype == "bfloat16", matryoshka=matryoshka,
                                        loss=config.loss)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad()
            seen += len(rows)
            bar.update(1)
            if accelerator.is_main_process and (step % config.log_steps == 0 or step == total_steps):
                rate = seen / (time.perf_counter() - started)
                append_log(run / "train_log.jsonl", {"step": step, "epoch": epoch, "loss": round(loss, 8),
                                                     "lr": scheduler.get_last_lr()[0], "sentences_per_s": round(rate, 1)})
                bar.set_postfix(loss=f"{loss:.3g}", sent_s=f"{rate:.0f}")
        if step % eval_steps == 0 or step == total_steps:
            if accelerator.is_main_process:
                state, figures = evaluate(config, accelerator.unwrap_model(model), tokenizer, validation, state, step,
                                          run)
                bar.set_postfix(figures)
            state = dataclasses.replace(state, step=step, finished=step >= total_steps,
                                        seconds=round(time.perf_counter() - resumed_at, 1))
            state = checkpoint(accelerator, run / "checkpoints", state)
        if config.stop_after == "start":
            break  # the same command without it trains on from this checkpoint
    bar.close()
    return state


def batch_rows(config, step, steps_per_epoch, count):
    """(epoch, the training rows of `step`): epoch e draws its batches from a permutation seeded by seed + e, so the
    rows of a step never depend on how the run got there."""
    epoch, position = divmod(step - 1, steps_per_epoch)
    order = np.random.default_rng(config.seed + epoch).permutation(count)
    return epoch, order[position * config.batch_size : (position + 1) * config.batch_size]


def evaluate(config, model, tokenizer, validation, state, step, run):
    """Validates the model at `step`, logs the figures and, if --select prefers it, saves it as run/best; returns
    (the state with the new best, the figures). Main process only."""
    figures = validate(model, tokenizer, validation, config.teacher_batch_size, config.matryoshka_dims,
                       cosine=config.loss == "cosine" or config.select == "valid-cosine",
                       similarity=config.loss == "similarity" or config.select == "valid-similarity")
    metric = selection_metric(config, figures, step)
    chosen = state.best_metric is None or metric > state.best_metric
    append_log(run / "train_log.jsonl", {"step": step, **figures, **({"selected": config.select} if chosen else {})})
    if not chosen:
        return state, figures
    save_hpd_folder(model, tokenizer, run / "best")
    return dataclasses.replace(state, best_metric=metric, best_step=step, best_figures=figures), figures


def resume(accelerator, run):
    """The state of the run's latest checkpoint, loaded into model, optimiser, schedule and RNG; a fresh state
    without one. The log loses the records written after that checkpoint, so no step appears twice."""
    latest = latest_checkpoint(run / "checkpoints")
    state = TrainState()
    if latest is not None:
        accelerator.load_state(str(latest))
        state = read_state(latest)
        accelerator.print(f"Resuming training from step {state.step} ({latest}).")
    if accelerator.is_main_process:
        truncate_log(run / "train_log.jsonl", state.step)
    return state


def checkpoint(accelerator, folder, state):
    """Writes step_N (model, optimiser, schedule, RNG), then its trainer_state.json, which marks it complete, and
    removes older ones; returns the main process's state, which every process continues with."""
    path = Path(folder) / f"step_{state.step:09d}"
    accelerator.save_state(str(path))
    if accelerator.is_main_process:
        write_atomic(path / "trainer_state.json", json.dumps(dataclasses.asdict(state)))
        for old in Path(folder).glob("step_*"):
            if old != path:
                shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()
    return read_state(path)


def read_state(checkpoint_dir):
    return TrainState(**json.loads((Path(checkpoint_dir) / "trainer_state.json").read_text()))


def accumulate_gradients(model, tokenizer, sentences, goal, micro_batch_size, accelerator, bfloat16=False,
                         matryoshka=None, loss="mse"):
    """Gradients of MSE(student(sentences), goal) over the whole batch (loss "cosine": of the mean cosine
    distance; "similarity": of the pairwise cosines' MSE; with `matryoshka` (dims, weights): of each prefix's,
    weighted); returns the loss.

    The batch runs as micro-batches of similar length: on CPU, padding a random batch to its longest
    sentence costs about 4x. Each micro-batch adds its share of the mean, so the gradient is the
    full batch's; processes synchronise gradients only after the last one."""
    token_ids = tokenizer(sentences, truncation=True, max_length=tokenizer.model_max_length)["input_ids"]
    by_length = np.argsort([len(ids) for ids in token_ids], kind="stable")
    parts = [by_length[start : start + micro_batch_size] for start in range(0, len(by_length), micro_batch_size)]

    def pad(part):
        return tokenizer.pad({"input_ids": [token_ids[i] for i in part]}, return_tensors="pt").to(accelerator.device)

    autocast = torch.autocast(accelerator.device.type, dtype=torch.bfloat16, enabled=bfloat16)
    if loss == "similarity":  # a loss over pairs needs every vector of the batch before its one backward pass
        with accelerator.autocast(), autocast:
            predicted = torch.cat([model(**pad(part)).sentence_embedding.float() for part in parts])
            value = prefix_similarity_mse(predicted, goal[by_length].to(accelerator.device), *(matryoshka or ()))
            accelerator.backward(value)
        return value.item()
    objective = prefix_cosine_distance if loss == "cosine" else prefix_mse
    total = 0.0
    for number, part in enumerate(parts):
        last = number == len(parts) - 1
        with contextlib.nullcontext() if last else accelerator.no_sync(model), accelerator.autocast(), autocast:
            predicted = model(**pad(part)).sentence_embedding.float()
            value = objective(predicted, goal[part].to(accelerator.device), len(goal), *(matryoshka or ()))
            accelerator.backward(value)
        total += value.item()
    return total


def prefix_mse(predicted, goal, rows, dims=None, weights=None):
    """sum_k weights[k] * MSE(predicted[:, :k], goal[:, :k]) over `dims` (default: the MSE of all coordinates), for a
    batch of `rows` sentences of which `predicted` may be a part (it adds its share of each mean).

    The few lines sentence-transformers' MatryoshkaLoss would give, without its L2-normalisation of each prefix:
    HPD's targets are raw PCA coordinates, whose prefixes are not unit vectors."""
    squared = (predicted - goal) ** 2
    if dims is None:
        return squared.sum() / (rows * goal.shape[1])
    return sum(weight * squared[:, :dim].sum() / (rows * dim) for dim, weight in zip(dims, weights))


def prefix_cosine_distance(predicted, goal, rows, dims=None, weights=None):
    """sum_k weights[k] * mean(1 - cos(predicted[:, :k], goal[:, :k])) over `dims` (default: the whole vectors), for
    a batch of `rows` sentences of which `predicted` may be a part, as prefix_mse."""
    dims, weights = (dims, weights) if dims else ([goal.shape[1]], [1.0])
    cosine = torch.nn.functional.cosine_similarity
    return sum(weight * (1 - cosine(predicted[:, :dim], goal[:, :dim], dim=1)).sum() / rows
               for dim, weight in zip(dims, weights))


def prefix_similarity_mse(predicted, goal, dims=None, weights=None, block=4096):
    """sum_k weights[k] * mean over pairs i != j of (cos(p_i, p_j) - cos(g_i, g_j))^2 on the first k coordinates,
    over `dims` (default: the whole vectors): a relational loss, blind to any rotation of the output, that asks
    for the teacher's similarities rather than its coordinates. The batch must be whole (pairs span it); rows go
    `block` at a time, so that validating on many sentences never holds a full n x n matrix."""
    dims, weights = (dims, weights) if dims else ([goal.shape[1]], [1.0])
    rows = len(goal)
    total = 0
    for dim, weight in zip(dims, weights):
        p, g = (torch.nn.functional.normalize(v[:, :dim], dim=1) for v in (predicted, goal))
        squared = sum(((p[start : start + block] @ p.T - g[start : start + block] @ g.T) ** 2).sum()
                      for start in range(0, rows, block))
        diagonal = (((p * p).sum(1) - (g * g).sum(1)) ** 2).sum()  # a vector with itself: 1 - 1, unless one is 0
        total = total + weight * (squared - diagonal) / (rows * (rows - 1))
    return total


def targets(teacher_vectors, weight, bias):
    return torch.from_numpy(teacher_vectors) @ weight.T + bias


def latest_checkpoint(folder):
    done = sorted(p.parent for p in Path(folder).glob("step_*/trainer_state.json"))
    return done[-1] if done else None


def read_log_record(run, step):
    """The evaluation record of `step` in the run's train_log.jsonl (None if it has none)."""
    with open(Path(run) / "train_log.jsonl", encoding="utf-8") as handle:
        records = [json.loads(line) for line in handle]
    return next((r for r in records if r["step"] == step and "valid_mse" in r), None)


def append_log(path, record):
    with open(path, "a", encoding="utf-8") as handle:
        handle.write(json.dumps(record) + "\n")


def truncate_log(path, step):
    """Drops records written after the checkpoint a run resumes from, so no step appears twice."""
    if Path(path).is_file():
        kept = [line for line in Path(path).read_text().splitlines() if line and json.loads(line)["step"] <= step]
        write_atomic(Path(path), "".join(line + "\n" for line in kept))


# --- the whole run -----------------------------------------------------------------------------------

def distill(config):
    """Runs every stage (skipping finished ones) and returns the output folder (the work dir with
    --stop-after teacher, the run folder with --stop-after start)."""
    from hpd_toolkit.eval.sts import load_stsb_split
    from hpd_toolkit.training.output_dir import check_target

    accelerator = make_accelerator(config)
    work, output = Path(config.work_dir), Path(config.output)
    # Cheap checks first: a bad --output, --teacher, --layers or --sts-dev must not wait for hours of encoding.
    if config.stop_after is None:
        check_target(output, overwrite=config.overwrite, sources=[work, *config.teacher, config.student])
    for teacher in config.teacher:
        config.teacher_dir(teacher)  # resolves the teacher and hashes its weights: a typo fails here
    with work_dir_lock(work, accelerator):
        check_work_dir(work, config)
        upgrade_work_dir(work, config)
        student = build_student(config.student, config.dim, config.layers, config.seed, config.trust_remote_code,
                                config.matryoshka_dims)
        stsb_dev = load_stsb_split(config.sts_dev, "dev") if config.sts_dev else None

        if accelerator.is_main_process:
            prepare_sentences_stage(config, work)
        accelerator.wait_for_everyone()
        valid, all_train, corpus = prepare_sentences_stage(config, work)
        train = all_train[: config.max_sentences]
        accelerator.print(f"Corpus: {corpus['train']} training sentences (of {corpus['available']}) and "
                          f"{corpus['valid']} validation sentences. Work dir {work}: run the same command again to "
                          "resume after an interruption.")
        if config.stop_after is None and len(train) < max(config.dim, config.pca_sentences
                                                          if config.projection != "none" else 0):
            raise ValueError(f"the corpus has {len(train)} training sentences, fewer than --pca-sentences "
                             f"{config.pca_sentences} or --dim {config.dim}; lower them or add text.")
        if config.projection != "none" and config.pca_sentences < config.dim:
            raise ValueError(f"--pca-sentences {config.pca_sentences} is fewer than --dim {config.dim}: PCA needs "
                             "at least as many sentences as dimensions.")
        fitted_on = len(config.pca_rows(train)) if config.pca_min_words and config.stop_after != "teacher" else None
        if fitted_on is not None and fitted_on < config.dim:
            raise ValueError(f"only {fitted_on} of the first {config.pca_sentences} training "
                             f"sentences have at least --pca-min-words {config.pca_min_words} words, fewer than "
                             f"--dim {config.dim}: lower --pca-min-words, raise --pca-sentences or use --unit "
                             "mixed or paragraph.")

        vectors = teacher_stage(config, work, valid + all_train, len(valid) + len(train), accelerator)
        del all_train
        if config.stop_after == "teacher":
            accelerator.print(f"Teacher vectors of {len(valid) + len(train)} sentences are in {work}.")
            return work
        projection = projection_stage(config, vectors, len(valid), accelerator, train)
        state = training_stage(config, student, stsb_dev, train, valid, vectors, projection, accelerator)
        if config.stop_after == "start":
            accelerator.print(f"Starting point validated (step 0, {config.run_dir()}/train_log.jsonl): "
                              f"{read_log_record(config.run_dir(), 0)}. Run the same command without --stop-after "
                              "to train on from it.")
            return config.run_dir()

        write_output(config, state, corpus, accelerator, sources=[work, *config.teacher, config.student])
    return output


def make_accelerator(config):
    from accelerate import Accelerator

    cuda = torch.cuda.is_available()
    # auto: accelerate's mixed precision on GPU; an explicit bfloat16 is torch.autocast in the training step
    mixed = ("bf16" if torch.cuda.is_bf16_supported() else "fp16") if cuda and config.student_dtype == "auto" else "no"
    # Each step's global batch is split across processes here, so the schedule advances once per step.
    return Accelerator(cpu=not cuda, mixed_precision=mixed, step_scheduler_with_optimizer=False)


def write_output(config, state, corpus, accelerator, sources, extra=None):
    """--output: the selected checkpoint of the run, with distill_config.json recording how it was made (`extra`:
    more keys for that record). `sources` are the inputs --output must not be or hold."""
    from hpd_toolkit.training.output_dir import replace_folder

    output = Path(config.output)
    if accelerator.is_main_process:
        from hpd_models import resolve

        # A student that is itself an hpd distill output: its record travels along, so the chain of runs that
        # made the model stays on record (and on its model card).
        previous = resolve(config.student) / "distill_config.json"
        record = {
            "settings": dataclasses.asdict(config),
            "teacher": config.teacher[0] if len(config.teacher) == 1 else config.teacher,
            "teacher_weights": config.teacher_weights,
            "student": config.student,
            "corpus": corpus,
            **(extra or {}),
            "processes": accelerator.num_processes,
            "run_dir": str(config.run_dir()),
            "best_step": state.best_step,
            "steps": state.step,
            "training_seconds": state.seconds,
            "validation": state.best_figures,
            "selected_by": config.select,
            "selection": f"step {state.best_step} of {state.step}: " + {
                "valid-mse": "the lowest validation MSE against the projected teacher vectors",
                "valid-cosine": "the lowest validation cosine distance to the projected teacher vectors",
                "valid-similarity": "the lowest validation similarity MSE (pairwise cosines against the "
                                    "projected teacher vectors')",
                "stsb-dev": "the highest STS-B dev Spearman",
                "last": "the last step"}[config.select]
            + (f" at the full {config.dim} dimensions" if config.matryoshka_dims and config.select != "last" else ""),
            **({"continues": json.loads(previous.read_text())} if previous.is_file() else {}),
        }
        with replace_folder(output, overwrite=config.overwrite, sources=sources) as staging:
            shutil.copytree(config.run_dir() / "best", staging, dirs_exist_ok=True)
            write_atomic(staging / "distill_config.json", json.dumps(record, indent=2) + "\n")
        accelerator.print(f"Selected step {state.best_step} ({record['selection']}): {state.best_figures}. "
                          f"HPD model written to {output}")
    accelerator.wait_for_everyone()
    return output


@contextlib.contextmanager
def work_dir_lock(work, accelerator):
    """One `hpd distill` per work dir at a time (the main process holds an flock; it ends with the process)."""
    if not accelerator.is_main_process:
        yield
        return
    work.mkdir(parents=True, exist_ok=True)
    with open(work / ".lock", "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            owner = handle.read().strip() or "unknown"
            raise ValueError(f"work dir {work} is in use by another hpd distill (pid {owner}); wait for it to "
                             "finish or pass another --work-dir.") from None
        handle.truncate(0)
        handle.write(str(os.getpid()))
        handle.flush()
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def check_work_dir(work, config):
    """A work dir belongs to one corpus (by content), unit, split and chunking: anything else would mix vectors
    of other sentences. A non-empty folder that is no work dir is refused rather than written into."""
    settings_file = work / "settings.json"
    if not settings_file.is_file():
        strangers = [p.name for p in work.iterdir() if p.name != ".lock"] if work.is_dir() else []
        if strangers:
            raise ValueError(f"work dir {work} is not empty and is not an hpd distill work dir (it holds "
                             f"{', '.join(sorted(strangers)[:3])}); pass an empty or new --work-dir.")
        return
    saved = json.loads(settings_file.read_text())
    settings = json.loads(json.dumps(config.data_settings()))
    if saved.get("corpus") and isinstance(saved["corpus"][0], str):  # a work dir from before content fingerprints
        saved["corpus"] = settings["corpus"] if saved["corpus"] == config.corpus else saved["corpus"]
    saved = {k: v for k, v in saved.items() if k not in TEACHER_SETTINGS}  # now per teacher (upgrade_work_dir)
    saved.setdefault("unit", "sentence")
    changed = [f"{k}: {_short(saved.get(k))} -> {_short(settings.get(k))}" for k in sorted(set(saved) | set(settings))
               if saved.get(k) != settings.get(k)]
    if changed:
        raise ValueError(f"work dir {work} was made with different settings ({'; '.join(changed)}); "
                         f"pass another --work-dir or delete {work} to start fresh.")


def upgrade_work_dir(work, config):
    """Brings a work dir of an earlier version (one teacher in work/teacher, corpus named by path) to today's
    layout, keeping its sentences and teacher vectors."""
    settings_file = work / "settings.json"
    if not settings_file.is_file():
        return
    saved = json.loads(settings_file.read_text())
    if "teacher" in saved and (work / "teacher").is_dir():
        legacy = DistillConfig(**{**dataclasses.asdict(config), "teacher": saved["teacher"],
                                  "teacher_dtype": saved.get("teacher_dtype", "float32")})
        target = legacy.teacher_dir(saved["teacher"])
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(work / "teacher", target)
        write_atomic(target / "teacher.json", json.dumps(
            {"teacher": saved["teacher"], "teacher_dtype": legacy.teacher_dtype,
             "weights_sha256": teacher_weights_sha256(saved["teacher"])}, indent=2))
    if saved != config.data_settings():
        write_atomic(settings_file, json.dumps(config.data_settings(), indent=2))


def _short(value):
    text = json.dumps(value)
    return text if len(text) <= 80 else text[:77] + "..."


def load_config_file(path):
    """Settings from a YAML or TOML file; keys are the flag names (dashes or underscores)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config file {path}: no such file.")
    text = path.read_text(encoding="utf-8")
    try:
        if path.suffix == ".toml":
            import tomllib

            values = tomllib.loads(text)
        else:
            import yaml

            values = yaml.safe_load(text) or {}
    except Exception as error:
        raise ValueError(f"config file {path} cannot be parsed: {error}") from None
    if not isinstance(values, dict):
        raise ValueError(f"config file {path} must hold a mapping of setting: value.")
    values = {key.replace("-", "_"): value for key, value in values.items()}
    unknown = sorted(set(values) - DistillConfig.fields())
    if unknown:
        raise ValueError(f"config file {path}: unknown setting(s) {', '.join(unknown)}; "
                         f"known: {', '.join(sorted(DistillConfig.fields()))}.")
    return values

