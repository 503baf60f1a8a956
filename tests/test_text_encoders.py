"""The sentence-transformer encoder on the bundled all-MiniLM-L6-v2 (offline)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import mmkit
from mmkit._internal.errors import ParameterError
from mmkit.testing import check_encoder



@pytest.fixture(scope="module")
def minilm():
    torch.manual_seed(0)
    return mmkit.create("encoder", "sentence-transformer", max_length=32)


def _encode(enc, texts):
    enc.eval()
    with torch.no_grad():
        return enc(enc.collate([enc.preprocess(t) for t in texts]))


def test_missing_folder_is_a_clear_error(tmp_path):
    with pytest.raises(ParameterError, match="never downloaded"):
        mmkit.create("encoder", "sentence-transformer", path=str(tmp_path / "all-MiniLM-L6-v2"))


@pytest.mark.slow
def test_bundled_minilm_offline_paraphrases(minilm):
    assert minilm.dim == 384 and minilm.has_tokens
    texts = ["A man is playing a guitar.", "Someone plays an acoustic guitar.",
             "The stock market fell sharply today.", "Share prices dropped steeply this afternoon."]
    emb = _encode(minilm, texts)
    p = F.normalize(emb.pooled, dim=-1)
    sim = p @ p.T
    assert sim[0, 1] > sim[0, 2] + 0.3 and sim[0, 1] > sim[0, 3] + 0.3
    assert sim[2, 3] > sim[2, 0] + 0.3 and sim[2, 3] > sim[2, 1] + 0.3
    # pooled is the model's own mean pooling of its token states (masked)
    mask = emb.token_mask
    mean = emb.tokens.sum(1) / mask.sum(1, keepdim=True)
    torch.testing.assert_close(emb.pooled, mean, atol=1e-5, rtol=1e-4)
    assert mask[:, 0].all() and minilm.preprocess("hi")[0] == 101  # [CLS] first
    assert len(minilm.preprocess("word " * 100)) == 32


@pytest.mark.slow
def test_normalize_matches_sentence_transformers_encode(minilm):
    from sentence_transformers import SentenceTransformer

    from mmkit._internal.tokenize import bundled_minilm_path

    texts = ["a red circle left of a blue square", "there is a green triangle"]
    normed = mmkit.create("encoder", "sentence-transformer", normalize=True)
    ours = _encode(normed, texts).pooled
    reference = SentenceTransformer(bundled_minilm_path(), device="cpu", local_files_only=True)
    theirs = torch.as_tensor(reference.encode(texts, convert_to_numpy=True))
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(ours.norm(dim=-1), torch.ones(2))


@pytest.mark.slow
def test_sentence_transformer_contract(minilm):
    emb = check_encoder(minilm, ["short", "a somewhat longer sentence about shapes", "a blue square"])
    assert emb.tokens.shape[0] == 3 and emb.token_mask.sum(1).tolist() == [3, 8, 5]
