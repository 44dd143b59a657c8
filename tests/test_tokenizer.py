"""MobileBertTokenizer: parity with transformers' MobileBertTokenizerFast, checkpoint I/O and input errors.

The vocabularies are built here (no hub access): a WordPiece vocab trained with the `tokenizers` trainer on a
multilingual sample, plus the BERT special tokens and a hand list of words and subwords.
"""

from __future__ import annotations

import json
import pickle
import shutil
import subprocess
import sys
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tokenizers
import transformers
from tokenizers import models, normalizers, pre_tokenizers, trainers

from model_def import MobileBertTokenizer
from model_def.tokenization_mobilebert import BatchEncoding

SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]

TRAINING_SAMPLE = [
    "The quick brown fox jumps over the lazy dog. The dog sat on the mat!",
    "Hello world, hello there; hellos and worlds: unaffable, unbelievable, unbreakable.",
    "Question answering needs offsets, and token classification needs word ids.",
    "Le café est très bon, naïve façade, crème brûlée, Ångström, Über, Straße, İstanbul.",
    "El niño comió piñata; São Paulo é grande. Ελληνικά κείμενα. Русский текст здесь.",
    "中文文本测试，我们喜欢自然语言处理。日本語のテキストです。한국어 문장입니다.",
    "مرحبا بالعالم. שלום עולם. ภาษาไทย. हिन्दी भाषा.",
    "Emoji 😀 👍🏽 👨‍👩‍👧‍👦 🏳️‍🌈 ❤️ and symbols $100.50 (really?) don't stop-believing!!!",
    "Numbers 1234567890 3.14159 2024-01-01 and e-mail foo@example.com with URLs https://example.org/path.",
]
# Hand-picked entries so tokenization hits whole words, continuation pieces and cased forms.
HAND_TOKENS = [
    "hello", "world", "##s", "the", "cat", "sat", "on", "mat", "mask", "cls", "sep", "un", "##aff", "##able",
    "cafe", "café", "naive", "naïve", "angstrom", "Hello", "World", "Café", "Ångström", "中", "文", "日", "本", "語",
    "한", "##국", "##어", "😀", "👍", "##🏽", "question", "context", "answer", "<mask>", "[unused0]",
]  # fmt: skip

TRICKY_TEXTS = [
    "Hello world!",
    "café naïve Ångström façade",
    "cafe\u0301 e\u0301\u0300 A\u030a combining marks",
    "中文 日本語 한국어 混合English文本",
    "😀👍🏽 👨‍👩‍👧‍👦 🏳️‍🌈 ❤️ emoji",
    "\x00hello\x07 world\tfoo\r\nbar\x7f\x85baz",
    "zero\u200bwidth\u200djoiner\ufeffbom \u2028line \u00a0nbsp\u3000ideo",
    "a" * 150,
    "x" * 100,
    "y" * 101,
    "short " + "z" * 120 + " tail",
    "",
    " ",
    "\t\n\r   \u3000",
    "[MASK]",
    "[CLS] hello [SEP]",
    "[mask] [Mask] [ MASK ]",
    "the [MASK] sat on the [MASK].",
    "x[MASK]y [MASK][MASK] [PAD][UNK]",
    "don't stop-believing!!! (really?) $100.50 foo@example.com",
    "HELLO WoRlD unaffable UNAFFABLE",
    "ﬁ ligature İstanbul straße Ωmega",
    "مرحبا بالعالم שלום ภาษาไทย हिन्दी",
    "\ufffd replacement \U0001f600\U0001f600\U0001f600",
]

PAIRS = [
    ("What sat on the mat?", "The cat sat on the mat. Hello world, café naïve 中文 text goes on and on."),
    ("", "context only"),
    ("question only with quite a few words in it", ""),
    ("[MASK] question", "context with [MASK] and 😀"),
    ("短い", "日本語のテキストです。한국어 문장입니다."),
]

QA_QUESTIONS = ["Who sat on the mat?", "Where is 中文?"]
QA_CONTEXTS = [
    " ".join(TRAINING_SAMPLE),
    "Short context: the cat sat on the mat. " * 6,
]


# ------------------------------------------------------------------ fixtures (tokenizer-specific)


def _write_vocab(path: Path, extra: list[str] = ()) -> Path:
    tok = tokenizers.Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    trainer = trainers.WordPieceTrainer(vocab_size=700, min_frequency=1, special_tokens=SPECIAL_TOKENS)
    tok.train_from_iterator(TRAINING_SAMPLE * 3, trainer=trainer)
    trained = sorted(tok.get_vocab().items(), key=lambda item: item[1])
    vocab = [token for token, _ in trained]
    vocab += [token for token in [*HAND_TOKENS, *extra] if token not in set(vocab)]
    path.write_text("".join(f"{token}\n" for token in vocab), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def tok_vocab_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A checkpoint directory holding only vocab.txt."""
    directory = tmp_path_factory.mktemp("tok_vocab_only")
    _write_vocab(directory / "vocab.txt")
    return directory


@pytest.fixture(scope="module")
def tok_vocab_file(tok_vocab_dir: Path) -> Path:
    return tok_vocab_dir / "vocab.txt"


@pytest.fixture(scope="module")
def tok(tok_vocab_file: Path) -> MobileBertTokenizer:
    return MobileBertTokenizer.from_vocab(tok_vocab_file)


@pytest.fixture(scope="module")
def hf_tok(tok_vocab_dir: Path) -> Any:
    return transformers.MobileBertTokenizerFast.from_pretrained(str(tok_vocab_dir))


@pytest.fixture(scope="module")
def hf_tok_from_vocab(tok_vocab_file: Path) -> Any:
    # transformers 5.24's BertTokenizer ignores `vocab_file=` when constructed directly (it builds a 5-token
    # default vocab); `vocab=<path>` is the constructor argument that actually loads vocab.txt.
    return transformers.MobileBertTokenizerFast(vocab=str(tok_vocab_file))


def _as_plain(encoding: Any) -> dict[str, Any]:
    """BatchEncoding (ours or transformers') -> plain dict of lists for equality checks."""
    plain = {}
    for key, value in dict(encoding).items():
        if hasattr(value, "tolist"):
            value = value.tolist()
        plain[key] = json.loads(json.dumps(value))  # tuples (offsets) -> lists on both sides
    return plain


def _assert_same(ours: Any, theirs: Any) -> None:
    assert _as_plain(ours) == _as_plain(theirs)


def _outcome(fn: Any) -> tuple[str, Any]:
    try:
        return "ok", _as_plain(fn())
    except Exception as exc:  # transformers raises plain Exception from Rust for impossible truncations
        return "error", exc


# ------------------------------------------------------------------ pipeline and single-text parity


def test_backend_pipeline_serializes_identically_to_transformers(tok, hf_tok, hf_tok_from_vocab):
    ours = json.loads(tok.backend.to_str())
    for reference in (hf_tok, hf_tok_from_vocab):
        theirs = json.loads(reference.backend_tokenizer.to_str())
        for key in ("normalizer", "pre_tokenizer", "model", "post_processor", "decoder", "added_tokens"):
            assert ours[key] == theirs[key], key
        assert ours["truncation"] is None and ours["padding"] is None


@pytest.mark.parametrize("text", TRICKY_TEXTS)
def test_single_tricky_text_matches_transformers_ids_tokens_and_offsets(tok, hf_tok, hf_tok_from_vocab, text):
    ours = tok(text, return_offsets_mapping=True, return_special_tokens_mask=True)
    for reference in (hf_tok, hf_tok_from_vocab):
        _assert_same(ours, reference(text, return_offsets_mapping=True, return_special_tokens_mask=True))
    assert tok.tokenize(text) == hf_tok.tokenize(text)
    assert ours.tokens() == hf_tok(text).tokens()


def test_empty_and_whitespace_strings_encode_to_cls_sep(tok, hf_tok):
    for text in ("", "   ", "\t\r\n", "\u200b\ufeff"):
        assert tok(text)["input_ids"] == [tok.cls_token_id, tok.sep_token_id]
        _assert_same(tok(text), hf_tok(text))
    # transformers treats an empty single text_pair as "no pair" but keeps empty pairs inside a batch.
    _assert_same(tok("", ""), hf_tok("", ""))
    _assert_same(tok("hello", ""), hf_tok("hello", ""))
    _assert_same(tok([""], [""]), hf_tok([""], [""]))
    assert tok([""], [""])["input_ids"] == [[tok.cls_token_id, tok.sep_token_id, tok.sep_token_id]]


def test_literal_special_tokens_match_only_exact_uppercase_text(tok, hf_tok):
    ids = tok("the [MASK] sat [mask]")["input_ids"]
    assert ids.count(tok.mask_token_id) == 1
    assert tok.tokenize("[MASK]") == ["[MASK]"]
    assert tok.tokenize("[mask]") != ["[MASK]"]
    _assert_same(tok("[CLS][SEP][PAD][MASK]"), hf_tok("[CLS][SEP][PAD][MASK]"))


def test_words_longer_than_100_chars_become_unk(tok, hf_tok):
    assert tok.tokenize("a" * 101) == ["[UNK]"]
    assert tok.tokenize("a" * 100) != ["[UNK]"]
    assert tok.tokenize("a" * 101) == hf_tok.tokenize("a" * 101)


# ------------------------------------------------------------------ batches, padding, truncation


BATCH = [text for text in TRICKY_TEXTS if len(text) < 90] + ["a b c d e f g h i j k l m n o p q r s t u v w x y z"]

CALL_OPTIONS = [
    {},
    {"padding": True},
    {"padding": "longest"},
    {"padding": "do_not_pad"},
    {"padding": False, "truncation": False},
    {"padding": "max_length", "max_length": 48},
    {"padding": "max_length", "max_length": 8},  # no truncation asked: long rows stay long
    {"padding": True, "pad_to_multiple_of": 8},
    {"padding": "max_length", "max_length": 12, "truncation": True},
    {"padding": "max_length", "max_length": 16, "truncation": True, "pad_to_multiple_of": 8},
    {"max_length": 6},  # transformers rule: max_length alone turns on longest_first truncation
    {"truncation": True},  # no max_length and unlimited model_max_length: no truncation
    {"padding": "max_length"},  # no max_length and unlimited model_max_length: no padding
    {"truncation": "longest_first", "max_length": 5, "padding": True},
    {"add_special_tokens": False, "padding": True},
    {"add_special_tokens": False, "truncation": True, "max_length": 3},
    {"return_token_type_ids": False, "return_attention_mask": False},
    {"return_special_tokens_mask": True, "return_length": True, "padding": True},
    {"return_offsets_mapping": True, "padding": True, "truncation": True, "max_length": 10},
]


@pytest.mark.parametrize("options", CALL_OPTIONS, ids=lambda options: repr(options))
def test_batch_of_mixed_lengths_matches_transformers(tok, hf_tok, options):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        _assert_same(tok(BATCH, **options), hf_tok(BATCH, **options))
        _assert_same(tok(BATCH[1], **options), hf_tok(BATCH[1], **options))


@pytest.mark.parametrize("options", CALL_OPTIONS, ids=lambda options: repr(options))
def test_batch_of_pairs_matches_transformers_as_pair_list_and_as_text_pair(tok, hf_tok, options):
    first, second = [p[0] for p in PAIRS], [p[1] for p in PAIRS]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        reference = hf_tok(first, second, **options)
        _assert_same(tok(first, second, **options), reference)
        _assert_same(tok(PAIRS, **options), reference)
        _assert_same(tok(*PAIRS[0], **options), hf_tok(*PAIRS[0], **options))


@pytest.mark.parametrize("strategy", ["longest_first", True, "only_first", "only_second"])
@pytest.mark.parametrize("max_length", [3, 4, 6, 9, 14])
def test_pair_truncation_matches_transformers_or_fails_with_clear_error(tok, hf_tok, strategy, max_length):
    kwargs = {"truncation": strategy, "max_length": max_length, "return_offsets_mapping": True}
    for first, second in PAIRS:
        status, reference = _outcome(lambda f=first, s=second: hf_tok(f, s, **kwargs))
        if status == "ok":
            _assert_same(tok(first, second, **kwargs), reference)
        else:  # transformers surfaces the Rust "Truncation error"; we say which setting cannot work
            with pytest.raises(ValueError, match=r"cannot truncate to max_length=.*truncation="):
                tok(first, second, **kwargs)


def test_single_text_truncation_strategies_match_transformers(tok, hf_tok):
    text = TRICKY_TEXTS[0] + " " + TRICKY_TEXTS[3]
    for strategy in ("longest_first", "only_first", True):
        for max_length in (2, 3, 7):
            kwargs = {"truncation": strategy, "max_length": max_length}
            _assert_same(tok(text, **kwargs), hf_tok(text, **kwargs))


def test_offsets_match_transformers_for_pairs_and_batches(tok, hf_tok):
    kwargs = {"return_offsets_mapping": True, "padding": True}
    _assert_same(tok(PAIRS, **kwargs), hf_tok(PAIRS, **kwargs))
    _assert_same(tok(TRICKY_TEXTS, **kwargs), hf_tok(TRICKY_TEXTS, **kwargs))


# ------------------------------------------------------------------ overflow / stride (question answering)


@pytest.mark.parametrize("stride", [0, 1, 4])
@pytest.mark.parametrize("padding", [False, "max_length"])
def test_qa_only_second_overflow_with_stride_matches_transformers(tok, hf_tok, stride, padding):
    kwargs = {
        "truncation": "only_second",
        "max_length": 24,
        "stride": stride,
        "return_overflowing_tokens": True,
        "return_offsets_mapping": True,
        "padding": padding,
    }
    ours, theirs = tok(QA_QUESTIONS, QA_CONTEXTS, **kwargs), hf_tok(QA_QUESTIONS, QA_CONTEXTS, **kwargs)
    _assert_same(ours, theirs)
    assert len(ours["input_ids"]) > len(QA_QUESTIONS)  # the long context really overflowed
    assert [ours.sequence_ids(i) for i in range(len(ours["input_ids"]))] == [
        theirs.sequence_ids(i) for i in range(len(theirs["input_ids"]))
    ]
    single = tok(QA_QUESTIONS[0], QA_CONTEXTS[0], **kwargs)
    _assert_same(single, hf_tok(QA_QUESTIONS[0], QA_CONTEXTS[0], **kwargs))
    assert set(single["overflow_to_sample_mapping"]) == {0}


def test_overflow_of_single_texts_and_tensors_match_transformers(tok, hf_tok):
    kwargs = {"truncation": True, "max_length": 8, "stride": 2, "return_overflowing_tokens": True}
    _assert_same(tok(QA_CONTEXTS, **kwargs), hf_tok(QA_CONTEXTS, **kwargs))
    _assert_same(tok("hello world", **kwargs), hf_tok("hello world", **kwargs))  # batch axis kept
    padded = {**kwargs, "padding": True, "return_tensors": "np"}
    _assert_same(tok(QA_CONTEXTS, **padded), hf_tok(QA_CONTEXTS, **padded))


# ------------------------------------------------------------------ output types


def test_list_input_gives_list_of_lists_and_single_text_gives_flat_lists(tok):
    single, batch = tok("hello world"), tok(["hello world"])
    assert isinstance(single, BatchEncoding) and isinstance(single, dict)
    assert single["input_ids"] == batch["input_ids"][0]
    assert all(isinstance(i, int) for i in single["input_ids"])
    assert single.input_ids is single["input_ids"]
    assert list(single) == ["input_ids", "token_type_ids", "attention_mask"]


def test_numpy_tensors_are_int64_and_match_transformers(tok, hf_tok):
    ours = tok(BATCH, padding=True, return_tensors="np", return_offsets_mapping=True)
    theirs = hf_tok(BATCH, padding=True, return_tensors="np", return_offsets_mapping=True)
    for key, value in ours.items():
        assert isinstance(value, np.ndarray) and value.dtype == np.int64, key
        np.testing.assert_array_equal(value, theirs[key])
    assert ours["offset_mapping"].shape == (*ours["input_ids"].shape, 2)
    assert tok("hello", return_tensors="np")["input_ids"].shape == (1, 3)


def test_torch_tensors_are_int64_and_match_transformers(tok, hf_tok):
    torch = pytest.importorskip("torch")
    ours = tok(PAIRS, padding="max_length", max_length=32, truncation=True, return_tensors="pt")
    theirs = hf_tok(PAIRS, padding="max_length", max_length=32, truncation=True, return_tensors="pt")
    for key, value in ours.items():
        assert isinstance(value, torch.Tensor) and value.dtype == torch.int64, key
        assert torch.equal(value, theirs[key])


def test_module_works_without_torch_installed(tok_vocab_file):
    module_path = Path(__file__).resolve().parents[1] / "model_def" / "tokenization_mobilebert.py"
    script = f"""
import importlib.util, sys
sys.modules["torch"] = None  # any `import torch` now fails
spec = importlib.util.spec_from_file_location("tokenization_mobilebert", {str(module_path)!r})
module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)
tok = module.MobileBertTokenizer.from_vocab({str(tok_vocab_file)!r})
out = tok(["hello world", "the cat"], padding=True, return_tensors="np")
assert out["input_ids"].shape[0] == 2
"""
    subprocess.run([sys.executable, "-c", script], check=True, timeout=60)


# ------------------------------------------------------------------ vocabulary helpers


def test_special_tokens_ids_and_sizes_match_transformers(tok, hf_tok):
    for name in ("unk", "sep", "pad", "cls", "mask"):
        assert getattr(tok, f"{name}_token") == getattr(hf_tok, f"{name}_token")
        assert getattr(tok, f"{name}_token_id") == getattr(hf_tok, f"{name}_token_id")
    assert tok.all_special_tokens == hf_tok.all_special_tokens
    assert tok.all_special_ids == hf_tok.all_special_ids
    assert tok.vocab_size == hf_tok.vocab_size
    assert len(tok) == len(hf_tok)
    assert tok.model_max_length == hf_tok.model_max_length
    assert tok.get_vocab() == hf_tok.get_vocab()
    assert tok.num_special_tokens_to_add(pair=True) == 3
    assert isinstance(tok.backend, tokenizers.Tokenizer)


def test_token_id_conversions_match_transformers(tok, hf_tok):
    tokens = ["hello", "##s", "[MASK]", "not-in-vocab", "[mask]"]
    assert tok.convert_tokens_to_ids(tokens) == hf_tok.convert_tokens_to_ids(tokens)
    assert tok.convert_tokens_to_ids("not-in-vocab") == tok.unk_token_id
    ids = tok("hello [MASK] world")["input_ids"]
    assert tok.convert_ids_to_tokens(ids) == hf_tok.convert_ids_to_tokens(ids)
    assert tok.convert_ids_to_tokens(ids, skip_special_tokens=True) == hf_tok.convert_ids_to_tokens(
        ids, skip_special_tokens=True
    )
    assert tok.convert_ids_to_tokens(ids[1]) == hf_tok.convert_ids_to_tokens(ids[1])
    assert tok.convert_ids_to_tokens(np.int64(ids[1])) == hf_tok.convert_ids_to_tokens(ids[1])


@pytest.mark.parametrize("skip_special_tokens", [False, True])
def test_decode_matches_transformers(tok, hf_tok, skip_special_tokens):
    batch = tok(TRICKY_TEXTS, padding=True)["input_ids"]
    for ids in batch:
        assert tok.decode(ids, skip_special_tokens=skip_special_tokens) == hf_tok.decode(
            ids, skip_special_tokens=skip_special_tokens
        )
    assert tok.decode(batch, skip_special_tokens=skip_special_tokens) == hf_tok.decode(
        batch, skip_special_tokens=skip_special_tokens
    )
    assert tok.decode(np.asarray(batch[0])) == hf_tok.decode(batch[0])
    assert tok.decode(batch[0][1]) == hf_tok.decode(batch[0][1])


def test_backend_keeps_no_truncation_or_padding_after_calls(tok):
    tok(BATCH, padding="max_length", truncation=True, max_length=16, stride=2, return_overflowing_tokens=True)
    assert tok.backend.truncation is None and tok.backend.padding is None
    assert tok.backend.encode("hello world").ids == tok("hello world")["input_ids"]


def test_concurrent_calls_with_different_settings_do_not_interfere(tok):
    settings = [{"padding": True}, {"truncation": True, "max_length": 5}, {"padding": "max_length", "max_length": 40}]
    expected = [_as_plain(tok(BATCH, **kwargs)) for kwargs in settings]
    jobs = [i % len(settings) for i in range(60)]
    with ThreadPoolExecutor(max_workers=6) as pool:
        results = list(pool.map(lambda i: _as_plain(tok(BATCH, **settings[i])), jobs))
    assert results == [expected[i] for i in jobs]


# ------------------------------------------------------------------ checkpoints: save / load


def _encode_everything(tokenizer: Any) -> list[dict[str, Any]]:
    return [
        _as_plain(tokenizer(TRICKY_TEXTS, padding=True, return_offsets_mapping=True)),
        _as_plain(tokenizer(PAIRS, truncation="only_second", max_length=28, stride=2, return_overflowing_tokens=True)),
    ]


def test_save_pretrained_writes_tokenizer_json_vocab_and_config(tok, tmp_path):
    written = tok.save_pretrained(tmp_path / "saved")
    assert sorted(Path(p).name for p in written) == ["tokenizer.json", "tokenizer_config.json", "vocab.txt"]
    config = json.loads((tmp_path / "saved" / "tokenizer_config.json").read_text())
    assert config["do_lower_case"] is True and config["mask_token"] == "[MASK]"


@pytest.mark.parametrize(
    "keep", [["tokenizer.json"], ["vocab.txt"], ["tokenizer.json", "vocab.txt", "tokenizer_config.json"]]
)
def test_save_then_load_from_single_file_gives_identical_outputs(tok, hf_tok, tmp_path, keep):
    saved = tmp_path / "saved"
    tok.save_pretrained(saved)
    for path in saved.iterdir():
        if path.name not in keep:
            path.unlink()
    reloaded = MobileBertTokenizer.from_pretrained(saved)
    assert _encode_everything(reloaded) == _encode_everything(tok) == _encode_everything(hf_tok)
    assert reloaded.get_vocab() == tok.get_vocab()
    # transformers reads the same directory the same way
    hf_reloaded = transformers.MobileBertTokenizerFast.from_pretrained(str(saved))
    assert _encode_everything(hf_reloaded) == _encode_everything(tok)


def test_saved_tokenizer_json_alone_reproduces_ids_with_template(tok, tmp_path):
    tok.save_pretrained(tmp_path)
    raw = tokenizers.Tokenizer.from_file(str(tmp_path / "tokenizer.json"))
    ours = tok(TRICKY_TEXTS)
    assert [e.ids for e in raw.encode_batch(TRICKY_TEXTS)] == ours["input_ids"]
    assert [e.type_ids for e in raw.encode_batch(PAIRS)] == tok(PAIRS)["token_type_ids"]
    assert [e.ids for e in raw.encode_batch(PAIRS)] == tok(PAIRS)["input_ids"]


def test_loads_checkpoint_saved_by_transformers(hf_tok, tmp_path):
    hf_tok.save_pretrained(str(tmp_path))  # transformers 5 writes tokenizer.json + tokenizer_config.json only
    ours = MobileBertTokenizer.from_pretrained(tmp_path)
    assert _encode_everything(ours) == _encode_everything(hf_tok)


@pytest.mark.parametrize(
    "config",
    [
        {"do_lower_case": False},
        {"do_lower_case": True, "strip_accents": False},
        {"do_lower_case": False, "strip_accents": True},
        {"tokenize_chinese_chars": False},
        {"model_max_length": 16},
    ],
    ids=lambda config: repr(config),
)
def test_from_pretrained_honours_tokenizer_config_like_transformers(tok_vocab_file, tmp_path, config):
    for layout in (["vocab.txt"], ["vocab.txt", "tokenizer.json"]):
        directory = tmp_path / "-".join(layout)
        directory.mkdir()
        shutil.copy(tok_vocab_file, directory / "vocab.txt")
        if "tokenizer.json" in layout:
            MobileBertTokenizer.from_vocab(tok_vocab_file).backend.save(str(directory / "tokenizer.json"))
        (directory / "tokenizer_config.json").write_text(json.dumps(config))
        ours = MobileBertTokenizer.from_pretrained(directory)
        theirs = transformers.MobileBertTokenizerFast.from_pretrained(str(directory))
        assert ours.model_max_length == theirs.model_max_length
        assert _encode_everything(ours) == _encode_everything(theirs)
        for kwargs in ({"truncation": True}, {"padding": "max_length", "truncation": True}):
            _assert_same(ours(TRICKY_TEXTS, **kwargs), theirs(TRICKY_TEXTS, **kwargs))


def test_from_pretrained_reads_special_tokens_map(tok_vocab_file, tmp_path):
    shutil.copy(tok_vocab_file, tmp_path / "vocab.txt")
    (tmp_path / "special_tokens_map.json").write_text(json.dumps({"mask_token": "<mask>"}))
    ours = MobileBertTokenizer.from_pretrained(tmp_path)
    theirs = transformers.MobileBertTokenizerFast.from_pretrained(str(tmp_path))
    assert ours.mask_token == theirs.mask_token == "<mask>"
    assert ours.mask_token_id == theirs.mask_token_id
    _assert_same(ours("a <mask> b [MASK]"), theirs("a <mask> b [MASK]"))


def test_config_less_tokenizer_json_keeps_its_own_normalizer_like_tokenizers_from_file(tok_vocab_file, tmp_path):
    # transformers would rebuild the normalizer with its defaults (lowercasing); the Triton model loads the file
    # with tokenizers.Tokenizer.from_file, so we keep the file's own settings when no tokenizer_config.json says else.
    MobileBertTokenizer.from_vocab(tok_vocab_file, do_lower_case=False).backend.save(str(tmp_path / "tokenizer.json"))
    ours = MobileBertTokenizer.from_pretrained(tmp_path)
    raw = tokenizers.Tokenizer.from_file(str(tmp_path / "tokenizer.json"))
    assert ours.do_lower_case is False
    assert ours("Hello HELLO Café")["input_ids"] == raw.encode("Hello HELLO Café").ids


def test_tokenizer_survives_pickling(tok):
    clone = pickle.loads(pickle.dumps(tok))
    assert _encode_everything(clone) == _encode_everything(tok)


def test_from_pretrained_keyword_overrides_config(tok_vocab_dir):
    ours = MobileBertTokenizer.from_pretrained(tok_vocab_dir, do_lower_case=False, model_max_length=32)
    assert ours.model_max_length == 32
    assert ours.tokenize("Hello") == ["Hello"]


# ------------------------------------------------------------------ bad input


def test_missing_directory_is_reported(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        MobileBertTokenizer.from_pretrained(tmp_path / "nope")


def test_directory_without_vocab_or_tokenizer_json_is_reported(tmp_path):
    (tmp_path / "tokenizer_config.json").write_text("{}")
    with pytest.raises(FileNotFoundError, match=r"neither vocab\.txt nor tokenizer\.json"):
        MobileBertTokenizer.from_pretrained(tmp_path)


def test_missing_vocab_file_is_reported(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"vocab file .* does not exist"):
        MobileBertTokenizer.from_vocab(tmp_path / "vocab.txt")


def test_vocab_without_special_tokens_is_reported(tmp_path):
    (tmp_path / "vocab.txt").write_text("[PAD]\n[UNK]\n[CLS]\nhello\n")
    with pytest.raises(ValueError, match=r"missing required special token\(s\) \['\[SEP\]', '\[MASK\]'\]"):
        MobileBertTokenizer.from_pretrained(tmp_path)


def test_non_wordpiece_tokenizer_json_is_reported(tmp_path):
    bpe = tokenizers.Tokenizer(models.BPE())
    bpe.save(str(tmp_path / "tokenizer.json"))
    with pytest.raises(ValueError, match="WordPiece"):
        MobileBertTokenizer.from_pretrained(tmp_path)


@pytest.mark.parametrize(
    ("text", "text_pair", "match"),
    [
        (5, None, "text must be a str"),
        (b"bytes", None, "text must be a str"),
        (None, None, "text must be a str"),
        (["ok", 5], None, r"text\[1\] must be a str"),
        ([("ok", None)], None, r"text\[0\]\[1\] must be a str"),
        (["ok"], [None], r"text_pair\[0\] must be a str"),
        ("ok", ["a"], "text_pair .* must be a str"),
        (["ok"], "a", "text_pair must be a list"),
    ],
)
def test_non_str_text_is_reported(tok, text, text_pair, match):
    with pytest.raises(TypeError, match=match):
        tok(text, text_pair)


def test_non_str_text_in_tokenize_is_reported(tok):
    with pytest.raises(TypeError, match="text must be a str"):
        tok.tokenize(["hello"])


def test_pair_list_length_mismatch_is_reported(tok):
    with pytest.raises(ValueError, match="same length, got 2 texts and 1 pairs"):
        tok(["a", "b"], ["c"])


def test_empty_batch_is_reported(tok):
    with pytest.raises(ValueError, match="empty batch"):
        tok([])


@pytest.mark.parametrize("tensor_type", ["np", "pt"])
def test_tensors_from_ragged_batch_without_padding_are_reported(tok, tensor_type):
    with pytest.raises(ValueError, match=r"needs equal-length rows .* padding=True"):
        tok(["a", "hello world the cat"], return_tensors=tensor_type)


def test_unknown_return_tensors_is_reported(tok):
    with pytest.raises(ValueError, match="invalid return_tensors 'tf'"):
        tok("a", return_tensors="tf")


def test_invalid_padding_strategy_is_reported(tok):
    with pytest.raises(ValueError, match=r"invalid padding strategy 'longest_first'.*'max_length'"):
        tok("a", padding="longest_first")


def test_invalid_truncation_strategy_is_reported(tok):
    with pytest.raises(ValueError, match=r"invalid truncation strategy 'right'.*'only_second'"):
        tok("a", truncation="right")


@pytest.mark.parametrize(("pair", "max_length", "needed"), [(None, 1, 2), (None, 0, 2), ("b", 2, 3)])
def test_max_length_below_special_token_count_is_reported(tok, pair, max_length, needed):
    # transformers silently returns the untruncated sequence here; we refuse.
    with pytest.raises(ValueError, match=f"max_length={max_length} is smaller than the {needed} special tokens"):
        tok("hello world the cat", pair, truncation=True, max_length=max_length)


def test_stride_without_room_for_a_window_is_reported(tok):
    # transformers' Rust backend panics on this (pyo3 PanicException); we give a ValueError naming stride.
    with pytest.raises(ValueError, match=r"stride=6 must be smaller than max_length - special tokens \(8 - 2 = 6\)"):
        tok("hello world the cat sat on the mat", truncation=True, max_length=8, stride=6)
    with pytest.raises(ValueError, match="stride=3"):
        tok("a long question with many words", "the context", truncation="only_second", max_length=10, stride=3)


def test_truncation_and_padding_multiple_mismatch_is_reported(tok):
    with pytest.raises(ValueError, match=r"truncation length \(10\) is not a multiple of pad_to_multiple_of \(4\)"):
        tok("a", padding="max_length", truncation=True, max_length=10, pad_to_multiple_of=4)
