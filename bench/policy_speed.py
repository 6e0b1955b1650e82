"""Sampling and training speed of the default policy, with the cores idle or loaded like env workers.

    .venv/bin/python bench/policy_speed.py --batch 4 --threads 1 2 --busy 0 2

``--busy K`` starts K processes that spin on a core each (what MuJoCo workers do during a rollout), to
show the cost of torch thread oversubscription. Prints a Markdown table. OpenMP's wait policy is the
package's (passive); ``OMP_WAIT_POLICY=ACTIVE`` in front of the command measures spinning threads instead.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import multiprocessing as mp
import resource
import time

import tgrpo  # noqa: F401  (first: it sets OpenMP's wait policy before torch loads, as every tgrpo command does)

import numpy as np
import torch

from tgrpo.policy.config import PolicyConfig
from tgrpo.policy.vla import TinyVLA

INSTR = "pick up the alphabet soup and place it in the basket"


def _spin(stop) -> None:
    x = 0
    while not stop.is_set():
        x += 1


def _images(policy: TinyVLA, batch: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    return {c: rng.integers(0, 256, (batch, 128, 128, 3), dtype=np.uint8) for c in policy.config.cameras}


def _inputs(policy: TinyVLA, batch: int):
    """Model inputs for ``batch`` observations (random images and proprioception, seed 0), not yet encoded."""
    rng = np.random.default_rng(0)
    return policy.inputs(_images(policy, batch, rng), [INSTR] * batch, rng.normal(size=(batch, 8)))


def median_time(fn, repeats: int) -> float:
    """Median wall time of ``fn()`` over ``repeats`` calls, after one untimed warm-up call."""
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def page_faults(fn, repeats: int) -> float:
    """Mean minor page faults of this process per ``fn()`` call, after one untimed warm-up call (memory the
    C library maps afresh for a call and returns afterwards faults in again on the next one)."""
    fn()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(repeats):
        fn()
    return (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / repeats


def time_sample(policy: TinyVLA, batch: int, repeats: int) -> tuple[float, float]:
    """One batched sampling call as in a rollout step: input preparation, the encoder, 7 KV-cached tokens.
    Returns its median time and its page faults per call."""
    rng = np.random.default_rng(0)
    images, proprio = _images(policy, batch, rng), rng.normal(size=(batch, 8))

    def call():
        return policy.sample(policy.inputs(images, [INSTR] * batch, proprio), temperature=1.0)

    return median_time(call, repeats), page_faults(call, repeats)


def time_sample_parts(policy: TinyVLA, batch: int, repeats: int) -> tuple[float, float]:
    """The two parts of :func:`time_sample`: the frozen encoder on the batch's images, and the language
    model's KV-cached decoding of 7 tokens from those features."""
    inputs = _inputs(policy, batch)
    encoded = policy.encode(inputs)
    return (median_time(lambda: policy.encode(inputs), repeats),
            median_time(lambda: policy.sample(encoded, temperature=1.0), repeats))


def time_lm_unmerged(policy: TinyVLA, batch: int, repeats: int) -> float:
    """The language-model part of :func:`time_sample_parts` with each LoRA adapter run as its own two
    matrix products beside the base layer's (``policy.merge_lora_sampling`` off)."""
    merged = policy.config
    policy.config = dataclasses.replace(merged, merge_lora_sampling=False)
    try:
        return time_sample_parts(policy, batch, repeats)[1]
    finally:
        policy.config = merged


def time_encoder_unfolded(policy: TinyVLA, batch: int, repeats: int) -> float:
    """The encoder of :func:`time_sample_parts` run as stored, each batch norm after its convolution (what a
    frozen trunk did before it folded them)."""
    plain = copy.deepcopy(policy.core.vision)
    plain.frozen = False  # the unfolded forward path; eval mode keeps the batch norms' running statistics
    plain.eval()
    pixels = _inputs(policy, batch).pixels
    with torch.no_grad():
        return median_time(lambda: torch.cat([plain(pixels[i:i + 16]) for i in range(0, len(pixels), 16)]), repeats)


def profile_lm(policy: TinyVLA, batch: int, repeats: int) -> tuple[float, float, float]:
    """The LM's part of a sampling call under torch's profiler, per call: milliseconds in matrix products
    (``mm``, ``addmm``), milliseconds in every other operator (self time), and the number of operators."""
    from torch.profiler import ProfilerActivity, profile

    encoded = policy.encode(_inputs(policy, batch))
    policy.sample(encoded, temperature=1.0)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(repeats):
            policy.sample(encoded, temperature=1.0)
    ops = [e for e in prof.key_averages() if e.key.startswith("aten::")]
    matmul = sum(e.self_cpu_time_total for e in ops if e.key in ("aten::mm", "aten::addmm", "aten::bmm"))
    other = sum(e.self_cpu_time_total for e in ops) - matmul
    return matmul / 1e3 / repeats, other / 1e3 / repeats, sum(e.count for e in ops) / repeats


def time_one_pass(policy: TinyVLA, batch: int, repeats: int) -> tuple[float, float]:
    """The LM as it samples (KV-cached, 7 passes) against one forward pass over the prompt plus 7 tokens
    (teacher-forced, no gradient): the second is what a decoder of all 7 action tokens in one pass (as
    OpenVLA-OFT's parallel decoding) would cost with this LM."""
    encoded = policy.encode(_inputs(policy, batch))
    bins = torch.randint(0, 256, (batch, 7))

    def one_pass():
        with torch.no_grad(), policy.sampling_model():
            return policy.token_logprobs(encoded, bins)

    return median_time(lambda: policy.sample(encoded, temperature=1.0), repeats), median_time(one_pass, repeats)


def time_train_step(policy: TinyVLA, batch: int, repeats: int) -> float:
    # the learner encodes a group's images once with the frozen encoder, then trains on the features
    inputs = policy.encode(_inputs(policy, batch))
    bins = torch.randint(0, 256, (batch, 7))
    opt = torch.optim.AdamW([p for p in policy.parameters() if p.requires_grad], lr=1e-4)

    def step() -> None:
        loss = -policy.token_logprobs(inputs, bins).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()

    return median_time(step, repeats)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch", type=int, default=4, help="sampling batch (the group size)")
    p.add_argument("--train-batch", type=int, default=32)
    p.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    p.add_argument("--busy", type=int, nargs="+", default=[0, 2], help="spinning processes standing in for env workers")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--lora-rank", type=int, default=0,
                   help="LoRA adapters on the LM (TGRPO trains and samples with rank 16; 0: none, as SFT)")
    p.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"),
                   help="weight dtype of the whole policy (PolicyConfig.dtype)")
    p.add_argument("--profile-lm", action="store_true",
                   help="only profile the LM's part of a sampling call (one torch thread, no busy cores)")
    args = p.parse_args()
    policy = TinyVLA(PolicyConfig(lora_rank=args.lora_rank, dtype=args.dtype))
    n_params = sum(x.numel() for x in policy.parameters()) / 1e6
    print(f"tiny-vla, {n_params:.2f} M parameters, {args.dtype}, LoRA rank {args.lora_rank}\n")
    if args.profile_lm:
        torch.set_num_threads(1)
        matmul, other, n_ops = profile_lm(policy, args.batch, args.repeats)
        print(f"LM of a sampling call, batch {args.batch} (profiled, per call): matrix products {matmul:.1f} ms, "
              f"other operators {other:.1f} ms, {n_ops:.0f} operators")
        sampling, one_pass = time_one_pass(policy, args.batch, args.repeats)
        print(f"LM, not profiled: 7 KV-cached passes {1000 * sampling:.1f} ms; one pass over the prompt and 7 "
              f"tokens {1000 * one_pass:.1f} ms")
        return
    print(f"| busy cores | torch threads | sample batch {args.batch} (ms) | page faults per sample call "
          f"| of which encoder (ms) | of which LM (ms) | LM, LoRA unmerged (ms) | encoder, batch norms unfolded (ms) "
          f"| train step batch {args.train_batch} (s) |")
    print("|---|---|---|---|---|---|---|---|---|")
    for busy in args.busy:
        stop = mp.Event()
        spinners = [mp.Process(target=_spin, args=(stop,), daemon=True) for _ in range(busy)]
        for s in spinners:
            s.start()
        try:
            for threads in args.threads:
                torch.set_num_threads(threads)
                sample, faults = time_sample(policy, args.batch, args.repeats)
                encoder, lm = time_sample_parts(policy, args.batch, args.repeats)
                unmerged = time_lm_unmerged(policy, args.batch, args.repeats) if args.lora_rank else float("nan")
                unfolded = time_encoder_unfolded(policy, args.batch, args.repeats)
                train = time_train_step(policy, args.train_batch, max(2, args.repeats // 2))
                print(f"| {busy} | {threads} | {1000 * sample:.0f} | {faults:.0f} | {1000 * encoder:.0f} | {1000 * lm:.0f} | "
                      f"{1000 * unmerged:.0f} | {1000 * unfolded:.0f} | {train:.2f} |", flush=True)
        finally:
            stop.set()
            for s in spinners:
                s.join()


if __name__ == "__main__":
    main()
