"""The heads learn real tasks on the ``shapes`` dataset (small CNN, CPU, a minute each).

Run with ``.venv/bin/pytest tests/test_head_learning.py -s`` to see the numbers (they are quoted in
docs/heads.md). Each test trains a test-local CNN image encoder (and, for retrieval, a GRU text
encoder) end to end with one built-in head, through the head's own target pipeline
(``fit`` -> ``preprocess_target`` -> ``collate_targets``), and evaluates on held-out rows.
"""

from __future__ import annotations

import math
import time

import pytest
import torch
from torch import nn

from mmkit._internal.interfaces import Batch, Embedding, Encoder, Fused
from mmkit._internal.tokenize import WordTokenizer

from mmkit_heads.captioning import CaptioningHead
from mmkit_heads.classification import ClassificationHead
from mmkit_heads.contrastive import ContrastiveHead
from mmkit_shapes.generate import shapes

pytestmark = pytest.mark.slow

IMAGE_SIZE = 48
N_TRAIN, N_TEST = 2500, 300
STEPS = {"classification": 200, "captioning": 400, "contrastive": 250}


class TinyCNN(Encoder):
    """Four stride-2 convolutions: a 48 px image -> 3x3 grid of tokens (with position embeddings);
    the pooled vector is a projection of the flattened grid, so it keeps where things are."""

    modality = "image"
    has_tokens = True

    def __init__(self, dim: int = 96) -> None:
        super().__init__()
        self.dim = dim
        chans = [3, 32, 48, 64, dim]
        layers: list[nn.Module] = []
        for cin, cout in zip(chans, chans[1:]):
            layers += [nn.Conv2d(cin, cout, 3, stride=2, padding=1), nn.BatchNorm2d(cout), nn.ReLU()]
        self.convs = nn.Sequential(*layers)
        side = math.ceil(IMAGE_SIZE / 16)
        self.pos = nn.Parameter(torch.randn(side * side, dim) * 0.02)
        self.pool = nn.Linear(side * side * dim, dim)

    def forward(self, images: torch.Tensor) -> Embedding:
        tokens = self.convs(images).flatten(2).transpose(1, 2) + self.pos
        pooled = self.pool(tokens.flatten(1))
        return Embedding(pooled, torch.ones(len(images), dtype=torch.bool), tokens,
                         torch.ones(tokens.shape[:2], dtype=torch.bool))


class TinyGRUText(Encoder):
    """Word embeddings and a bidirectional GRU; pooled = both final states."""

    modality = "text"

    def __init__(self, tokenizer: WordTokenizer, dim: int = 96) -> None:
        super().__init__()
        self.tokenizer = tokenizer
        self.dim = dim
        self.emb = nn.Embedding(len(tokenizer.itos), 64, padding_idx=0)
        self.gru = nn.GRU(64, dim // 2, batch_first=True, bidirectional=True)

    def collate(self, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        ids = [torch.tensor(self.tokenizer.encode(t)) for t in texts]
        return nn.utils.rnn.pad_sequence(ids, batch_first=True), torch.tensor([len(i) for i in ids])

    def forward(self, inputs: tuple[torch.Tensor, torch.Tensor]) -> Embedding:
        ids, lengths = inputs
        packed = nn.utils.rnn.pack_padded_sequence(self.emb(ids), lengths, batch_first=True, enforce_sorted=False)
        _, h = self.gru(packed)
        return Embedding(torch.cat([h[0], h[1]], dim=-1), torch.ones(len(ids), dtype=torch.bool))


@pytest.fixture(scope="module")
def data():
    # One thread: these small convolutions gain little from a second one, and two OpenMP threads on a
    # busy 2-core machine (other test processes) spin-wait and run several times slower.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    splits = shapes(n_train=N_TRAIN, n_val=N_TEST, n_test=0, seed=0, image_size=IMAGE_SIZE).splits

    def images(rows):
        pixels = torch.stack([torch.frombuffer(bytearray(r["image"].tobytes()), dtype=torch.uint8) for r in rows])
        return (pixels.view(len(rows), IMAGE_SIZE, IMAGE_SIZE, 3).permute(0, 3, 1, 2).float() / 255 - 0.5) / 0.25

    yield {"train": splits["train"], "test": splits["val"],
           "train_images": images(splits["train"]), "test_images": images(splits["val"])}
    torch.set_num_threads(threads)


def _schedule(step: int, total: int, warmup: int) -> float:
    if step < warmup:
        return (step + 1) / warmup
    return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))


def train(modules: list[nn.Module], forward, n: int, *, steps: int, batch_size: int, lr: float,
          warmup: int = 30, seed: int = 0) -> float:
    """AdamW with linear warm-up then cosine decay; ``forward(index) -> loss``. Returns seconds."""
    torch.manual_seed(seed)
    params = [p for m in modules for p in m.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.01)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: _schedule(s, steps, warmup))
    for m in modules:
        m.train()
    start, perm, pos = time.perf_counter(), torch.randperm(n), 0
    for _ in range(steps):
        if pos + batch_size > n:
            perm, pos = torch.randperm(n), 0
        idx = perm[pos:pos + batch_size]
        pos += batch_size
        loss = forward(idx)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
    for m in modules:
        m.eval()
    return time.perf_counter() - start


def evaluate(head, forward_eval, n: int, batch_size: int = 100) -> dict[str, float]:
    """Run ``forward_eval(index) -> (Output, Batch)`` over ``n`` rows into the head's metrics."""
    metrics = head.new_metrics()
    with torch.no_grad():
        for start in range(0, n, batch_size):
            out, batch = forward_eval(torch.arange(start, min(n, start + batch_size)))
            metrics.update(out, batch)
    return metrics.compute()


def _targets(head, rows, idx):
    return head.collate_targets([head.preprocess_target(rows[i]) for i in idx.tolist()])


def _image_fused(cnn: TinyCNN, images: torch.Tensor) -> Fused:
    emb = cnn(images)
    return Fused(emb.pooled, emb.tokens, emb.token_mask, inputs={"image": emb})


def test_classification_learns_first_shape(data):
    torch.manual_seed(0)
    cnn = TinyCNN()
    head = ClassificationHead(cnn.dim, {"image": cnn.dim}, field="first_shape", hidden=64)
    head.fit([{"first_shape": r["first_shape"]} for r in data["train"]])
    assert head.labels == ["circle", "square", "triangle"]

    def step(idx):
        batch = Batch({}, {}, _targets(head, data["train"], idx), idx)
        return head(_image_fused(cnn, data["train_images"][idx]), batch).loss

    seconds = train([cnn, head], step, N_TRAIN, steps=STEPS["classification"], batch_size=64, lr=2e-3)

    def eval_step(idx):
        batch = Batch({}, {}, _targets(head, data["test"], idx), idx)
        return head(_image_fused(cnn, data["test_images"][idx]), batch), batch

    result = evaluate(head, eval_step, N_TEST)
    print(f"\n[classification first_shape] train {seconds:.1f}s; held-out ({N_TEST}) accuracy "
          f"{result['accuracy']:.3f}, macro-F1 {result['macro_f1']:.3f} (chance ~0.33)")
    assert result["accuracy"] >= 0.90


def test_captioning_reaches_bleu4(data):
    torch.manual_seed(0)
    cnn = TinyCNN()
    head = CaptioningHead(cnn.dim, {"image": cnn.dim}, dim=96, layers=2, heads=4, dropout=0.1, max_len=16)
    head.fit([{"caption": r["caption"]} for r in data["train"]])

    def step(idx):
        batch = Batch({}, {}, _targets(head, data["train"], idx), idx)
        return head(_image_fused(cnn, data["train_images"][idx]), batch).loss

    seconds = train([cnn, head], step, N_TRAIN, steps=STEPS["captioning"], batch_size=64, lr=2e-3)

    def eval_step(idx):
        batch = Batch({}, {}, _targets(head, data["test"], idx), idx)
        return head(_image_fused(cnn, data["test_images"][idx]), batch), batch

    greedy = evaluate(head, eval_step, N_TEST)
    head.beam_size = 3
    t0 = time.perf_counter()
    beam = evaluate(head, eval_step, N_TEST)
    beam_seconds = time.perf_counter() - t0
    sample = head.decode(eval_step(torch.arange(2))[0].preds)
    print(f"\n[captioning] train {seconds:.1f}s; held-out ({N_TEST}) greedy BLEU-4 {greedy['bleu4']:.3f} "
          f"BLEU-1 {greedy['bleu1']:.3f} CIDEr {greedy['cider']:.3f} exact {greedy['exact_match']:.3f}; "
          f"beam 3 BLEU-4 {beam['bleu4']:.3f} CIDEr {beam['cider']:.3f} exact {beam['exact_match']:.3f} "
          f"({beam_seconds:.1f}s)\n  e.g. {sample[0]['caption']!r} for {data['test'][0]['caption']!r}")
    assert greedy["bleu4"] >= 0.5
    assert beam["bleu4"] >= 0.5


def test_contrastive_retrieval_beats_chance(data):
    torch.manual_seed(0)
    cnn = TinyCNN()
    tokenizer = WordTokenizer().fit(r["caption"] for r in data["train"])
    text = TinyGRUText(tokenizer)
    head = ContrastiveHead(cnn.dim, {"image": cnn.dim, "text": text.dim}, query="image", key="text", proj_dim=64)
    head.fit([{} for _ in data["train"]])

    def fused(rows, images, idx):
        img = cnn(images[idx])
        txt = text(text.collate([rows[i]["caption"] for i in idx.tolist()]))
        return Fused(img.pooled, inputs={"image": img, "text": txt})

    def step(idx):
        return head(fused(data["train"], data["train_images"], idx), Batch({}, {}, {}, idx)).loss

    seconds = train([cnn, text, head], step, N_TRAIN, steps=STEPS["contrastive"], batch_size=128, lr=2e-3)
    # identical captions would tie (and ties count against the true match): keep unique ones
    counts: dict[str, int] = {}
    for r in data["test"]:
        counts[r["caption"]] = counts.get(r["caption"], 0) + 1
    keep = torch.tensor([i for i, r in enumerate(data["test"]) if counts[r["caption"]] == 1])

    def eval_step(idx):
        rows_idx = keep[idx]
        batch = Batch({}, {}, {}, rows_idx)
        return head(fused(data["test"], data["test_images"], rows_idx), batch), batch

    result = evaluate(head, eval_step, len(keep))
    n = len(keep)
    print(f"\n[contrastive] train {seconds:.1f}s; {n} held-out pairs with unique captions: image->text "
          f"R@1 {result['image_to_text_r1']:.3f} R@5 {result['image_to_text_r5']:.3f} "
          f"R@10 {result['image_to_text_r10']:.3f} mean rank {result['image_to_text_mean_rank']:.1f}; "
          f"text->image R@1 {result['text_to_image_r1']:.3f}; chance R@1 {1 / n:.4f}, R@10 {10 / n:.3f}")
    assert n >= 100
    assert result["image_to_text_r1"] >= 20 / n  # at least 20x chance
    assert result["image_to_text_r10"] >= 0.5
