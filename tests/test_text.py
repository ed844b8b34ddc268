import json
import os

import numpy as np
import pytest

from emtm.data import text
from emtm.data.text import PAD, UNK, Vocab, WordVectors, load_word_vectors, tokenize
from emtm.errors import DataError


@pytest.mark.parametrize(
    ("sentence", "tokens"),
    [
        ("A person opens the door.", ["a", "person", "opens", "the", "door"]),
        ("The person's bag", ["the", "person", "'s", "bag"]),
        ("He doesn't SIT, they're gone!", ["he", "does", "n't", "sit", "they", "'re", "gone"]),
        ("person\u2019s", ["person", "'s"]),
        ("at 3 o'clock: t-shirt (2x)", ["at", "3", "o'clock", "t", "shirt", "2x"]),
        ('"quoted" -- text ... ', ["quoted", "text"]),
        ("", []),
        ("?!", []),
        ("players' ball", ["players", "ball"]),
        ("snake_case", ["snake", "case"]),
    ],
)
def test_tokenize(sentence, tokens):
    assert tokenize(sentence) == tokens


def _toy_vectors() -> WordVectors:
    words = ["the", "person", "door", "opens", "'s"]
    vectors = np.arange(len(words) * 3, dtype=np.float32).reshape(len(words), 3) + 1
    return WordVectors("toy", words, vectors)


SENTENCES = ["The person opens the door.", "The person's door", "A zebra opens"]


def test_vocab_build_order_and_encode():
    vocab = Vocab.build(SENTENCES)
    assert vocab.words[:2] == [PAD, UNK]
    # the x3, door/opens/person x2 (alphabetical), then singletons alphabetically
    assert vocab.words[2:] == ["the", "door", "opens", "person", "'s", "a", "zebra"]
    assert len(vocab) == 9
    assert vocab.encode(["the", "door", "unseen"]) == [2, 3, 1]
    assert Vocab.build(reversed(SENTENCES)).words == vocab.words  # deterministic


def test_vocab_with_word_vectors_and_min_count():
    vocab = Vocab.build(SENTENCES, word_vectors=_toy_vectors())
    assert vocab.words == [PAD, UNK, "the", "door", "opens", "person", "'s"]
    assert vocab.encode(tokenize("a zebra")) == [1, 1]
    assert "z" in vocab.chars  # chars come from all tokens, also those without a vector
    assert Vocab.build(SENTENCES, min_count=2).words == [PAD, UNK, "the", "door", "opens", "person"]


def test_encode_chars():
    vocab = Vocab.build(["abc ab a"])
    assert vocab.chars == [PAD, UNK, "a", "b", "c"]
    assert vocab.n_chars == 5
    assert vocab.encode_chars(["cab", "ax"]) == [[4, 2, 3], [2, 1]]
    assert vocab.encode_chars(["abcabc"], max_chars=4) == [[2, 3, 4, 2]]


def test_embedding_matrix():
    wv = _toy_vectors()
    vocab = Vocab.build(SENTENCES + ["unknown words"])
    matrix = vocab.embedding_matrix(wv)
    assert matrix.shape == (len(vocab), 3) and matrix.dtype == np.float32
    assert not matrix[0].any() and not matrix[1].any()
    for i, word in enumerate(vocab.words[2:], start=2):
        expected = wv.get(word)
        np.testing.assert_array_equal(matrix[i], expected if expected is not None else np.zeros(3))


def test_vocab_json_round_trip(tmp_path):
    vocab = Vocab.build(SENTENCES)
    d = vocab.to_json()
    assert d["version"] == text.VOCAB_VERSION
    json.dumps(d)
    again = Vocab.from_json(json.loads(json.dumps(d)))
    assert again.words == vocab.words and again.chars == vocab.chars
    path = tmp_path / "sub" / "vocab.json"
    vocab.save(path)
    loaded = Vocab.load(path)
    assert loaded.words == vocab.words and loaded.chars == vocab.chars
    assert loaded.encode(["door"]) == vocab.encode(["door"])


@pytest.mark.parametrize(
    ("content", "needle"),
    [
        ('{"version": 1, "words": ["<pad>", "<unk>"', "line 1"),
        ("[]", "JSON object"),
        ('{"version": 99, "words": ["<pad>", "<unk>"], "chars": ["<pad>", "<unk>"]}', "version"),
        ('{"version": 1, "words": ["a", "b"], "chars": ["<pad>", "<unk>"]}', "words"),
        ('{"version": 1, "words": ["<pad>", "<unk>", 3], "chars": ["<pad>", "<unk>"]}', "words"),
        ('{"version": 1, "words": ["<pad>", "<unk>", "a", "a"], "chars": ["<pad>", "<unk>"]}', "duplicate"),
        ('{"version": 1, "words": ["<pad>", "<unk>"]}', "chars"),
    ],
)
def test_vocab_load_bad_files(tmp_path, content, needle):
    path = tmp_path / "vocab.json"
    path.write_text(content)
    with pytest.raises(DataError, match=needle) as info:
        Vocab.load(path)
    assert str(path) in str(info.value)


def test_vocab_load_missing(tmp_path):
    with pytest.raises(DataError, match="not found"):
        Vocab.load(tmp_path / "nope.json")


def _cos(a, b):
    return float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))


def test_load_glove_package():
    wv = load_word_vectors("glove-6b-50d", progress=False)
    assert len(wv.words) == 400000 and wv.vectors.shape == (400000, 50)
    assert wv.dim == 50 and wv.name == "glove-6b-50d"
    door, window, egg = wv.get("door"), wv.get("window"), wv.get("egg")
    assert door is not None and door.dtype == np.float32
    assert _cos(door, window) > _cos(door, egg)
    assert wv.get("notawordxyz") is None
    assert load_word_vectors() is wv  # cached per process


def _write_glove(path, rows):
    path.write_text("".join(f"{w} {' '.join(str(x) for x in v)}\n" for w, v in rows))


GLOVE_ROWS = [("the", [0.1, 0.2, 0.3]), ("door", [1.0, -2.0, 3.5]), ("a b", [4.0, 5.0, 6.0])]


def test_txt_word_vectors_converted_and_cached(tmp_path):
    txt = tmp_path / "tiny.300d.txt"
    _write_glove(txt, GLOVE_ROWS)
    wv = load_word_vectors(str(txt), progress=False)
    assert wv.name == "tiny.300d" and wv.words == ["the", "door", "a b"] and wv.dim == 3
    np.testing.assert_allclose(wv.get("door"), [1.0, -2.0, 3.5])
    npy, vocab = tmp_path / "tiny.300d.npy", tmp_path / "tiny.300d.vocab.json"
    assert npy.is_file() and vocab.is_file()
    mtimes = (npy.stat().st_mtime_ns, vocab.stat().st_mtime_ns)

    text._TXT_CACHE.clear()  # a new process: must read the cache, not re-parse
    again = load_word_vectors(str(txt), progress=False)
    assert isinstance(again.vectors, np.memmap)
    assert (npy.stat().st_mtime_ns, vocab.stat().st_mtime_ns) == mtimes
    np.testing.assert_array_equal(np.asarray(again.vectors), np.asarray(wv.vectors))

    # a txt newer than the cache is parsed again
    _write_glove(txt, [("door", [9.0, 9.0, 9.0])])
    future = max(mtimes) + 10**9
    os.utime(txt, ns=(future, future))
    updated = load_word_vectors(str(txt), progress=False)
    assert updated.words == ["door"]
    np.testing.assert_array_equal(updated.get("door"), [9.0, 9.0, 9.0])


def test_txt_word_vectors_cache_dir(tmp_path):
    txt = tmp_path / "vecs.txt"
    _write_glove(txt, GLOVE_ROWS[::-1])  # first word has a space, as some do in glove.840B
    cache = tmp_path / "cache"
    wv = load_word_vectors(txt, cache_dir=cache, progress=False)
    assert wv.words == ["a b", "door", "the"] and wv.dim == 3
    assert (cache / "vecs.npy").is_file() and (cache / "vecs.vocab.json").is_file()
    assert not (tmp_path / "vecs.npy").exists()


def test_txt_word_vectors_word2vec_header(tmp_path):
    txt = tmp_path / "w2v.txt"
    txt.write_text("2 3\nthe 1 2 3\ndoor 4 5 6\n\n")
    wv = load_word_vectors(txt, progress=False)
    assert wv.words == ["the", "door"]
    np.testing.assert_array_equal(wv.get("door"), [4, 5, 6])


@pytest.mark.parametrize(
    "bad_line",
    ["door 1.0 2.0", "door 1.0 x 3.0", "door 1.0 2.0 3.0 nan_not_a_number"],
)
def test_txt_word_vectors_bad_line(tmp_path, bad_line):
    txt = tmp_path / "bad.txt"
    txt.write_text("the 0.1 0.2 0.3\nof 1 2 3\n" + bad_line + "\nend 1 1 1\n")
    with pytest.raises(DataError, match="line 3") as info:
        load_word_vectors(str(txt), progress=False)
    assert str(txt) in str(info.value)
    assert not (tmp_path / "bad.npy").exists() and not (tmp_path / "bad.vocab.json").exists()


def test_missing_and_unknown_word_vectors(tmp_path):
    with pytest.raises(DataError, match="glove-6b-50d") as info:
        load_word_vectors(str(tmp_path / "missing.txt"))
    assert "missing.txt" in str(info.value)
    with pytest.raises(DataError, match="options"):
        load_word_vectors("glove-42b")
