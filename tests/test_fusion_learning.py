"""Every built-in fusion learns the ``shapes`` claim task, which no single modality can solve.

The task: an image of 1-3 coloured shapes and a claim "there is a red circle"; the label says whether
the claim is true. Image-only and text-only models are at chance by construction.

Features are precomputed here (no encoder is trained), so the test measures the fusions alone:

* image: one 8-d token per quadrant of the 2x2 grid -- the fraction of the object's pixels of each of
  the 4 palette colours, the fill ratio of its bounding box and whether its top-left / bottom-left
  corners are filled (square/circle/triangle differ there), and a "has object" flag; empty quadrants
  are masked tokens. The pooled vector is the mean of the real tokens (a global average pool, which
  loses which colour belongs to which shape -- token-level fusions can recover it).
* text: one one-hot token per word of the claim (bag of words); pooled = the mean of the tokens.

Run ``.venv/bin/pytest tests/test_fusion_learning.py -s`` to see the accuracy table (docs/fusions.md).

The quickstart (recipes/quickstart.toml, trained end to end by the Trainer) must cross its ~0.85
plateau (colour and shape seen, not bound to one object) for every seed: seed 0 in the default suite,
seeds 1-4 under ``-m slow``.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import mmkit
from mmkit._internal.interfaces import Embedding

ROOT = Path(__file__).resolve().parent.parent
FUSIONS = ["concat", "attention", "cross-attention", "autoencoder", "transformer"]
BACKGROUND = np.array([245, 245, 245])
STEPS, LR, BATCH, DIM = 300, 1e-3, 64, 64


@pytest.fixture(autouse=True)
def _one_thread():
    # these models are tiny: one thread avoids thread overhead and oversubscription on a shared 2-core box
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def quadrant_features(image, palette: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``([4, 8] features, [4] has-object mask)`` of the 2x2 grid cells of a shapes image."""
    a = np.asarray(image, dtype=np.int16)
    h = a.shape[0] // 2
    tokens, mask = np.zeros((4, 8)), np.zeros(4, dtype=bool)
    for i, (r, c) in enumerate(((0, 0), (0, 1), (1, 0), (1, 1))):
        cell = a[r * h:(r + 1) * h, c * h:(c + 1) * h]
        obj = np.abs(cell - BACKGROUND).sum(-1) > 60
        if not obj.any():
            continue
        nearest = np.abs(cell[obj][:, None, :] - palette[None]).sum(-1).argmin(1)
        ys, xs = np.nonzero(obj)
        y0, y1, x0, x1 = ys.min(), ys.max(), xs.min(), xs.max()
        k = max(1, (x1 - x0 + 1) // 6)
        tokens[i, :4] = np.bincount(nearest, minlength=4) / obj.sum()
        tokens[i, 4] = obj.sum() / ((y1 - y0 + 1) * (x1 - x0 + 1))
        tokens[i, 5] = obj[y0:y0 + k, x0:x0 + k].mean()
        tokens[i, 6] = obj[y1 - k + 1:y1 + 1, x0:x0 + k].mean()
        tokens[i, 7] = 1.0
        mask[i] = True
    return tokens, mask


def featurize(rows: list[dict], vocab: dict[str, int], palette: np.ndarray) -> tuple[dict, torch.Tensor]:
    feats = [quadrant_features(r["image"], palette) for r in rows]
    img_tokens = torch.tensor(np.stack([f[0] for f in feats]), dtype=torch.float32)
    img_mask = torch.tensor(np.stack([f[1] for f in feats]))
    img_pooled = (img_tokens * img_mask[..., None]).sum(1) / img_mask.sum(1, keepdim=True)
    words = [r["claim"].split() for r in rows]
    length = max(len(w) for w in words)
    txt_tokens = torch.zeros(len(rows), length, len(vocab))
    txt_mask = torch.zeros(len(rows), length, dtype=torch.bool)
    for i, ws in enumerate(words):
        for j, w in enumerate(ws):
            txt_tokens[i, j, vocab[w]] = 1.0
            txt_mask[i, j] = True
    txt_pooled = (txt_tokens * txt_mask[..., None]).sum(1) / txt_mask.sum(1, keepdim=True)
    labels = torch.tensor([int(r["label"]) for r in rows])
    return {"image": (img_pooled, img_tokens, img_mask), "text": (txt_pooled, txt_tokens, txt_mask)}, labels


@pytest.fixture(scope="module")
def data():
    from mmkit_shapes.generate import COLORS, shapes

    splits = shapes(n_train=2000, n_val=500, n_test=0, seed=0, image_size=64).splits
    palette = np.array(list(COLORS.values()))
    vocab = {w: i for i, w in enumerate(sorted({w for r in splits["train"] for w in r["claim"].split()}))}
    train, y_train = featurize(splits["train"], vocab, palette)
    val, y_val = featurize(splits["val"], vocab, palette)
    return train, y_train, val, y_val


def embeddings(feats: dict, idx: torch.Tensor, modalities: list[str]) -> dict[str, Embedding]:
    out = {}
    for m in modalities:
        pooled, tokens, mask = feats[m]
        out[m] = Embedding(pooled[idx], torch.ones(len(idx), dtype=torch.bool), tokens[idx], mask[idx])
    return out


def make_fusion(name: str, feats: dict, modalities: list[str], **params):
    size = {"latent_dim": DIM} if name == "autoencoder" else {"dim": DIM}
    context = {"input_dims": {m: feats[m][0].shape[1] for m in modalities},
               "token_inputs": {m: True for m in modalities}}
    return mmkit.create("fusion", name, context=context, **size, **params)


def train_and_evaluate(name: str, modalities: list[str], data) -> float:
    """Train fusion + MLP classifier with cross-entropy (+ the fusion's aux losses); val accuracy."""
    train, y_train, val, y_val = data
    torch.manual_seed(0)
    fusion = make_fusion(name, train, modalities, dropout=0.0)
    head = nn.Sequential(nn.Linear(fusion.dim, 64), nn.GELU(), nn.Linear(64, 2))
    opt = torch.optim.AdamW([*fusion.parameters(), *head.parameters()], lr=LR, weight_decay=0.01)
    g = torch.Generator().manual_seed(0)
    fusion.train()
    for _ in range(STEPS):
        idx = torch.randint(0, len(y_train), (BATCH,), generator=g)
        out = fusion(embeddings(train, idx, modalities))
        loss = nn.functional.cross_entropy(head(out.pooled), y_train[idx])
        loss = loss + sum(out.aux_losses.values(), torch.tensor(0.0))
        opt.zero_grad()
        loss.backward()
        opt.step()
    fusion.eval()
    head.eval()
    with torch.no_grad():
        logits = head(fusion(embeddings(val, torch.arange(len(y_val)), modalities)).pooled)
    return float((logits.argmax(1) == y_val).float().mean())


@pytest.mark.slow
def test_every_fusion_beats_the_best_single_modality(data):
    rows = []
    single = {}
    for modality in ("image", "text"):
        for name in ("concat", "cross-attention"):  # pooled MLP; token-level self-attention
            start = time.perf_counter()
            acc = train_and_evaluate(name, [modality], data)
            single[(name, modality)] = acc
            rows.append((f"{name} ({modality} only)", acc, time.perf_counter() - start))
    best_single = max(single.values())
    fused = {}
    for name in FUSIONS:
        start = time.perf_counter()
        fused[name] = train_and_evaluate(name, ["image", "text"], data)
        rows.append((f"{name} (image + text)", fused[name], time.perf_counter() - start))
    print(f"\nshapes claim task, val accuracy after {STEPS} steps (batch {BATCH}, dim {DIM}, lr {LR})")
    print("| model | val accuracy | train time (s) |\n|---|---|---|")
    for label, acc, seconds in rows:
        print(f"| {label} | {acc:.3f} | {seconds:.1f} |")
    assert best_single < 0.6, f"a single modality should be near chance, got {single}"
    for name, acc in fused.items():
        assert acc > best_single + 0.2, f"{name}: {acc:.3f} does not beat the best single modality {best_single:.3f}"


@pytest.mark.slow
def test_autoencoder_learns_to_reconstruct_and_impute(data):
    train, y_train, val, y_val = data
    modalities = ["image", "text"]
    torch.manual_seed(0)
    fusion = make_fusion("autoencoder", train, modalities, dim=64, dropout=0.0, modality_dropout=0.5)
    opt = torch.optim.AdamW(fusion.parameters(), lr=2e-3)
    all_val = embeddings(val, torch.arange(len(y_val)), modalities)

    def recon() -> dict[str, float]:
        fusion.eval()
        with torch.no_grad():
            out = {k: float(v) for k, v in fusion(all_val).aux_losses.items()}
        fusion.train()
        return out

    before = recon()
    g = torch.Generator().manual_seed(0)
    fusion.train()
    for _ in range(400):
        idx = torch.randint(0, len(y_train), (BATCH,), generator=g)
        loss = sum(fusion(embeddings(train, idx, modalities)).aux_losses.values())
        opt.zero_grad()
        loss.backward()
        opt.step()
    after = recon()
    fusion.eval()
    print("\nautoencoder val reconstruction MSE before -> after training: "
          + ", ".join(f"{k} {before[k]:.4f} -> {after[k]:.4f}" for k in before))
    for key in before:
        assert after[key] < 0.2 * before[key], f"{key} did not decrease enough: {before[key]} -> {after[key]}"
    # imputation: reconstruct a modality from the other one only, compare with predicting its train mean
    with torch.no_grad():
        for target in modalities:
            truth = val[target][0]
            imputed = fusion.impute(all_val, target)
            mse_impute = float((imputed - truth).pow(2).mean())
            mse_mean = float((train[target][0].mean(0) - truth).pow(2).mean())
            print(f"impute {target} from the other modality: MSE {mse_impute:.5f} vs train mean {mse_mean:.5f}")
            assert mse_impute < 0.98 * mse_mean, f"imputing {target} is no better than its mean"


# all five seeds are `slow` (`pytest -m slow -k plateau` runs them); seed 0 is in the default suite, the other
# four (a minute or more each) are also `long`: CI runs them as a second step (`pytest -m long`)
@pytest.mark.parametrize("seed", [pytest.param(0, marks=pytest.mark.slow),
                                  *(pytest.param(s, marks=[pytest.mark.slow, pytest.mark.long]) for s in (1, 2, 3, 4))])
def test_quickstart_crosses_its_plateau(seed: int, tmp_path: Path) -> None:
    from mmkit._internal.recipe import load_recipe
    from mmkit._internal.trainer import train

    recipe = load_recipe(ROOT / "recipes" / "quickstart.toml",
                         [f"run.seed={seed}", f"run.output_dir='{tmp_path.as_posix()}'"])
    start = time.perf_counter()
    result = train(recipe, quiet=True)
    summary = json.loads((result.run_dir / "summary.json").read_text())
    acc = summary["final"]["val"]["accuracy"]
    print(f"\nquickstart seed {seed}: final val accuracy {acc:.3f} in {time.perf_counter() - start:.0f} s")
    # the plateau is ~0.85; measured with lr 3e-4 (the default): seeds 0-4 reached 0.998, 0.998, 1.000,
    # 0.972 and 0.966 (docs/fusions.md); with the former lr 1e-3 seed 1 stayed at 0.856
    assert acc >= 0.9, f"seed {seed} stayed at the plateau: val accuracy {acc:.3f}"
