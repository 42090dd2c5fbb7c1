"""STS evaluation: the paper's table (SentEval protocol) or MTEB's view of the raw releases.

Where each task's pairs live is described declaratively in PROTOCOLS; `spearman_x100` is the only
metric. Every distinct sentence of a run is encoded once, in batches of equal token length.
"""

import json
import math
import platform
import time
from pathlib import Path
from typing import NamedTuple

import numpy as np
from scipy.stats import spearmanr

from hpd_inference import pair_similarity


class Task(NamedTuple):
    """One STS task under every name it goes by; the key of TASK_TABLE is the canonical name (results files)."""

    column: str  # heading in tables, as in the paper
    mteb: str  # mteb's task name
    dataset: str  # MTEB's dataset on the Hub (the model card's model-index)
    aliases: tuple[str, ...] = ()  # also accepted by --tasks


TASK_TABLE = {  # in the paper's order
    **{year: Task(year, year, f"mteb/{year.lower()}-sts") for year in ("STS12", "STS13", "STS14", "STS15", "STS16")},
    "STSBenchmark": Task("STS-B", "STSBenchmark", "mteb/stsbenchmark-sts", aliases=("STS-B", "STSB")),
    "SICKRelatedness": Task("SICK-R", "SICK-R", "mteb/sickr-sts", aliases=("SICK-R", "SICKR")),
}
TASKS = tuple(TASK_TABLE)

SUBSETS = {
    "STS12": ("MSRpar", "MSRvid", "SMTeuroparl", "surprise.OnWN", "surprise.SMTnews"),
    "STS13": ("FNWN", "headlines", "OnWN"),  # SMT is not distributed (licence)
    "STS14": ("deft-forum", "deft-news", "headlines", "images", "OnWN", "tweet-news"),
    "STS15": ("answers-forums", "answers-students", "belief", "headlines", "images"),
    "STS16": ("answer-answer", "headlines", "plagiarism", "postediting", "question-question"),
}


class PairFiles(NamedTuple):
    """A SemEval year: `input` holds tab-separated sentence pairs, `gold` one score per line (empty = unscored)."""

    input: str  # pattern with {subset}
    gold: str


class PairTable(NamedTuple):
    """One tab-separated file with the score and both sentences in columns (0-based)."""

    path: str
    score: int
    sentences: tuple[int, int]
    header: bool


PROTOCOLS = {
    # SentEval's data/downstream layout, already Moses-tokenised: the SimCSE / HPD papers' protocol.
    "senteval": {
        **{year: PairFiles(f"STS/{year}-en-test/STS.input.{{subset}}.txt", f"STS/{year}-en-test/STS.gs.{{subset}}.txt")
           for year in SUBSETS},
        "STSBenchmark": PairTable("STS/STSBenchmark/sts-test.csv", score=4, sentences=(5, 6), header=False),
        "SICKRelatedness": PairTable("SICK/SICK_test_annotated.txt", score=3, sentences=(1, 2), header=True),
    },
    # The official raw releases, raw text, as MTEB evaluates them.
    "mteb": {
        **{year: PairFiles(f"{year}/STS.input.{{subset}}.txt", f"{year}/STS.gs.{{subset}}.txt") for year in SUBSETS},
        "STS16": PairFiles("STS16/STS2016.input.{subset}.txt", "STS16/STS2016.gs.{subset}.txt"),
        "STSBenchmark": PairTable("STSBenchmark/sts-test.csv", score=4, sentences=(5, 6), header=False),
        "SICKRelatedness": PairTable("SICK/SICK.txt", score=4, sentences=(1, 2), header=True),
    },
}
OBTAIN_HINT = {
    "senteval": "the SentEval layout comes from SentEval's data/downstream/get_transfer_data.bash "
    "(here: ../shared/data/senteval)",
    "mteb": "the raw official STS12-16, STS-B and SICK releases (here: ../shared/data/sts-raw)",
}

PUBLISHED = {  # senteval protocol, Spearman x 100: STS12 ... SICK-R, and the paper's average
    "HPD-TinyBERT-F128": (74.29, 83.05, 78.80, 84.62, 81.17, 84.36, 80.83, 81.02),
    "HPD-MiniLM-F128": (74.94, 84.52, 80.25, 84.87, 81.90, 84.98, 81.15, 81.80),
    "SimCSE-RoBERTa-large": (77.46, 87.27, 82.36, 86.66, 83.93, 86.70, 81.95, 83.76),
}


class Pairs(NamedTuple):
    sentences1: list[str]
    sentences2: list[str]
    scores: list[float]


def canonical_task(name):
    """A task's key in TASK_TABLE from any of its names (STS-B -> STSBenchmark); an unknown name comes back as is."""
    name = name.strip()
    return next((key for key, task in TASK_TABLE.items() if name in (key, task.mteb, *task.aliases)), name)


def parse_tasks(names):
    """'STS12,STS-B,SICK-R' or a list -> canonical task names, in TASKS order; unknown names are an error."""
    if isinstance(names, str):
        names = [n for n in names.split(",") if n.strip()]
    canonical = [canonical_task(n) for n in names]
    unknown = [n for n in canonical if n not in TASKS]
    if unknown or not canonical:
        raise ValueError(f"unknown task {', '.join(unknown) or '(none given)'}; choose from {', '.join(TASKS)} "
                         "(aliases STS-B, SICK-R).")
    return [t for t in TASKS if t in canonical]


def load_pairs(data_dir, protocol="senteval", tasks=TASKS):
    """{task: {subset: Pairs}} read from `data_dir` in the protocol's layout; unscored pairs dropped."""
    if protocol not in PROTOCOLS:
        raise ValueError(f"unknown protocol {protocol!r}; choose senteval or mteb.")
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise FileNotFoundError(f"{data_dir}: no such data folder; expected {OBTAIN_HINT[protocol]}.")
    loaded = {}
    for task in parse_tasks(tasks):
        source = PROTOCOLS[protocol][task]
        if isinstance(source, PairFiles):
            loaded[task] = {s: _read_pair_files(data_dir, source, s, protocol) for s in SUBSETS[task]}
        else:
            loaded[task] = {"test": _read_pair_table(data_dir, source, protocol)}
    return loaded


def load_stsb_split(data_dir, split="dev"):
    """STS-B pairs of one split from a SentEval data folder, a raw-releases folder or the STSBenchmark folder."""
    data_dir = Path(data_dir)
    for relative, protocol in ((f"STS/STSBenchmark/sts-{split}.csv", "senteval"),
                               (f"STSBenchmark/sts-{split}.csv", "mteb"), (f"sts-{split}.csv", "mteb")):
        if (data_dir / relative).is_file():
            return _read_pair_table(data_dir, PairTable(relative, score=4, sentences=(5, 6), header=False), protocol)
    raise FileNotFoundError(f"{data_dir}: no sts-{split}.csv (looked in STS/STSBenchmark/, STSBenchmark/ and the "
                            f"folder itself); point at the SentEval data folder, e.g. ../shared/data/senteval.")


def _require(path, protocol):
    if not path.is_file():
        raise FileNotFoundError(f"{path}: missing, so the data folder is not in the {protocol} layout or is "
                                f"incomplete; {OBTAIN_HINT[protocol]}.")
    return read_utf8(path).splitlines()


def read_utf8(path):
    """The text of `path`; a file that is not UTF-8 is a one-line error naming it and the first bad byte."""
    try:
        return Path(path).read_text(encoding="utf-8")
    except UnicodeDecodeError as error:
        raise ValueError(utf8_error(path, error)) from None


def utf8_error(path, error):
    byte = error.object[error.start : error.start + 1].hex()
    return (f"{path} is not UTF-8 text (byte 0x{byte} at offset {error.start}: {error.reason}); "
            "re-save it as UTF-8.")


def _clean(sentence, protocol):
    # SentEval splits on whitespace and its batcher joins the tokens with single spaces.
    return " ".join(sentence.split()) if protocol == "senteval" else sentence


def _read_pair_files(data_dir, source, subset, protocol):
    input_path, gold_path = data_dir / source.input.format(subset=subset), data_dir / source.gold.format(subset=subset)
    lines, gold = _require(input_path, protocol), _require(gold_path, protocol)
    if len(lines) != len(gold):
        raise ValueError(f"{gold_path} has {len(gold)} lines but {input_path.name} has {len(lines)}: "
                         "gold and input must match line by line; re-copy the data.")
    pairs = Pairs([], [], [])
    for number, (line, score) in enumerate(zip(lines, gold), 1):
        if not score.strip():
            continue  # an unscored pair
        columns = line.split("\t")  # STS16's raw files carry two source columns after the sentences
        if len(columns) < 2:
            raise ValueError(f"{input_path}:{number}: expected two tab-separated sentences.")
        pairs.sentences1.append(_clean(columns[0], protocol))
        pairs.sentences2.append(_clean(columns[1], protocol))
        pairs.scores.append(_score(score, gold_path, number))
    if not pairs.scores:
        raise ValueError(f"{gold_path}: no scored pairs; the gold file is empty or truncated.")
    return pairs


def _read_pair_table(data_dir, source, protocol):
    path = data_dir / source.path
    lines = _require(path, protocol)[1 if source.header else 0 :]
    pairs = Pairs([], [], [])
    needed = max(source.score, *source.sentences) + 1
    for number, line in enumerate(lines, 2 if source.header else 1):
        if not line.strip():
            continue
        columns = line.strip("\n").split("\t")
        if len(columns) < needed:
            raise ValueError(f"{path}:{number}: expected at least {needed} tab-separated columns, found {len(columns)}.")
        pairs.sentences1.append(_clean(columns[source.sentences[0]], protocol))
        pairs.sentences2.append(_clean(columns[source.sentences[1]], protocol))
        pairs.scores.append(_score(columns[source.score], path, number))
    return pairs


def _score(text, path, number):
    try:
        score = float(text)
    except ValueError:
        raise ValueError(f"{path}:{number}: gold score {text.strip()!r} is not a number.") from None
    if not (math.isfinite(score) and 0 <= score <= 5):  # NaN would turn every Spearman into NaN
        raise ValueError(f"{path}:{number}: gold score {text.strip()!r} is not a number from 0 to 5; "
                         "fix or re-copy the data file.")
    return score


def spearman_x100(embeddings1, embeddings2, gold, similarity=None):
    """Spearman correlation x 100 between the pairs' cosine similarities (or `similarity(e1, e2)`, row-wise, for
    quantized vectors) and the gold scores."""
    cosines = (similarity or pair_similarity)(embeddings1, embeddings2)
    if np.ptp(cosines) == 0 or np.ptp(gold) == 0:
        raise ValueError("Spearman is undefined: every pair has the same cosine (does the model give every "
                         "sentence the same embedding?) or the same gold score.")
    return 100 * spearmanr(cosines, gold).statistic


def evaluate_sts(model, data_dir, protocol="senteval", tasks=TASKS, batch_size=64, max_seq_length=None,
                 show_progress_bar=True, trust_remote_code=False, backend="torch", file_name=None, precision="float32",
                 truncate_dim=None):
    """Scores `model` on the STS tasks; returns the results dict that `--output` writes.

    `truncate_dim` scores the first k coordinates of each embedding (a Matryoshka model's smaller size;
    `check_truncation` says which sizes are refused or warned about).

    `backend` "onnx"/"openvino" runs the graph `hpd export` wrote (`file_name` picks which); `precision` other than
    float32 scores the vectors as stored at that precision (hpd_inference.pair_similarity: cosine of the decoded
    int8/uint8 vectors, 1 - 2 * hamming / dim for binary), int8/uint8 with the ranges `hpd calibrate` stored."""
    from hpd_inference import check_precision, load_ranges, quantize
    from hpd_models import check_truncation, encode_distinct, load_any_encoder

    start = time.perf_counter()
    check_precision(precision)
    pairs = load_pairs(data_dir, protocol, tasks)  # read everything first: a data error costs no encoding
    is_path = isinstance(model, (str, Path))
    ranges = None
    if precision in ("int8", "uint8"):
        if not is_path:
            raise ValueError(f"{precision} scoring needs the model folder (its calibrated ranges), not a loaded model.")
        ranges = load_ranges(Path(model).expanduser(), dim=truncate_dim)
    encoder = load_any_encoder(str(model), backend, file_name, trust_remote_code, max_seq_length) if is_path else model
    if truncate_dim is not None and hasattr(encoder, "get_embedding_dimension"):
        check_truncation(encoder, truncate_dim)  # before the encoding
    sentences = [s for subsets in pairs.values() for p in subsets.values() for s in (*p.sentences1, *p.sentences2)]
    encode_start = time.perf_counter()
    vectors = encode_distinct(encoder, sentences, batch_size, show_progress_bar)
    encode_seconds = time.perf_counter() - encode_start
    if truncate_dim is not None:
        if not hasattr(encoder, "get_embedding_dimension"):  # any object with encode(): its output tells the size
            check_truncation(encoder, truncate_dim, len(next(iter(vectors.values()))))
        vectors = {sentence: vector[:truncate_dim] for sentence, vector in vectors.items()}
    dim = len(next(iter(vectors.values())))
    similarity = None
    if precision != "float32":
        distinct = list(vectors)
        vectors = dict(zip(distinct, quantize(np.stack([vectors[s] for s in distinct]), precision, ranges)))
        similarity = lambda a, b: pair_similarity(a, b, precision, ranges, dim)  # noqa: E731

    details = {}
    for task, subsets in pairs.items():
        per_subset, all_e1, all_e2, all_gold = {}, [], [], []
        for subset, p in subsets.items():
            e1 = np.stack([vectors[s] for s in p.sentences1])
            e2 = np.stack([vectors[s] for s in p.sentences2])
            per_subset[subset] = {"spearman": round(spearman_x100(e1, e2, p.scores, similarity), 4),
                                  "pairs": len(p.scores)}
            all_e1.append(e1), all_e2.append(e2), all_gold.extend(p.scores)
        counts = [s["pairs"] for s in per_subset.values()]
        values = [s["spearman"] for s in per_subset.values()]
        details[task] = {
            # SentEval's "all": one Spearman over the year's concatenated subsets (the papers' figure)
            "spearman": round(spearman_x100(np.concatenate(all_e1), np.concatenate(all_e2), all_gold, similarity), 4),
            "spearman_mean": round(float(np.mean(values)), 4),
            "spearman_wmean": round(float(np.average(values, weights=counts)), 4),
            "pairs": sum(counts),
            "subsets": per_subset,
        }
    scores = {task: round(d["spearman"], 2) for task, d in details.items()}
    scores["Avg"] = round(float(np.mean([d["spearman"] for d in details.values()])), 2)
    from hpd_inference import weights_sha256

    local_folder = isinstance(model, (str, Path)) and Path(model).expanduser().is_dir()
    return {
        "model": str(model) if isinstance(model, (str, Path)) else type(model).__name__,
        "model_sha256": weights_sha256(Path(model).expanduser()) if local_folder else None,
        "protocol": protocol,
        "backend": backend,
        "file_name": file_name,
        "precision": precision,
        "bytes_per_embedding": int(next(iter(vectors.values())).nbytes),
        "data": str(data_dir),
        "scores": scores,
        "tasks": details,
        "parameters": sum(p.numel() for p in encoder.parameters()) if hasattr(encoder, "parameters") else None,
        "embedding_dim": dim,
        "truncate_dim": truncate_dim,  # None: the model's whole output
        "distinct_sentences": len(vectors),
        "sentence_occurrences": len(sentences),
        "sentences_per_s": round(len(vectors) / encode_seconds, 1) if encode_seconds > 0 else None,
        "encode_seconds": round(encode_seconds, 2),
        "wall_seconds": round(time.perf_counter() - start, 2),
        "versions": _versions(),
    }


def format_table(results, compare=False):
    """The paper's table: STS12 ... SICK-R, Avg; with `compare`, the published rows and their gap to this model."""
    tasks = [t for t in TASKS if t in results["scores"]]
    headings = [TASK_TABLE[t].column for t in tasks] + ["Avg"]
    ours = [results["scores"][t] for t in tasks] + [results["scores"]["Avg"]]
    name = Path(results["model"]).name or results["model"]
    variant = [results.get("backend", "torch") if results.get("file_name") is None else
               f"{results['backend']} {Path(results['file_name']).name}", results.get("precision", "float32")]
    variant = [v for v in variant if v not in ("torch", "float32")]
    if results.get("truncate_dim") is not None:
        variant.append(f"first {results['truncate_dim']} dimensions")
    rows = [(f"{name} ({', '.join([results['protocol'], *variant])})", ours)]
    if compare:
        for published, values in PUBLISHED.items():
            theirs = [values[TASKS.index(t)] for t in tasks]
            theirs.append(values[-1] if len(tasks) == len(TASKS) else round(float(np.mean(theirs)), 2))
            rows.append((f"{published} (paper)", theirs))
            rows.append(("  difference", [a - b for a, b in zip(ours, theirs)]))
    width = max(len(label) for label, _ in rows)
    lines = [" " * width + "".join(f"{h:>9}" for h in headings)]
    for label, values in rows:
        sign = "+" if label.strip() == "difference" else ""
        lines.append(f"{label:<{width}}" + "".join(f"{v:>{sign}9.2f}" for v in values))
    if compare and results["protocol"] != "senteval":
        lines.append("(published rows use the SentEval protocol; this run used " + results["protocol"] + ")")
    return "\n".join(lines)


def write_results(results, path):
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:  # NaN is not JSON, and a NaN score is a failure, never a result
        text = json.dumps(results, indent=2, allow_nan=False)
    except ValueError:
        raise ValueError(f"the results hold NaN or infinite values, so {path} was not written; check the model "
                         "and the data.") from None
    path.write_text(text + "\n", encoding="utf-8")


def _versions():
    import importlib.metadata as metadata

    versions = {"python": platform.python_version()}
    for package in ("torch", "transformers", "sentence-transformers", "scipy", "numpy"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            pass
    return versions
