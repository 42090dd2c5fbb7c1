"""STS and retrieval scored by the real `mteb` package: its task objects, its evaluator, its result files.

We only load the model (`eval.sts.load_encoder`) and, offline, hand mteb the pairs of the raw official
releases read by `eval.sts.load_pairs` and, for retrieval tasks (SciFact), the BEIR folders read by
`eval.retrieval.load_beir`. Results land in mteb's results layout,
`<output_folder>/<org>__<name>/<revision>/<Task>.json`, next to mteb's `model_meta.json`, a
`model_meta.py` (the model's `ModelMeta` as Python source, for a pull request to mteb) and
`hpd_provenance.jsonl`: for each task, where its data came from (the Hub, or local files and whether
those equal MTEB's own dataset) and which model weights were scored. `hpd release` reads it to refuse
results that do not belong in the leaderboard.
"""

import json
import math
import re
from pathlib import Path

import numpy as np

from hpd_toolkit.eval.retrieval import RETRIEVAL_TASKS, load_beir
from hpd_toolkit.eval.sts import TASK_TABLE, TASKS, canonical_task, load_pairs, parse_tasks
from hpd_models import load_encoder
from hpd_inference import weights_sha256

# Not *.json: mteb's result loaders take every other .json beside model_meta.json for a task result.
PROVENANCE_FILE = "hpd_provenance.jsonl"
META_IMPORTS = """from mteb.models import ModelMeta, SentenceTransformerEncoderWrapper
from mteb.models.model_meta import ScoringFunction
"""
META_HEADER = '''"""ModelMeta for a pull request to mteb (mteb/models/model_implementations/), written by `hpd eval mteb`.

Fields that cannot be read from the model folder are None: `hpd release --mteb-results` fills in what the
release knows (licence, languages, revision, citation, training data...) and lists the rest in SUBMITTING.md.
"""

''' + META_IMPORTS + "\n"


def run_mteb(model, tasks, output_folder, data_dir=None, batch_size=64, show_progress_bar=True, name=None,
             trust_remote_code=False) -> dict:
    """Evaluates `model` (a folder or Hub id) with mteb on STS and retrieval tasks; see the module docstring for the
    files.

    Returns {"scores": {mteb task name: main score (cosine_spearman; ndcg_at_10 for retrieval) x 100, 2 decimals},
    "results_folder", "model_meta_file", "data_source", "differs_from_mteb": {task: how its local data differ from
    MTEB's}}. With `data_dir`, the tasks get the local files and never touch the Hub: STS tasks the raw releases
    (`data_dir`/STS12, ...), retrieval tasks their BEIR folder (`data_dir`/scifact).
    `name` ("org/name") overrides the model name in the results layout and the ModelMeta. A NaN or infinite
    score is an error and then no file is written: mteb would write it as a result, ready for a pull request."""
    from hpd_inference import require

    mteb = require("mteb", "hpd eval mteb", "pip install 'hpd-toolkit[eval]'")
    from mteb.models import SentenceTransformerEncoderWrapper

    names, retrieval_names = split_tasks(tasks)
    # Read the data before loading the model, so a missing file costs nothing (FileNotFoundError from the readers).
    pairs = load_pairs(data_dir, protocol="mteb", tasks=names) if data_dir is not None and names else None
    beir = {name: load_beir(beir_folder(data_dir, name)) for name in retrieval_names} if data_dir is not None else {}
    encoder = load_encoder(model, trust_remote_code=trust_remote_code)

    class FiniteEncoder(SentenceTransformerEncoderWrapper):
        def encode(self, inputs, **kwargs):  # mteb would fail obscurely on NaN vectors, or score them as NaN
            embeddings = super().encode(inputs, **kwargs)
            if not np.isfinite(np.asarray(embeddings)).all():
                raise ValueError(f"{model} produced NaN or infinite embeddings: its weights hold NaN or inf, or "
                                 "float16 overflowed; check the weights or load the model in float32.")
            return embeddings

    wrapper = FiniteEncoder(encoder)
    # mteb takes the model's name and revision (hence the results folder) from this attribute.
    wrapper.mteb_model_meta = meta = _model_meta(model, encoder, name)

    mteb_tasks = mteb.get_tasks(tasks=[TASK_TABLE[name].mteb for name in names] + retrieval_names)
    if data_dir is not None:
        sts_tasks = [task for task in mteb_tasks if task.metadata.name not in beir]
        if sts_tasks:
            _feed_local_data(sts_tasks, pairs)
        _feed_local_retrieval([task for task in mteb_tasks if task.metadata.name in beir], beir)
        kinds = " and ".join(kind for kind, present in (("raw", sts_tasks), ("BEIR", beir)) if present)
        data_source = f"local {kinds} files in {data_dir}"
        print(f"mteb: {', '.join(t.metadata.name for t in mteb_tasks)} fed from the {data_source}, "
              "not from the Hugging Face Hub.")
        root = Path(data_dir).expanduser().resolve()
        provenance = {task.metadata.name: {"data": "local",
                                           "data_dir": str(beir[task.metadata.name].folder.resolve())
                                           if task.metadata.name in beir else str(root),
                                           "differs_from_mteb": local_data_difference(task)} for task in mteb_tasks}
    else:
        data_source = "Hugging Face Hub"  # each task's load_data downloads its pinned dataset revision
        provenance = {task.metadata.name: {"data": "hub", "dataset": task.metadata.dataset["path"],
                                           "dataset_revision": task.metadata.revision} for task in mteb_tasks}

    # cache=None: mteb's default is a ResultCache under ~/.cache/mteb (or $MTEB_CACHE), which must never
    # receive results of local or toy data; we write the same files ourselves, with mteb's serialisation.
    result = mteb.evaluate(wrapper, mteb_tasks, cache=None, co2_tracker=False, show_progress_bar=show_progress_bar,
                           encode_kwargs={"batch_size": batch_size, "show_progress_bar": show_progress_bar})

    for task_result in result.task_results:
        try:
            json.dumps(task_result.model_dump()["scores"], allow_nan=False, default=str)
        except ValueError:
            raise ValueError(f"mteb scored {task_result.task_name} as NaN or infinite, so no result files were "
                             f"written; check that {model} gives finite, varied embeddings.") from None
    folder = Path(output_folder) / meta.model_name_as_path() / meta.revision
    folder.mkdir(parents=True, exist_ok=True)
    for task_result in result.task_results:
        task_result.to_disk(folder / f"{task_result.task_name}.json")
    # the same model_meta.json that ResultCache.save_to_cache writes next to the results
    (folder / "model_meta.json").write_text(json.dumps(meta.to_dict(), default=str, indent=4), encoding="utf-8")
    meta_file = write_model_meta(model, encoder, name, folder / "model_meta.py", meta)
    local = Path(model).expanduser().is_dir()
    model_sha256 = weights_sha256(Path(model).expanduser()) if local else None  # a Hub id: which files is unknown here
    write_provenance(folder, {task: {**entry, "model": str(model), "model_sha256": model_sha256}
                              for task, entry in provenance.items()})

    main_scores = {r.task_name: r.get_score() for r in result.task_results}  # cosine_spearman; ndcg_at_10
    order = [TASK_TABLE[name].mteb for name in names] + retrieval_names
    return {
        "scores": {name: round(100 * float(main_scores[name]), 2) for name in order},
        "results_folder": str(folder),
        "model_meta_file": str(meta_file),
        "data_source": data_source,
        "differs_from_mteb": {task: entry["differs_from_mteb"] for task, entry in provenance.items()
                              if entry.get("differs_from_mteb")},
    }


def split_tasks(tasks):
    """'STS12,STS-B,SciFact' or a list -> (canonical STS task names in TASKS order, retrieval task names);
    unknown names are an error."""
    if isinstance(tasks, str):
        tasks = [name for name in tasks.split(",") if name.strip()]
    names = [name.strip() for name in tasks]
    retrieval = [name for name in RETRIEVAL_TASKS if name in names]
    others = [name for name in names if name not in RETRIEVAL_TASKS]
    unknown = [name for name in others if canonical_task(name) not in TASKS]
    if unknown or not names:
        raise ValueError(f"unknown task {', '.join(unknown) or '(none given)'}; choose from "
                         f"{', '.join([*TASKS, *RETRIEVAL_TASKS])} (aliases STS-B, SICK-R).")
    return (parse_tasks(others) if others else []), retrieval


def beir_folder(data_dir, task):
    """Where `hpd eval mteb --data DIR` reads a retrieval task: DIR/<BEIR name>, e.g. DIR/scifact."""
    folder = Path(data_dir).expanduser() / RETRIEVAL_TASKS[task]
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: no such folder; {task} is read from DIR/{RETRIEVAL_TASKS[task]} in BEIR "
                                f"format, so give --data the folder that holds {RETRIEVAL_TASKS[task]}/ (here: "
                                "../shared/data/retrieval).")
    return folder


def write_model_meta(model, encoder, name, path, meta=None):
    """The model's ModelMeta as Python source for a pull request to mteb."""
    meta = meta or _model_meta(model, encoder, name)
    Path(path).write_text(META_HEADER + f"{_variable_name(meta.name)} = {meta.to_python()}\n", encoding="utf-8")
    return Path(path)


def read_provenance(folder):
    """{mteb task name: provenance entry} recorded in a results folder by `hpd eval mteb` (empty when none)."""
    path = Path(folder) / PROVENANCE_FILE
    if not path.is_file():
        return {}
    entries = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    return {entry["task"]: entry for entry in entries}


def write_provenance(folder, entries):
    """Adds or replaces the tasks of `entries` in the folder's provenance record (runs may add tasks one by one)."""
    merged = {**read_provenance(folder), **{task: {"task": task, **entry} for task, entry in entries.items()}}
    (Path(folder) / PROVENANCE_FILE).write_text("".join(json.dumps(merged[task]) + "\n" for task in sorted(merged)),
                                                encoding="utf-8")


def local_data_difference(task):
    """None when the data fed to `task` equals MTEB's own dataset in every descriptive statistic mteb ships for
    it (STS: pairs, characters and lengths per side, distinct texts and pairs, score range and mean; retrieval:
    documents and queries with their characters, lengths and distinct texts, judgements per query, distinct
    relevant documents); else the first statistic that differs, as a phrase. mteb computes both sides: the
    shipped file and, here, its own statistics code run on the fed data."""
    from mteb.abstasks.sts import AbsTaskSTS

    shipped = task.metadata.descriptive_stats
    if not shipped:
        return f"mteb ships no statistics of its {task.metadata.name} dataset to compare them with"
    for split in task.metadata.eval_splits:
        if split not in shipped:
            return f"mteb ships no statistics of its {task.metadata.name} {split} split to compare them with"
        ours = dict(task._calculate_descriptive_statistics_from_split(split))
        if isinstance(task, AbsTaskSTS):
            # mteb 2.x counts unordered distinct pairs; the statistics it ships were counted as ordered pairs
            column1, column2 = task.column_names
            ordered = len(set(zip(task.dataset[split][column1], task.dataset[split][column2])))
            if shipped[split].get("unique_pairs") == ordered:
                ours["unique_pairs"] = ordered
        difference = _first_difference(ours, shipped[split])
        if difference:
            return f"{split} {difference}"
    return None


def _first_difference(ours, theirs, prefix=""):
    for key, expected in theirs.items():
        found = ours.get(key) if isinstance(ours, dict) else None
        if isinstance(expected, dict):
            difference = _first_difference(found or {}, expected, f"{prefix}{key}.")
        elif isinstance(expected, float) and isinstance(found, (int, float)):
            difference = None if math.isclose(found, expected, rel_tol=1e-9) else (found, expected)
        else:
            difference = None if found == expected else (found, expected)
        if isinstance(difference, tuple):
            return f"{prefix}{key} is {difference[0]} where MTEB's dataset has {difference[1]}"
        if difference:
            return difference
    return None


def _feed_local_data(mteb_tasks, pairs):
    """Gives each mteb task our pairs as its test split and marks it loaded, so mteb never calls load_data."""
    from datasets import Dataset, DatasetDict

    ours = {TASK_TABLE[name].mteb: name for name in pairs}
    for task in mteb_tasks:
        column1, column2 = task.column_names  # ("sentence1", "sentence2") for every STS task, plus "score"
        columns = {column1: [], column2: [], "score": []}
        for subset in pairs[ours[task.metadata.name]].values():  # a year's subsets, concatenated, as in MTEB
            columns[column1] += subset.sentences1
            columns[column2] += subset.sentences2
            columns["score"] += subset.scores
        # monolingual tasks have the single hf_subset "default", which mteb reads as dataset[split]
        task.dataset = DatasetDict({split: Dataset.from_dict(columns) for split in task.metadata.eval_splits})
        task.data_loaded = True


def _feed_local_retrieval(mteb_tasks, beir):
    """Gives each mteb retrieval task its BEIR folder's corpus, judged queries and qrels as its eval split, in the
    structure mteb's own loader builds (`RetrievalSplitData` under the "default" subset), and marks it loaded."""
    from datasets import Dataset

    for task in mteb_tasks:
        data = beir[task.metadata.name]
        # mteb joins title and text itself (title + " " + text), as for its Hub datasets
        corpus = Dataset.from_dict({"id": data.doc_ids, "title": data.titles, "text": data.texts})
        queries = Dataset.from_dict({"id": data.query_ids, "text": data.queries})
        task.dataset = {"default": {split: {"corpus": corpus, "queries": queries,
                                            "relevant_docs": {q: dict(judged) for q, judged in data.qrels.items()},
                                            "top_ranked": None} for split in task.metadata.eval_splits}}
        task.data_loaded = True


def _model_meta(model, encoder, name=None):
    """mteb's ModelMeta of the loaded model, named "<org>/<name>" as mteb's results layout needs."""
    from mteb.models import ModelMeta

    # fill_missing=None: its default (False) only triggers a deprecation warning; fetch_from_hf=False keeps
    # this offline (a Hub lookup would fill license and release date for Hub models, but fails without network).
    meta = ModelMeta.from_sentence_transformer_model(encoder, fill_missing=None, fetch_from_hf=False)
    local = Path(model).expanduser().is_dir()
    n_parameters = sum(p.numel() for p in encoder.parameters())
    meta = meta.model_copy(update={
        # a folder has no organisation: "local/<folder name>"; a Hub id is already "<org>/<name>"
        "name": name or (f"local/{Path(model).expanduser().resolve().name}" if local else model),
        "reference": None if local else f"https://huggingface.co/{model}",
        "loader_kwargs": {"trust_remote_code": True},  # HPD folders carry their modelling code
        "n_parameters": n_parameters,
        "use_instructions": any(encoder.prompts.values()),  # sentence-transformers lists empty prompts
    })
    return meta.model_copy(update={"memory_usage_mb": meta.calculate_memory_usage_mb()})  # float32 estimate


def _variable_name(name):
    variable = re.sub(r"\W+", "_", name.split("/")[-1]).strip("_").lower() or "model"
    return variable if variable[0].isalpha() else f"model_{variable}"
