"""The UCI sentence corpus as a regression stream of variable-length word-vector sequences.

Data (shipped in ``mcdpf/datasets/sentences``, provenance in ``PROVENANCE.md``): the 1039
sentences of the abstracts and introductions of 30 scientific articles, each labelled by
three annotators with one of AIMX, OWNX, CONT, BASE, MISC (``labeled.tsv``), and 35 270
unlabelled sentences of 900 further articles (``unlabeled.txt.gz``).

- **Ground truth**: the majority label of the three annotators; without a majority, the
  expert's (annotator 3), as the corpus' donors specify.
- **Regression target**: the labels lie on an axis from the authors' own contribution to
  other people's work; the target is its position, ``AIMX = 1``, ``OWNX = 0.5``,
  ``CONT = 0`` (a comparison of the two), ``BASE = -0.5`` (others' work the authors build
  on), ``MISC = -1`` (background and others' work). An ordinal, not a class index: a
  prediction between two labels means "between them" on that axis.
- **Word vectors** (dimension ``p``, default 2 as in the papers), learned deterministically
  from the corpus itself, labelled and unlabelled text together: lower-case alphabetic
  tokens; vocabulary = tokens seen at least :data:`MIN_COUNT` times; symmetric
  co-occurrence counts within :data:`WINDOW` tokens; positive pointwise mutual information
  (PPMI); rank-``p`` truncated eigendecomposition by a seeded randomized subspace
  iteration; vectors ``U sqrt(S)``, each dimension centred and scaled to unit variance over
  the word occurrences in the labelled sentences; signs fixed so each dimension's largest
  entry is positive.
- **Sequences**: each labelled sentence, in corpus order (articles sorted by file name,
  sentences in document order), becomes one input sequence: the vectors of its in-vocabulary
  words, one column per word (1 to ~60 columns). Words below the count threshold are
  dropped; a sentence left with none gets one zero column.
"""

from __future__ import annotations

import gzip
import re
from collections import Counter
from functools import lru_cache
from importlib import resources
from pathlib import Path

import numpy as np

from .streams import Stream

LABEL_VALUES = {"AIMX": 1.0, "OWNX": 0.5, "CONT": 0.0, "BASE": -0.5, "MISC": -1.0}
MIN_COUNT = 5
WINDOW = 2
SUBSPACE_ITERATIONS = 6
OVERSAMPLING = 10
TOKEN = re.compile(r"[a-z]+")
# A labelled line is "LABEL<white space>sentence"; a few lines of the original files glue
# the label to the sentence with "--" ("MISC--in preventative ...").
LABELLED_LINE = re.compile(r"^(AIMX|OWNX|CONT|BASE|MISC)(?:--|\s+)(.*)$")


def tokens(text: str) -> list[str]:
    """Lower-case alphabetic tokens."""
    return TOKEN.findall(text.lower())


def majority_label(labels: list[str]) -> str:
    """Label given by at least two of three annotators, else the expert's (the third)."""
    top, count = Counter(labels).most_common(1)[0]
    return top if count >= 2 else labels[2]


def _dataset_file(name: str):
    return resources.files("mcdpf.datasets").joinpath("sentences").joinpath(name)


@lru_cache(maxsize=1)
def labelled_sentences() -> tuple[tuple, tuple, tuple]:
    """``(articles, sentences, (label1, label2, label3))`` in corpus order."""
    articles, sentences, labels = [], [], []
    for line in _dataset_file("labeled.tsv").read_text(encoding="utf-8").splitlines()[1:]:
        article, first, second, third, sentence = line.split("\t")
        articles.append(article)
        labels.append((first, second, third))
        sentences.append(sentence)
    return tuple(articles), tuple(sentences), tuple(labels)


@lru_cache(maxsize=1)
def unlabelled_sentences() -> tuple[str, ...]:
    """The unlabelled sentences, one string each."""
    with _dataset_file("unlabeled.txt.gz").open("rb") as raw, \
            gzip.open(raw, "rt", encoding="utf-8") as text:
        return tuple(line.rstrip("\n") for line in text)


def cooccurrence_ppmi(token_lists, vocabulary_index):
    """PPMI of symmetric co-occurrence counts within :data:`WINDOW`, as sparse COO."""
    size = len(vocabulary_index)
    rows, cols = [], []
    for words in token_lists:
        ids = np.array([vocabulary_index[w] for w in words if w in vocabulary_index],
                       dtype=np.int64)
        for distance in range(1, WINDOW + 1):
            if ids.size > distance:
                rows.append(ids[:-distance])
                cols.append(ids[distance:])
    first, second = np.concatenate(rows), np.concatenate(cols)
    codes, counts = np.unique(np.concatenate([first * size + second, second * size + first]),
                              return_counts=True)
    i, j = codes // size, codes % size
    counts = counts.astype(np.float64)
    marginal = np.bincount(i, weights=counts, minlength=size)
    pmi = np.log(counts * counts.sum() / (marginal[i] * marginal[j]))
    keep = pmi > 0
    return i[keep], j[keep], pmi[keep], size


def _sparse_times(i, j, values, size, dense):
    out = np.empty((size, dense.shape[1]))
    for column in range(dense.shape[1]):
        out[:, column] = np.bincount(i, weights=values * dense[j, column], minlength=size)
    return out


def leading_eigenvectors(i, j, values, size, rank, seed=0):
    """Top-``rank`` eigenpairs (by magnitude) of a symmetric sparse matrix; seeded."""
    rng = np.random.default_rng(seed)
    basis = np.linalg.qr(_sparse_times(i, j, values, size,
                                       rng.standard_normal((size, rank + OVERSAMPLING))))[0]
    for _ in range(SUBSPACE_ITERATIONS):
        basis = np.linalg.qr(_sparse_times(i, j, values, size, basis))[0]
    small = basis.T @ _sparse_times(i, j, values, size, basis)
    eigenvalues, vectors = np.linalg.eigh(0.5 * (small + small.T))
    order = np.argsort(-np.abs(eigenvalues))[:rank]
    return eigenvalues[order], basis @ vectors[:, order]


@lru_cache(maxsize=4)
def word_vectors(dimension: int) -> tuple[dict, np.ndarray]:
    """``(vocabulary index, vectors (V, dimension))`` learned from the whole corpus."""
    _, sentences, _ = labelled_sentences()
    labelled = [tokens(s) for s in sentences]
    corpus = [tokens(s) for s in unlabelled_sentences()] + labelled
    counts = Counter(word for words in corpus for word in words)
    vocabulary = sorted((w for w, c in counts.items() if c >= MIN_COUNT),
                        key=lambda w: (-counts[w], w))
    index = {word: k for k, word in enumerate(vocabulary)}
    i, j, values, size = cooccurrence_ppmi(corpus, index)
    eigenvalues, vectors = leading_eigenvectors(i, j, values, size, dimension)
    vectors = vectors * np.sqrt(np.abs(eigenvalues))
    occurrences = np.array([index[w] for words in labelled for w in words if w in index])
    used = vectors[occurrences]
    vectors = (vectors - used.mean(axis=0)) / used.std(axis=0)
    signs = np.sign(vectors[np.argmax(np.abs(vectors), axis=0), np.arange(dimension)])
    return index, vectors * signs


def sentence_stream(dimension: int) -> Stream:
    """The labelled sentences as a stream of word-vector sequences with ordinal targets."""
    index, vectors = word_vectors(dimension)
    _, sentences, labels = labelled_sentences()
    pieces, lengths, targets = [], [], []
    for sentence, votes in zip(sentences, labels, strict=True):
        ids = [index[w] for w in tokens(sentence) if w in index]
        columns = vectors[ids] if ids else np.zeros((1, dimension))
        pieces.append(columns)
        lengths.append(columns.shape[0])
        targets.append(LABEL_VALUES[majority_label(list(votes))])
    offsets = np.zeros(len(lengths) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    return Stream(columns=np.ascontiguousarray(np.concatenate(pieces)), offsets=offsets,
                  targets=np.array(targets))


def build_corpus_files(source: str | Path, target: str | Path) -> None:
    """Rebuild ``labeled.tsv`` and ``unlabeled.txt.gz`` from the UCI corpus folder.

    ``source`` holds ``labeled_articles/`` and ``unlabeled_articles/``. Sentences are
    aligned across the three annotators' files by position; the text kept is the
    expert's (annotator 3). The gzip has no timestamp, so the output is reproducible.
    """
    source, target = Path(source), Path(target)
    target.mkdir(parents=True, exist_ok=True)

    def body(path):
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
        return [line for line in lines if line.strip() and not line.startswith("#")]

    rows = ["article\tannotator1\tannotator2\tannotator3\tsentence"]
    for first in sorted((source / "labeled_articles").glob("*_1.txt")):
        article = first.name[:-len("_1.txt")]
        versions = [body(first.with_name(f"{article}_{k}.txt")) for k in (1, 2, 3)]
        if len({len(v) for v in versions}) != 1:
            raise ValueError(f"{article}: annotators' files differ in length")
        for lines in zip(*versions, strict=True):
            matches = [LABELLED_LINE.match(line) for line in lines]
            if not all(matches):
                raise ValueError(f"{article}: unlabelled line {lines[0][:40]!r}")
            labels = [match.group(1) for match in matches]
            sentence = " ".join(matches[2].group(2).split())
            rows.append("\t".join([article, *labels, sentence]))
    (target / "labeled.tsv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    unlabelled = []
    for path in sorted((source / "unlabeled_articles").glob("*/*.txt")):
        unlabelled += [" ".join(line.split()) for line in body(path)]
    with open(target / "unlabeled.txt.gz", "wb") as raw, \
            gzip.GzipFile(fileobj=raw, mode="wb", mtime=0, filename="") as packed:
        packed.write(("\n".join(unlabelled) + "\n").encode("utf-8"))
