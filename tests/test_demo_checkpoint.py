"""Demo checkpoints: one directory per checkpoint kind, loadable strictly by model_def and by transformers."""

from __future__ import annotations

import json

import pytest
import torch
import transformers

import model_def
from model_def.demo_checkpoint import CHECKPOINT_KINDS, DEMO_NOTICE, NER_LABELS, build_vocab, write_demo_checkpoints


@pytest.fixture(scope="module")
def demo_dirs(tmp_path_factory):
    return write_demo_checkpoints(tmp_path_factory.mktemp("demo"), seed=0, small=True)


def test_every_kind_loads_strictly_in_model_def_and_transformers(demo_dirs):
    assert set(demo_dirs) == set(CHECKPOINT_KINDS)
    ids = torch.tensor([[2, 100, 200, 3]])
    for kind, directory in demo_dirs.items():
        cls = CHECKPOINT_KINDS[kind][0]
        ours = cls.from_pretrained(directory)  # strict: every weight present
        assert ours.load_report.randomly_initialised == []
        theirs, info = getattr(transformers, cls.__name__).from_pretrained(directory, output_loading_info=True)
        assert not info["missing_keys"], (kind, info)
        if kind != "multiple-choice":
            with torch.no_grad():
                assert torch.allclose(ours(ids)[0], theirs.eval()(ids)[0], atol=1e-5)


def test_heads_share_one_backbone(demo_dirs):
    a = model_def.MobileBertForQuestionAnswering.from_pretrained(demo_dirs["question-answering"])
    b = model_def.MobileBertForPreTraining.from_pretrained(demo_dirs["pretraining"])
    assert torch.equal(
        a.mobilebert.encoder.layer[0].attention.self.query.weight,
        b.mobilebert.encoder.layer[0].attention.self.query.weight,
    )


def test_labels_and_notice_are_in_config(demo_dirs):
    config = json.loads((demo_dirs["token-classification"] / "config.json").read_text())
    assert list(config["id2label"].values()) == list(NER_LABELS)
    assert config["demo_checkpoint"] == DEMO_NOTICE


def test_demo_tokenizer_covers_ordinary_english_without_unknowns(demo_dirs):
    tok = model_def.MobileBertTokenizer.from_pretrained(demo_dirs["pretraining"])
    assert len(tok) == 30522
    ids = tok("Zebras quietly crossed the Xylophone-shaped bridge at 7:45 pm!")["input_ids"]
    assert tok.unk_token_id not in ids


def test_vocab_is_deterministic_and_padded_to_size():
    from model_def.corpus import corpus_lines

    a, b = build_vocab(corpus_lines(), 30522), build_vocab(corpus_lines(), 30522)
    assert a == b and len(a) == 30522 and a[:5] == ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    assert len(set(a)) == len(a) and a[-1].startswith("[unused")
    assert a.index("the") < a.index("zurich")  # frequent words first (accents stripped, as uncased BERT does)
