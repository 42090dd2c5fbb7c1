"""Unlabelled training sentences for distillation, from the formats HPD users have.

- plain text, one sentence per line (`.txt`, any name, optionally `.gz`);
- the AllNLI `.tsv.gz` (or `.tsv`) the paper used: header with `split`, `sentence1`, `sentence2`; train rows;
- WikiExtractor shards (`<doc ...>` ... `</doc>`, one paragraph per line): paragraphs split into sentences,
  or kept whole as passages (`unit="paragraph"`), or both (`unit="mixed"`);
- SentEval's transfer-task folder (data/downstream: SNLI, MR, CR, SUBJ, MPQA, SST, TREC, MRPC), labels dropped.
A folder is read file by file, sorted by path. Sentences are de-duplicated, shuffled with a seed and split.
Text is one line per item: line and paragraph separators inside an item (U+2028, form feed, NEL...) become
spaces, so a stored sentence list reads back with exactly as many lines as it was written with.
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
MAX_PASSAGE_WORDS = 160  # a passage of up to ~200 word pieces: within a 256-token student, as the teacher sees it
UNITS = ("sentence", "paragraph", "mixed")
# Everything str.splitlines() splits on besides "\n": inside an item it becomes a space.
LINE_BREAKS = re.compile("[\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029]")
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
    """Text of a corpus file; a stray invalid byte becomes U+FFFD (TREC's training file has one), binary data
    is refused."""
    raw = gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")
    head = raw.peek(8192)[:8192] if hasattr(raw, "peek") else b""
    if b"\0" in head or (head and head.decode("utf-8", "replace").count("\ufffd") > len(head) // 100 + 1):
        raw.close()
        raise ValueError("it is not UTF-8 text (binary data); remove it from the corpus or name the text files")
    return io.TextIOWrapper(raw, encoding="utf-8", errors="replace")


def wiki_sentences(lines, unit="sentence"):
    """From WikiExtractor lines (doc tags and headings dropped): sentences of 6-64 words with final
    punctuation (`unit="sentence"`), passages of whole sentences up to MAX_PASSAGE_WORDS (`"paragraph"`: a
    paragraph, or consecutive pieces of a longer one), or both (`"mixed"`)."""
    for line in lines:
        line = line.strip()
        if not line or line.startswith(("<doc", "</doc")):
            continue
        sentences = [s.strip() for s in SENTENCE_END.split(line)]
        sentences = [s for s in sentences if MIN_WORDS <= len(s.split()) <= MAX_WORDS and FINAL_PUNCTUATION.search(s)]
        if unit != "paragraph":
            yield from sentences  # headings are short lines, so the word count drops them
        if unit != "sentence":
            passage, words = [], 0
            for sentence in sentences:
                count = len(sentence.split())
                if passage and words + count > MAX_PASSAGE_WORDS:
                    yield from _passage(passage)
                    passage, words = [], 0
                passage.append(sentence)
                words += count
            yield from _passage(passage)


def _passage(sentences):
    """Two or more sentences make a passage (a single one is already a sentence item)."""
    if len(sentences) > 1:
        yield " ".join(sentences)


def nli_sentences(handle):
    """Both sentences of every train row of an AllNLI-style TSV."""
    reader = csv.DictReader(handle, delimiter="\t", quoting=csv.QUOTE_NONE)
    if not {"sentence1", "sentence2"} <= set(reader.fieldnames or ()):
        raise ValueError(f"expected columns sentence1 and sentence2 in the header; found {reader.fieldnames}")
    for row in reader:
        if row.get("split", "train") == "train":
            yield row["sentence1"].strip()
            yield row["sentence2"].strip()


def read_file(path, unit="sentence"):
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
            yield from wiki_sentences(lines, unit)
        else:
            yield from (line.strip() for line in lines if line.strip())


def _is_senteval_transfer(path):
    return path.is_dir() and (path / "SNLI").is_dir() and (path / "TREC").is_dir()


def corpus_files(path):
    """The files a corpus path is read from, in reading order (what its fingerprint covers)."""
    path = Path(path)
    if _is_senteval_transfer(path):
        return [file for pattern in SENTEVAL_TRANSFER for file in sorted(path.glob(pattern))]
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file() and not p.name.startswith("."))
        if not files:
            raise ValueError(f"corpus folder {path} has no files.")
        return files
    if path.is_file():
        return [path]
    raise FileNotFoundError(f"corpus {path}: no such file or folder.")


def read_corpus(paths, unit="sentence"):
    """Every sentence (or passage, see `wiki_sentences`) of `paths` (files or folders), in order, with
    duplicates; one line each."""
    if unit not in UNITS:
        raise ValueError(f"unit must be one of {', '.join(UNITS)}; got {unit!r}.")
    for path in map(Path, paths):
        if _is_senteval_transfer(path):
            yield from (LINE_BREAKS.sub(" ", s) for s in senteval_transfer_sentences(path))
            continue
        for file in corpus_files(path):
            try:
                yield from (LINE_BREAKS.sub(" ", s) for s in read_file(file, unit))
            except (OSError, UnicodeError, ValueError, csv.Error) as error:
                raise ValueError(f"corpus file {file} cannot be read: {error}") from None


def prepare_sentences(paths, max_sentences=None, valid_sentences=5000, seed=42, unit="sentence"):
    """(train, valid, sha256 of the sentence list): de-duplicated, shuffled with `seed`, valid taken first."""
    sentences = list(dict.fromkeys(s for s in read_corpus(paths, unit) if s.strip()))
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
