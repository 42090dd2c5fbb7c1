"""Unlabelled training sentences for distillation, from the formats HPD users have.

- plain text, one sentence per line (`.txt`, any name, optionally `.gz`);
- the AllNLI `.tsv.gz` (or `.tsv`) the paper used: header with `split`, `sentence1`, `sentence2`; train rows;
- WikiExtractor shards (`<doc ...>` ... `</doc>`, one paragraph per line): paragraphs split into sentences;
- SentEval's transfer-task folder (data/downstream: SNLI, MR, CR, SUBJ, MPQA, SST, TREC, MRPC), labels dropped.
A folder is read file by file, sorted by path. Sentences are de-duplicated, shuffled with a seed and split.
"""

import csv
import gzip
import hashlib
import io
import itertools
import random
import re
from pathlib import Path

MIN_WORDS, MAX_WORDS = 6, 64
# A sentence ends at . ! or ? (maybe closed by a quote or bracket) followed by space and a capital or digit.
SENTENCE_END = re.compile(r"(?<=[.!?])[\"')\]]?\s+(?=[\"'(\[]?[A-Z0-9])")
FINAL_PUNCTUATION = re.compile(r"[.!?][\"')\]]?$")


# SentEval's transfer-task files, by path pattern inside the folder: how to get the text out of a line.
SENTEVAL_TRANSFER = {
    "SNLI/s[12].*": lambda line: line,
    "MR/rt-polarity.*": lambda line: line,
    "CR/custrev.*": lambda line: line,
    "SUBJ/subj.*": lambda line: line,
    "MPQA/mpqa.*": lambda line: line,
    "SST/binary/sentiment-*": lambda line: line.rsplit(None, 1)[0] if " " in line.strip() else "",  # label last
    "TREC/*.label": lambda line: line.split(None, 1)[1] if " " in line.strip() else "",  # "COARSE:fine" first
    "MRPC/msr_paraphrase_*.txt": lambda line: line.split("\t")[3:5] if line[:1].isdigit() else [],  # both strings
}


def senteval_transfer_sentences(folder):
    """The text of a SentEval data/downstream transfer folder, labels and ids dropped."""
    for pattern, extract in SENTEVAL_TRANSFER.items():
        for path in sorted(folder.glob(pattern)):
            with _open_text(path) as handle:
                for line in handle:
                    texts = extract(line.strip().lstrip("\ufeff"))
                    for text in [texts] if isinstance(texts, str) else texts:
                        if text.strip():
                            yield text.strip()


def _open_text(path):
    raw = gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")
    return io.TextIOWrapper(raw, encoding="utf-8", errors="replace")


def wiki_sentences(lines):
    """Sentences of 6-64 words with final punctuation from WikiExtractor lines (doc tags and headings dropped)."""
    for line in lines:
        line = line.strip()
        if not line or line.startswith(("<doc", "</doc")):
            continue
        for sentence in SENTENCE_END.split(line):
            sentence = sentence.strip()
            if MIN_WORDS <= len(sentence.split()) <= MAX_WORDS and FINAL_PUNCTUATION.search(sentence):
                yield sentence  # headings are short lines, so the word count drops them


def nli_sentences(handle):
    """Both sentences of every train row of an AllNLI-style TSV."""
    reader = csv.DictReader(handle, delimiter="\t", quoting=csv.QUOTE_NONE)
    if not {"sentence1", "sentence2"} <= set(reader.fieldnames or ()):
        raise ValueError(f"expected columns sentence1 and sentence2 in the header; found {reader.fieldnames}")
    for row in reader:
        if row.get("split", "train") == "train":
            yield row["sentence1"].strip()
            yield row["sentence2"].strip()


def read_file(path):
    """The sentences of one file, by its format."""
    path = Path(path)
    with _open_text(path) as handle:
        if path.name.endswith((".tsv", ".tsv.gz")):
            yield from nli_sentences(handle)
            return
        first = next((line for line in handle if line.strip()), None)
        if first is None:
            return
        lines = itertools.chain([first], handle)
        if first.lstrip().startswith("<doc"):
            yield from wiki_sentences(lines)
        else:
            yield from (line.strip() for line in lines if line.strip())


def read_corpus(paths):
    """Every sentence of `paths` (files or folders), in order, with duplicates."""
    for path in map(Path, paths):
        if path.is_dir() and (path / "SNLI").is_dir() and (path / "TREC").is_dir():
            yield from senteval_transfer_sentences(path)
            continue
        if path.is_dir():
            files = sorted(p for p in path.rglob("*") if p.is_file() and not p.name.startswith("."))
            if not files:
                raise ValueError(f"corpus folder {path} has no files.")
        elif path.is_file():
            files = [path]
        else:
            raise FileNotFoundError(f"corpus {path}: no such file or folder.")
        for file in files:
            try:
                yield from read_file(file)
            except (OSError, UnicodeError, ValueError, csv.Error) as error:
                raise ValueError(f"corpus file {file} cannot be read: {error}") from None


def prepare_sentences(paths, max_sentences=None, valid_sentences=5000, seed=42):
    """(train, valid, sha256 of the sentence list): de-duplicated, shuffled with `seed`, valid taken first."""
    sentences = list(dict.fromkeys(s for s in read_corpus(paths) if s))
    if not sentences:
        raise ValueError(f"the corpus {', '.join(map(str, paths))} holds no sentences.")
    random.Random(seed).shuffle(sentences)
    if max_sentences is not None:
        sentences = sentences[: valid_sentences + max_sentences]
    if len(sentences) <= valid_sentences:
        raise ValueError(f"the corpus has {len(sentences)} distinct sentences, not more than --valid-sentences "
                         f"({valid_sentences}); add text or lower --valid-sentences.")
    digest = hashlib.sha256("\n".join(sentences).encode("utf-8")).hexdigest()
    return sentences[valid_sentences:], sentences[:valid_sentences], digest
