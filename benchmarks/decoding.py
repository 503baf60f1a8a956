"""Decoding: tokens/s of the captioning head's greedy and beam search, with and without its
key-value cache (``use_cache``).

The head is built through the registry (``captioning``: a pre-norm Transformer decoder with
cross-attention to the fused memory) with a word vocabulary of ``--vocab`` entries, and decodes a
batch of random fused memories (a pooled vector + ``--memory-tokens`` tokens). The end-of-sequence
logit is suppressed so every sequence decodes exactly ``--max-len`` tokens: both variants then do
the same amount of work, and tokens/s = rows x generated tokens / seconds. The four variants run
interleaved; cached and uncached outputs are compared (they should be identical).

    python benchmarks/decoding.py
"""

from __future__ import annotations

import time
from typing import Any

import _common as C

NAME = "decoding"


def build_head(args: Any) -> Any:
    import mmkit

    head = mmkit.create("head", "captioning", context={"input_dim": args.dim, "modality_dims": {"image": args.dim}},
                        dim=args.dim, layers=args.layers, heads=args.heads, max_len=args.max_len,
                        max_vocab=args.vocab, dropout=0.0)
    words = [f"w{i}" for i in range(args.vocab)]
    head.fit([{"caption": " ".join(words[i: i + 20])} for i in range(0, len(words), 20)])
    import torch

    with torch.no_grad():
        head.decoder.out.bias[head.tokenizer.eos_id] = -1e4  # decode exactly max_len tokens
    return head.eval()


def main() -> None:
    p = C.parser(NAME, __doc__, repeats=5)
    p.add_argument("--batch", type=int, default=None, help="sequences decoded at once (default 16; quick 2)")
    p.add_argument("--max-len", type=int, default=None, help="tokens per sequence (default 32; quick 6)")
    p.add_argument("--beam", type=int, default=4, help="beam size of the beam-search variants")
    p.add_argument("--dim", type=int, default=None, help="decoder width (default 256; quick 32)")
    p.add_argument("--layers", type=int, default=None, help="decoder layers (default 2; quick 1)")
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--vocab", type=int, default=None, help="word vocabulary (default 8000; quick 200)")
    p.add_argument("--memory-tokens", type=int, default=16)
    args = C.finish_args(p.parse_args(), NAME)
    args.batch = args.batch or (2 if args.quick else 16)
    args.max_len = args.max_len or (6 if args.quick else 32)
    args.dim = args.dim or (32 if args.quick else 256)
    args.layers = args.layers or (1 if args.quick else 2)
    args.vocab = args.vocab or (200 if args.quick else 8000)
    load_before = C.loadavg()

    import torch

    from mmkit._internal.interfaces import Fused

    threads = C.set_threads(args.threads)
    torch.manual_seed(0)
    head = build_head(args)
    fused = Fused(pooled=torch.randn(args.batch, args.dim),
                  tokens=torch.randn(args.batch, args.memory_tokens, args.dim),
                  mask=torch.ones(args.batch, args.memory_tokens, dtype=torch.bool))
    outputs: dict[str, Any] = {}

    def variant(beam: int, cache: bool) -> Any:
        def run() -> float:
            t0 = time.perf_counter()
            tokens = head.generate(fused, beam_size=beam, use_cache=cache)
            seconds = time.perf_counter() - t0
            generated = int((tokens != head.tokenizer.pad_id).sum())
            outputs[(beam, cache)] = tokens
            return generated / seconds
        return run

    sides = {"greedy, cache": variant(1, True), "greedy, no cache": variant(1, False),
             f"beam {args.beam}, cache": variant(args.beam, True),
             f"beam {args.beam}, no cache": variant(args.beam, False)}
    C.say(f"{NAME}: {args.repeats} interleaved repeats of {len(sides)} variants ...")
    values = C.interleave(sides, args.repeats, warmup=True, log=C.say)
    same = {"greedy": bool(torch.equal(outputs[(1, True)], outputs[(1, False)])),
            "beam": bool(torch.equal(outputs[(args.beam, True)], outputs[(args.beam, False)]))}
    tokens_per_seq = int((outputs[(1, True)] != head.tokenizer.pad_id).sum()) // args.batch
    results = {name: C.summary(v) for name, v in values.items()}
    ratios = {"greedy_cache_speedup": C.median(C.pair_ratios(values["greedy, cache"], values["greedy, no cache"])),
              "beam_cache_speedup": C.median(C.pair_ratios(values[f"beam {args.beam}, cache"],
                                                           values[f"beam {args.beam}, no cache"]))}
    md = C.table(["decoding", f"tokens/s (median of {args.repeats})", "min", "max"],
                 [[name, r["median"], r["min"], r["max"]] for name, r in results.items()])
    md += (f"\n\nKV-cache speed-up: greedy **{ratios['greedy_cache_speedup']:.2f}x**, beam {args.beam} "
           f"**{ratios['beam_cache_speedup']:.2f}x**; cached == uncached output: greedy {same['greedy']}, beam "
           f"{same['beam']}. Batch {args.batch} x {tokens_per_seq} tokens, decoder dim {args.dim} x {args.layers} "
           f"layers, vocabulary {head.decoder.vocab_size}, memory 1 + {args.memory_tokens} tokens.")
    C.write_result(NAME, args, {
        "params": {"batch": args.batch, "max_len": args.max_len, "beam": args.beam, "dim": args.dim,
                   "layers": args.layers, "vocab": head.decoder.vocab_size, "threads": threads},
        "unit": "tokens/s", "results": results, "ratios": ratios, "identical_outputs": same,
    }, md, load_before)


if __name__ == "__main__":
    main()
