"""The contrastive head under 2 processes (gloo, torch's launcher): negatives span the global batch,
so the mean of the ranks' losses equals the single-process loss on the same global batch, and the
gradients (averaged as DDP does) match too."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

pytestmark = pytest.mark.slow

SCRIPT = textwrap.dedent("""
    import json, sys
    import torch, torch.distributed as dist, torch.nn.functional as F
    from mmkit_heads.contrastive import info_nce

    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    g = torch.Generator().manual_seed(0)
    q_all = F.normalize(torch.randn(8, 5, generator=g), dim=-1)
    k_all = F.normalize(torch.randn(8, 5, generator=g), dim=-1)
    q = q_all[rank::world].clone().requires_grad_(True)
    k = k_all[rank::world].clone().requires_grad_(True)
    loss = info_nce(q, k, torch.tensor(10.0))
    loss.backward()
    parts = [None] * world
    dist.all_gather_object(parts, {"rank": rank, "loss": loss.item(), "gq": q.grad.tolist(), "gk": k.grad.tolist()})
    if rank == 0:
        print("RESULT " + json.dumps(parts), flush=True)
    dist.barrier()  # no rank tears gloo down while another still talks to it (that aborted once in CI)
    dist.destroy_process_group()
""")


def test_global_batch_loss_and_gradients_match_single_process(tmp_path: Path) -> None:
    from mmkit_heads.contrastive import info_nce

    script = tmp_path / "contrastive_ddp.py"
    script.write_text(SCRIPT, encoding="utf-8")
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2",
                           str(script)], capture_output=True, text=True, timeout=180)
    # what is checked is the numbers rank 0 printed; a gloo teardown abort after them is not
    line = next((x for x in done.stdout.splitlines() if x.startswith("RESULT ")), None)
    assert line is not None, f"exit {done.returncode}: {done.stderr[-3000:]}"
    parts = json.loads(line[len("RESULT "):])

    g = torch.Generator().manual_seed(0)
    q_all = F.normalize(torch.randn(8, 5, generator=g), dim=-1).requires_grad_(True)
    k_all = F.normalize(torch.randn(8, 5, generator=g), dim=-1).requires_grad_(True)
    # the single process sees the global batch in rank-interleaved order (as the sampler shards it)
    order = torch.tensor([0, 2, 4, 6, 1, 3, 5, 7])
    single = info_nce(q_all[order], k_all[order], torch.tensor(10.0))
    single.backward()
    mean_loss = sum(p["loss"] for p in parts) / len(parts)
    assert mean_loss == pytest.approx(single.item(), rel=1e-5)
    # the gather is differentiable, so each rank's rows get the gradient of every rank's loss; DDP then
    # averages over ranks: local gradient / world == the single-process gradient of those rows
    for p in parts:
        rows = torch.arange(p["rank"], 8, 2)
        assert torch.allclose(torch.tensor(p["gq"]) / 2, q_all.grad[rows], atol=1e-6)
        assert torch.allclose(torch.tensor(p["gk"]) / 2, k_all.grad[rows], atol=1e-6)
