"""MobileBERT tokenizer: uncased BERT WordPiece on the `tokenizers` library, call-compatible with transformers.

The pipeline mirrors transformers 5's tokenizers-backed `BertTokenizer` (the class behind
`MobileBertTokenizerFast`): BertNormalizer -> BertPreTokenizer -> WordPiece (`##`, 100 chars per word) ->
`[CLS] $A [SEP] ($B [SEP])` template, with the special tokens registered as non-normalized special added
tokens so that only the literal, case-sensitive `[MASK]` (etc.) in raw text is matched. All real work happens in
Rust; this module is glue: loading checkpoints, argument resolution like transformers, output packing.

`backend` is a plain `tokenizers.Tokenizer` (no truncation/padding set) and `save_pretrained` writes it as
`tokenizer.json`, so `tokenizers.Tokenizer.from_file` alone reproduces our ids (the Triton tokenizer model does this).
"""

from __future__ import annotations

import json
import numbers
import os
import threading
import warnings
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from tokenizers import AddedToken, Encoding, Tokenizer, decoders, normalizers, pre_tokenizers, processors
from tokenizers.models import WordPiece

__all__ = ["BatchEncoding", "MobileBertTokenizer"]

VOCAB_FILE = "vocab.txt"
TOKENIZER_FILE = "tokenizer.json"
TOKENIZER_CONFIG_FILE = "tokenizer_config.json"
SPECIAL_TOKENS_MAP_FILE = "special_tokens_map.json"

# transformers' "no limit" model_max_length; above LARGE_INTEGER a default max_length means "do not truncate/pad".
VERY_LARGE_INTEGER = int(1e30)
LARGE_INTEGER = int(1e20)

PADDING_STRATEGIES = ("longest", "max_length", "do_not_pad")
TRUNCATION_STRATEGIES = ("only_first", "only_second", "longest_first", "do_not_truncate")
TENSOR_TYPES = ("np", "pt")

# Named special tokens in transformers' SPECIAL_TOKENS_ATTRIBUTES order (which fixes all_special_tokens' order).
SPECIAL_TOKEN_NAMES = ("unk_token", "sep_token", "pad_token", "cls_token", "mask_token")
DEFAULT_SPECIAL_TOKENS = {
    "unk_token": "[UNK]",
    "sep_token": "[SEP]",
    "pad_token": "[PAD]",
    "cls_token": "[CLS]",
    "mask_token": "[MASK]",
}

TextOrPair = str | tuple[str, str]


class BatchEncoding(dict):
    """Output of `MobileBertTokenizer.__call__`: a dict of model inputs, with attribute access like transformers'.

    `encodings` keeps the `tokenizers.Encoding` objects (one per output row, overflow windows included) for
    word/sequence/char alignment in question answering and token classification post-processing.
    """

    def __init__(self, data: Mapping[str, Any], encodings: list[Encoding] | None = None) -> None:
        super().__init__(data)
        self._encodings = encodings

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None

    @property
    def encodings(self) -> list[Encoding] | None:
        return self._encodings

    def tokens(self, batch_index: int = 0) -> list[str]:
        return self._encoding(batch_index).tokens

    def word_ids(self, batch_index: int = 0) -> list[int | None]:
        return self._encoding(batch_index).word_ids

    def sequence_ids(self, batch_index: int = 0) -> list[int | None]:
        return self._encoding(batch_index).sequence_ids

    def _encoding(self, batch_index: int) -> Encoding:
        if not self._encodings:
            raise ValueError("this BatchEncoding has no tokenizers.Encoding objects attached")
        return self._encodings[batch_index]


class MobileBertTokenizer:
    """Uncased BERT WordPiece tokenizer with the transformers `__call__` interface (right padding/truncation only)."""

    model_input_names = ("input_ids", "token_type_ids", "attention_mask")
    padding_side = "right"
    truncation_side = "right"
    pad_token_type_id = 0

    def __init__(
        self,
        vocab: str | os.PathLike[str] | Mapping[str, int],
        *,
        do_lower_case: bool = True,
        strip_accents: bool | None = None,
        tokenize_chinese_chars: bool = True,
        unk_token: str = "[UNK]",
        sep_token: str = "[SEP]",
        pad_token: str = "[PAD]",
        cls_token: str = "[CLS]",
        mask_token: str = "[MASK]",
        model_max_length: int | None = None,
        max_input_chars_per_word: int = 100,
        added_tokens: Iterable[AddedToken] = (),
    ) -> None:
        """Build the pipeline from a vocab.txt path or a token -> id mapping.

        `added_tokens` are extra added tokens (e.g. restored from a checkpoint) registered before the special tokens,
        as transformers does with `added_tokens_decoder`.
        """
        if isinstance(vocab, Mapping):
            vocab_map = {str(token): int(index) for token, index in vocab.items()}
            source = "the given vocab mapping"
        else:
            vocab_map = _load_vocab_txt(Path(vocab))
            source = str(vocab)
        specials = {
            "unk_token": unk_token,
            "sep_token": sep_token,
            "pad_token": pad_token,
            "cls_token": cls_token,
            "mask_token": mask_token,
        }
        for name, value in specials.items():
            if not isinstance(value, str) or not value:
                raise TypeError(f"{name} must be a non-empty str, got {value!r}")
        added_tokens = list(added_tokens)
        known = set(vocab_map) | {token.content for token in added_tokens}
        missing = [value for value in specials.values() if value not in known]
        if missing:
            raise ValueError(
                f"vocabulary from {source} is missing required special token(s) {missing}: a MobileBERT WordPiece "
                f"vocab must contain {list(specials.values())}"
            )

        self.do_lower_case = do_lower_case
        self.strip_accents = strip_accents
        self.tokenize_chinese_chars = tokenize_chinese_chars
        self.model_max_length = VERY_LARGE_INTEGER if model_max_length is None else int(model_max_length)
        self._specials = specials

        tokenizer = Tokenizer(
            WordPiece(vocab_map, unk_token=unk_token, max_input_chars_per_word=max_input_chars_per_word)
        )
        tokenizer.normalizer = normalizers.BertNormalizer(
            clean_text=True,
            handle_chinese_chars=tokenize_chinese_chars,
            strip_accents=strip_accents,
            lowercase=do_lower_case,
        )
        tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
        tokenizer.decoder = decoders.WordPiece(prefix="##")
        # Same registration as transformers: checkpoint added tokens first (with their own flags), then any named
        # special token not yet registered as AddedToken(special=True), whose normalized flag defaults to False —
        # so "[MASK]" in raw text becomes the mask id while "[mask]" goes through WordPiece.
        registered = {token.content for token in added_tokens}
        to_add = added_tokens + [
            AddedToken(value, special=True) for value in specials.values() if value not in registered
        ]
        to_add = list({token.content: token for token in to_add}.values())
        tokenizer.add_tokens(to_add)
        cls_id, sep_id = tokenizer.token_to_id(cls_token), tokenizer.token_to_id(sep_token)
        tokenizer.post_processor = processors.TemplateProcessing(
            single=f"{cls_token}:0 $A:0 {sep_token}:0",
            pair=f"{cls_token}:0 $A:0 {sep_token}:0 $B:1 {sep_token}:1",
            special_tokens=[(cls_token, cls_id), (sep_token, sep_id)],
        )
        self._tokenizer = tokenizer
        # __call__ reconfigures truncation/padding per request on a private copy (serialised by a lock), so the
        # public backend stays a clean pipeline and concurrent callers never see each other's settings.
        self._encoder = Tokenizer.from_str(tokenizer.to_str())
        self._encoder_lock = threading.Lock()

    def __getstate__(self) -> dict[str, Any]:
        # Picklable for multiprocessing data loaders: the lock is not, and the encoder is rebuilt from the backend.
        state = self.__dict__.copy()
        del state["_encoder"], state["_encoder_lock"]
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._encoder = Tokenizer.from_str(self._tokenizer.to_str())
        self._encoder_lock = threading.Lock()

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(vocab_size={self.vocab_size}, do_lower_case={self.do_lower_case}, "
            f"strip_accents={self.strip_accents}, tokenize_chinese_chars={self.tokenize_chinese_chars}, "
            f"model_max_length={self.model_max_length})"
        )

    # ---------------------------------------------------------------- loading and saving

    @classmethod
    def from_vocab(cls, vocab_file: str | os.PathLike[str], **kwargs: Any) -> MobileBertTokenizer:
        """Build from a BERT vocab.txt (one token per line, id = line number)."""
        return cls(vocab_file, **kwargs)

    @classmethod
    def from_pretrained(cls, directory: str | os.PathLike[str], **overrides: Any) -> MobileBertTokenizer:
        """Load a Hugging Face-layout checkpoint directory (tokenizer.json and/or vocab.txt, optional configs).

        Like transformers: the vocab comes from tokenizer.json when present, otherwise vocab.txt; do_lower_case,
        strip_accents, tokenize_chinese_chars, model_max_length and the special tokens come from
        tokenizer_config.json (special_tokens_map.json overrides the special tokens when the config has no
        `added_tokens_decoder`); keyword arguments override everything.
        """
        path = Path(directory)
        if not path.exists():
            raise FileNotFoundError(f"tokenizer directory {str(path)!r} does not exist")
        if not path.is_dir():
            raise NotADirectoryError(f"tokenizer path {str(path)!r} is not a directory")
        tokenizer_json, vocab_txt = path / TOKENIZER_FILE, path / VOCAB_FILE
        if not tokenizer_json.is_file() and not vocab_txt.is_file():
            raise FileNotFoundError(
                f"tokenizer directory {str(path)!r} has neither {VOCAB_FILE} nor {TOKENIZER_FILE}; "
                "expected a Hugging Face tokenizer checkpoint"
            )
        config = _read_json_object(path / TOKENIZER_CONFIG_FILE)
        kwargs: dict[str, Any] = {}
        added: dict[int, AddedToken] = {}

        if tokenizer_json.is_file():
            serialized = _read_json_object(tokenizer_json)
            model = serialized.get("model") or {}
            if model.get("type") != "WordPiece" or not isinstance(model.get("vocab"), dict):
                raise ValueError(
                    f"{tokenizer_json} does not hold a WordPiece model (model.type={model.get('type')!r}); "
                    "MobileBERT needs a BERT WordPiece tokenizer"
                )
            kwargs["vocab"] = model["vocab"]
            if model.get("unk_token"):
                kwargs["unk_token"] = model["unk_token"]
            if model.get("max_input_chars_per_word"):
                kwargs["max_input_chars_per_word"] = int(model["max_input_chars_per_word"])
            # transformers rebuilds the normalizer from tokenizer_config.json only; we also fall back to the flags
            # in tokenizer.json so a config-less tokenizer.json keeps its own casing/accents behaviour.
            normalizer = serialized.get("normalizer") or {}
            if normalizer.get("type") == "BertNormalizer":
                kwargs["do_lower_case"] = normalizer.get("lowercase", True)
                kwargs["strip_accents"] = normalizer.get("strip_accents")
                kwargs["tokenize_chinese_chars"] = normalizer.get("handle_chinese_chars", True)
            for entry in serialized.get("added_tokens") or []:
                added[int(entry["id"])] = _added_token(entry)
        else:
            kwargs["vocab"] = vocab_txt

        for key in ("do_lower_case", "strip_accents", "tokenize_chinese_chars", "model_max_length"):
            if key in config:
                kwargs[key] = config[key]
        for name in SPECIAL_TOKEN_NAMES:
            if config.get(name) is not None:
                kwargs[name] = _token_content(config[name])
        if "added_tokens_decoder" in config:
            # A saved added_tokens_decoder is authoritative over tokenizer.json's list (transformers does the same).
            added = {int(index): _added_token(entry) for index, entry in config["added_tokens_decoder"].items()}
        else:
            special_map = _read_json_object(path / SPECIAL_TOKENS_MAP_FILE)
            for name in SPECIAL_TOKEN_NAMES:
                if special_map.get(name) is not None:
                    kwargs[name] = _token_content(special_map[name])

        kwargs["added_tokens"] = [added[index] for index in sorted(added)]
        kwargs.update(overrides)
        return cls(**kwargs)

    def save_pretrained(self, directory: str | os.PathLike[str]) -> tuple[str, ...]:
        """Write tokenizer.json (full pipeline incl. template), vocab.txt and tokenizer_config.json."""
        path = Path(directory)
        path.mkdir(parents=True, exist_ok=True)
        tokenizer_json = path / TOKENIZER_FILE
        self._tokenizer.save(str(tokenizer_json), pretty=True)

        vocab = self._tokenizer.get_vocab(with_added_tokens=False)
        # vocab.txt encodes ids as line numbers; fill any id holes (duplicate lines in the source vocab) so every
        # token keeps its id.
        lines = [f"[unused_id_{index}]" for index in range(max(vocab.values()) + 1)]
        for token, index in vocab.items():
            lines[index] = token
        vocab_txt = path / VOCAB_FILE
        vocab_txt.write_text("".join(f"{line}\n" for line in lines), encoding="utf-8")

        added = self._tokenizer.get_added_tokens_decoder()
        config: dict[str, Any] = {
            "tokenizer_class": "MobileBertTokenizer",
            "do_lower_case": self.do_lower_case,
            "strip_accents": self.strip_accents,
            "tokenize_chinese_chars": self.tokenize_chinese_chars,
            "model_max_length": self.model_max_length,
            "clean_up_tokenization_spaces": False,
            "padding_side": self.padding_side,
            "truncation_side": self.truncation_side,
            **self._specials,
            "added_tokens_decoder": {str(index): added[index].__getstate__() for index in sorted(added)},
        }
        config_json = path / TOKENIZER_CONFIG_FILE
        config_json.write_text(json.dumps(config, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        return (str(tokenizer_json), str(vocab_txt), str(config_json))

    # ---------------------------------------------------------------- vocabulary and special tokens

    @property
    def backend(self) -> Tokenizer:
        """The underlying `tokenizers.Tokenizer` (template post-processor set, no truncation or padding)."""
        return self._tokenizer

    @property
    def vocab_size(self) -> int:
        """Size of the WordPiece vocabulary, without added tokens (as in transformers)."""
        return self._tokenizer.get_vocab_size(with_added_tokens=False)

    def __len__(self) -> int:
        return self._tokenizer.get_vocab_size(with_added_tokens=True)

    def get_vocab(self) -> dict[str, int]:
        return self._tokenizer.get_vocab(with_added_tokens=True)

    @property
    def unk_token(self) -> str:
        return self._specials["unk_token"]

    @property
    def unk_token_id(self) -> int:
        return self._tokenizer.token_to_id(self._specials["unk_token"])

    @property
    def sep_token(self) -> str:
        return self._specials["sep_token"]

    @property
    def sep_token_id(self) -> int:
        return self._tokenizer.token_to_id(self._specials["sep_token"])

    @property
    def pad_token(self) -> str:
        return self._specials["pad_token"]

    @property
    def pad_token_id(self) -> int:
        return self._tokenizer.token_to_id(self._specials["pad_token"])

    @property
    def cls_token(self) -> str:
        return self._specials["cls_token"]

    @property
    def cls_token_id(self) -> int:
        return self._tokenizer.token_to_id(self._specials["cls_token"])

    @property
    def mask_token(self) -> str:
        return self._specials["mask_token"]

    @property
    def mask_token_id(self) -> int:
        return self._tokenizer.token_to_id(self._specials["mask_token"])

    @property
    def special_tokens_map(self) -> dict[str, str]:
        return dict(self._specials)

    @property
    def all_special_tokens(self) -> list[str]:
        return list(dict.fromkeys(self._specials[name] for name in SPECIAL_TOKEN_NAMES))

    @property
    def all_special_ids(self) -> list[int]:
        return self.convert_tokens_to_ids(self.all_special_tokens)

    def num_special_tokens_to_add(self, pair: bool = False) -> int:
        return self._tokenizer.num_special_tokens_to_add(pair)

    def convert_tokens_to_ids(self, tokens: str | Sequence[str]) -> int | list[int]:
        """Token(s) to id(s); unknown tokens map to the unk id."""
        if isinstance(tokens, str):
            return self._token_to_id(tokens)
        return [self._token_to_id(token) for token in tokens]

    def convert_ids_to_tokens(
        self, ids: int | Sequence[int], skip_special_tokens: bool = False
    ) -> str | list[str | None] | None:
        """Id(s) to token(s); an out-of-range single id gives None."""
        if isinstance(ids, numbers.Integral):
            return self._tokenizer.id_to_token(int(ids))
        skip = set(self.all_special_ids) if skip_special_tokens else set()
        return [self._tokenizer.id_to_token(int(index)) for index in _to_list(ids) if int(index) not in skip]

    def _token_to_id(self, token: str) -> int:
        index = self._tokenizer.token_to_id(token)
        return self.unk_token_id if index is None else index

    # ---------------------------------------------------------------- text <-> tokens

    def tokenize(self, text: str, pair: str | None = None, add_special_tokens: bool = False) -> list[str]:
        """WordPiece tokens of `text` (and `pair`), without special tokens unless asked."""
        _check_text(text, "text")
        if pair is not None:
            _check_text(pair, "pair")
        # The backend has no truncation/padding configured, so it can be used directly (and concurrently).
        return self._tokenizer.encode(text, pair, add_special_tokens=add_special_tokens).tokens

    def decode(self, token_ids: Any, skip_special_tokens: bool = False) -> str | list[str]:
        """Ids (list, numpy, torch) to text; a batch (2-D) gives a list of strings, as in transformers."""
        ids = _to_list(token_ids)
        if isinstance(ids, numbers.Integral):
            ids = [ids]
        if ids and isinstance(ids[0], list):
            return [
                self._tokenizer.decode([int(i) for i in row], skip_special_tokens=skip_special_tokens) for row in ids
            ]
        return self._tokenizer.decode([int(i) for i in ids], skip_special_tokens=skip_special_tokens)

    def __call__(
        self,
        text: str | Sequence[TextOrPair],
        text_pair: str | Sequence[str] | None = None,
        *,
        add_special_tokens: bool = True,
        padding: bool | str = False,
        truncation: bool | str | None = None,
        max_length: int | None = None,
        stride: int = 0,
        pad_to_multiple_of: int | None = None,
        return_tensors: str | None = None,
        return_token_type_ids: bool | None = None,
        return_attention_mask: bool | None = None,
        return_overflowing_tokens: bool = False,
        return_special_tokens_mask: bool = False,
        return_offsets_mapping: bool = False,
        return_length: bool = False,
    ) -> BatchEncoding:
        """Encode one text, a text pair, a batch of texts or a batch of pairs, like transformers' tokenizers.

        `text` may be a str, a list of str, or a list of (text, text_pair) tuples; `text_pair` a str (with a str
        `text`) or a list as long as `text`. Lists come back per row unless `return_tensors` is "np" (int64 arrays)
        or "pt" (torch tensors); a single text gives flat lists. With `return_overflowing_tokens` every overflow
        window is its own row and `overflow_to_sample_mapping` names its input.
        """
        padding_strategy, truncation_strategy, max_length = self._resolve_strategies(
            padding, truncation, max_length, pad_to_multiple_of
        )
        tensor_type = _resolve_tensor_type(return_tensors)
        batch, is_batched = _as_batch(text, text_pair)
        if not batch:
            raise ValueError("text is an empty batch: pass at least one text")
        if isinstance(stride, bool) or not isinstance(stride, numbers.Integral) or stride < 0:
            raise ValueError(f"stride must be an int >= 0, got {stride!r}")

        if truncation_strategy != "do_not_truncate":
            has_pair = any(isinstance(item, tuple) for item in batch)
            n_special = self.num_special_tokens_to_add(pair=has_pair) if add_special_tokens else 0
            _check_truncation_room(max_length, stride, n_special, truncation_strategy)

        with self._encoder_lock:
            self._configure_encoder(padding_strategy, truncation_strategy, max_length, stride, pad_to_multiple_of)
            try:
                encodings = self._encoder.encode_batch(batch, add_special_tokens=add_special_tokens)
            except BaseException as exc:  # Rust panics surface as pyo3's PanicException, a BaseException
                if type(exc).__name__ != "PanicException" and "Truncation error" not in str(exc):
                    raise
                raise ValueError(
                    f"cannot truncate to max_length={max_length} with truncation={truncation_strategy!r} and "
                    f"stride={stride}: a sequence has too little room left after the special tokens and the other "
                    f"sequence of its pair (stride must be smaller than that room). Backend said: {exc}"
                ) from None

        rows: list[Encoding] = []
        sample_of_row: list[int] = []
        for sample, encoding in enumerate(encodings):
            windows = [encoding, *encoding.overflowing] if return_overflowing_tokens else [encoding]
            rows.extend(windows)
            sample_of_row.extend([sample] * len(windows))

        wanted = {
            "input_ids": True,
            "token_type_ids": return_token_type_ids is not False,
            "attention_mask": return_attention_mask is not False,
            "special_tokens_mask": return_special_tokens_mask,
            "offset_mapping": return_offsets_mapping,
            "length": return_length,
        }
        getters = {
            "input_ids": lambda e: e.ids,
            "token_type_ids": lambda e: e.type_ids,
            "attention_mask": lambda e: e.attention_mask,
            "special_tokens_mask": lambda e: e.special_tokens_mask,
            "offset_mapping": lambda e: e.offsets,
            "length": lambda e: len(e.ids),
        }
        data: dict[str, Any] = {key: [getters[key](e) for e in rows] for key, on in wanted.items() if on}
        if return_overflowing_tokens:
            data["overflow_to_sample_mapping"] = sample_of_row

        if tensor_type is not None:
            return BatchEncoding(_to_tensors(data, tensor_type), rows)
        if not is_batched and not return_overflowing_tokens:
            # transformers drops the batch axis for a single text (overflow keeps it: one row per window).
            data = {key: value[0] if value and isinstance(value[0], list) else value for key, value in data.items()}
        return BatchEncoding(data, rows)

    # ---------------------------------------------------------------- argument resolution

    def _resolve_strategies(
        self, padding: Any, truncation: Any, max_length: int | None, pad_to_multiple_of: int | None
    ) -> tuple[str, str, int | None]:
        """transformers' _get_padding_truncation_strategies, including its defaults and compatibility rules."""
        if max_length is not None and (isinstance(max_length, bool) or not isinstance(max_length, numbers.Integral)):
            raise TypeError(f"max_length must be an int or None, got {max_length!r}")
        if max_length is not None and max_length < 0:
            raise ValueError(f"max_length must be >= 0, got {max_length}")
        # Backward-compatible transformers rule: max_length alone switches on longest_first truncation.
        if max_length is not None and padding is False and truncation is None:
            truncation = "longest_first"

        if padding is True:
            if max_length is not None and truncation in (None, False, "do_not_truncate"):
                warnings.warn(
                    "`max_length` is ignored when `padding`=`True` and there is no truncation strategy. "
                    "To pad to max length, use `padding='max_length'`.",
                    stacklevel=3,
                )
            padding_strategy = "longest"
        elif padding is False or padding is None:
            padding_strategy = "do_not_pad"
        else:
            padding_strategy = _strategy_name(padding, PADDING_STRATEGIES, "padding")

        if truncation is True:
            truncation_strategy = "longest_first"
        elif truncation is False or truncation is None:
            truncation_strategy = "do_not_truncate"
        else:
            truncation_strategy = _strategy_name(truncation, TRUNCATION_STRATEGIES, "truncation")

        if max_length is None:
            if padding_strategy == "max_length":
                if self.model_max_length > LARGE_INTEGER:
                    padding_strategy = "do_not_pad"
                else:
                    max_length = self.model_max_length
            if truncation_strategy != "do_not_truncate":
                if self.model_max_length > LARGE_INTEGER:
                    truncation_strategy = "do_not_truncate"
                else:
                    max_length = self.model_max_length

        if pad_to_multiple_of is not None and (
            isinstance(pad_to_multiple_of, bool)
            or not isinstance(pad_to_multiple_of, numbers.Integral)
            or pad_to_multiple_of <= 0
        ):
            raise ValueError(f"pad_to_multiple_of must be a positive int or None, got {pad_to_multiple_of!r}")
        if (
            truncation_strategy != "do_not_truncate"
            and padding_strategy != "do_not_pad"
            and pad_to_multiple_of is not None
            and max_length is not None
            and max_length % pad_to_multiple_of != 0
        ):
            raise ValueError(
                "Truncation and padding are both activated but "
                f"truncation length ({max_length}) is not a multiple of pad_to_multiple_of ({pad_to_multiple_of})."
            )
        return padding_strategy, truncation_strategy, max_length

    def _configure_encoder(
        self,
        padding_strategy: str,
        truncation_strategy: str,
        max_length: int | None,
        stride: int,
        pad_to_multiple_of: int | None,
    ) -> None:
        """Set truncation/padding on the private encoder, touching it only when the settings change."""
        if truncation_strategy == "do_not_truncate":
            if self._encoder.truncation is not None:
                self._encoder.no_truncation()
        else:
            target = {"max_length": max_length, "stride": stride, "strategy": truncation_strategy, "direction": "right"}
            current = self._encoder.truncation
            if current is None or {key: current.get(key) for key in target} != target:
                self._encoder.enable_truncation(**target)

        if padding_strategy == "do_not_pad":
            if self._encoder.padding is not None:
                self._encoder.no_padding()
        else:
            target = {
                "length": max_length if padding_strategy == "max_length" else None,
                "pad_to_multiple_of": pad_to_multiple_of,
                "pad_id": self.pad_token_id,
                "pad_token": self.pad_token,
                "pad_type_id": self.pad_token_type_id,
                "direction": "right",
            }
            if self._encoder.padding != target:
                self._encoder.enable_padding(**target)


# -------------------------------------------------------------------- module helpers


def _load_vocab_txt(path: Path) -> dict[str, int]:
    """Read vocab.txt exactly like transformers' load_vocab: id = line number, only the newline stripped."""
    if not path.is_file():
        raise FileNotFoundError(f"vocab file {str(path)!r} does not exist")
    with path.open(encoding="utf-8") as reader:
        return {line.rstrip("\n"): index for index, line in enumerate(reader.readlines())}


def _read_json_object(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path} is not valid JSON: {exc}") from exc
    if not isinstance(value, dict):
        raise ValueError(f"{path} must hold a JSON object, got {type(value).__name__}")
    return value


def _token_content(value: Any) -> str:
    """Special token config entries are either a string or a serialized AddedToken dict."""
    return value["content"] if isinstance(value, dict) else str(value)


def _added_token(entry: Mapping[str, Any]) -> AddedToken:
    flags = ("single_word", "lstrip", "rstrip", "normalized", "special")
    return AddedToken(entry["content"], **{flag: bool(entry[flag]) for flag in flags if flag in entry})


def _check_text(value: Any, what: str) -> None:
    if not isinstance(value, str):
        raise TypeError(f"{what} must be a str, got {type(value).__name__}: {value!r}")


def _as_batch(text: Any, text_pair: Any) -> tuple[list[TextOrPair], bool]:
    """Normalise the input forms transformers accepts into a list of str / (str, str), plus 'was it a batch'."""
    if isinstance(text, str):
        if text_pair is None:
            return [text], False
        _check_text(text_pair, "text_pair (for a single str text)")
        # transformers tests `if text_pair`, so an empty pair encodes the text alone: [CLS] text [SEP].
        return ([(text, text_pair)] if text_pair else [text]), False
    if not isinstance(text, (list, tuple)):
        raise TypeError(
            f"text must be a str, a list of str or a list of (text, text_pair) tuples, got {type(text).__name__}"
        )
    if text_pair is not None:
        if not isinstance(text_pair, (list, tuple)):
            raise TypeError(
                f"text_pair must be a list with the same length as the text batch, got {type(text_pair).__name__}"
            )
        if len(text) != len(text_pair):
            raise ValueError(
                f"text and text_pair must have the same length, got {len(text)} texts and {len(text_pair)} pairs"
            )
        for index, (first, second) in enumerate(zip(text, text_pair, strict=True)):
            _check_text(first, f"text[{index}]")
            _check_text(second, f"text_pair[{index}]")
        return list(zip(text, text_pair, strict=True)), True
    batch: list[TextOrPair] = []
    for index, item in enumerate(text):
        if isinstance(item, str):
            batch.append(item)
        elif isinstance(item, (list, tuple)) and len(item) == 2:
            _check_text(item[0], f"text[{index}][0]")
            _check_text(item[1], f"text[{index}][1]")
            batch.append((item[0], item[1]))
        else:
            raise TypeError(f"text[{index}] must be a str or a (text, text_pair) tuple of two str, got {item!r}")
    return batch, True


def _strategy_name(value: Any, allowed: tuple[str, ...], what: str) -> str:
    name = getattr(value, "value", value)  # also accept transformers' PaddingStrategy/TruncationStrategy enums
    if name not in allowed:
        raise ValueError(f"invalid {what} strategy {value!r}: use True, False or one of {list(allowed)}")
    return name


def _check_truncation_room(max_length: int | None, stride: int, n_special: int, strategy: str) -> None:
    """Reject settings the Rust truncation would silently ignore (too-small max_length) or panic on (stride)."""
    if max_length is None:
        return
    if max_length < n_special:
        raise ValueError(
            f"max_length={max_length} is smaller than the {n_special} special tokens ([CLS]/[SEP]) added to each "
            f"sequence; use max_length >= {n_special} or add_special_tokens=False"
        )
    if stride and stride >= max_length - n_special:
        raise ValueError(
            f"stride={stride} must be smaller than max_length - special tokens ({max_length} - {n_special} = "
            f"{max_length - n_special}) for truncation={strategy!r}, or overflow windows could not advance"
        )


def _resolve_tensor_type(return_tensors: Any) -> str | None:
    if return_tensors is None:
        return None
    name = getattr(return_tensors, "value", return_tensors)  # transformers' TensorType enum
    if name not in TENSOR_TYPES:
        raise ValueError(f"invalid return_tensors {return_tensors!r}: use None, 'np' or 'pt'")
    return name


def _to_tensors(data: dict[str, Any], tensor_type: str) -> dict[str, Any]:
    lengths = {len(row) for row in data["input_ids"]}
    if len(lengths) > 1:
        raise ValueError(
            f"return_tensors={tensor_type!r} needs equal-length rows but the batch has lengths {sorted(lengths)}; "
            "pass padding=True (or padding='max_length' with truncation) to get a rectangular batch"
        )
    arrays = {key: np.asarray(value, dtype=np.int64) for key, value in data.items()}
    if data["input_ids"] and not data["input_ids"][0] and "offset_mapping" in arrays:
        arrays["offset_mapping"] = arrays["offset_mapping"].reshape(len(data["input_ids"]), 0, 2)
    if tensor_type == "np":
        return arrays
    import torch  # lazily: the Triton tokenizer path must not need torch

    return {key: torch.from_numpy(value) for key, value in arrays.items()}


def _to_list(value: Any) -> Any:
    """numpy arrays / torch tensors / scalars to plain Python values."""
    return value.tolist() if hasattr(value, "tolist") else value
