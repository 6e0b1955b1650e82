"""Supervised fine-tuning (behaviour cloning) of a VLA on LIBERO-format HDF5 demos (``tgrpo sft``).

The loss is the negative log-likelihood of the 7 action tokens of each (image, instruction, action)
row, with the action head restricted to the 256 action tokens (the same distribution RL samples from).
Batches are drawn with a generator seeded by (seed, step), so a resumed run sees exactly the batches the
uninterrupted run would have seen.
"""

from __future__ import annotations

import dataclasses
import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from tgrpo.checkpoint import find_checkpoint, load_trainer_state, machine, save_checkpoint
from tgrpo.data.hdf5 import DATASET_IMAGE_KEYS, DemoFile
from tgrpo.errors import ConfigError, DatasetError
from tgrpo.policy.config import PolicyConfig
from tgrpo.policy.normalization import ActionNormalizer
from tgrpo.policy.vla import LlavaVLA, PolicyInputs, TinyVLA


@dataclass(frozen=True)
class SFTConfig:
    """Behaviour cloning settings.

    Attributes:
        data: HDF5 demo files, or directories searched recursively for ``*.hdf5``.
        out: run directory (checkpoint/, best/, tb/ and sft_summary.json go there).
        steps: optimizer steps.
        batch_size: rows per step.
        lr: AdamW learning rate (from-scratch training of the 5.6 M model; OpenVLA's LoRA SFT used 5e-4).
        weight_decay: AdamW weight decay.
        warmup_steps: linear warm-up, then cosine decay to 10% of ``lr``.
        grad_clip: max global gradient norm.
        val_fraction: share of each file's demos held out for validation (at least one when a file has 2+).
        eval_every: steps between validation passes (and best-checkpoint updates).
        save_every: steps between checkpoints (for resuming).
        augment_shift: random image shift in pixels (DrQ-style pad-and-crop) when the vision encoder
            trains; a frozen encoder's features are cached once, without augmentation. 0 disables.
        max_demos: use at most this many demos per file (None: all).
        num_threads: torch CPU threads.
        seed: seed of the split, the batches, the augmentation and the model initialisation.
        policy: the model to train (``policy.checkpoint`` set: fine-tune that checkpoint instead).
    """

    data: tuple[str, ...] = ()
    out: str = "runs/sft"
    steps: int = 3000
    batch_size: int = 32
    lr: float = 3e-4
    weight_decay: float = 0.01
    warmup_steps: int = 100
    grad_clip: float = 1.0
    val_fraction: float = 0.1
    eval_every: int = 250
    save_every: int = 250
    augment_shift: int = 6
    max_demos: int | None = None
    num_threads: int = 2
    seed: int = 0
    policy: PolicyConfig = field(default_factory=PolicyConfig)

    def __post_init__(self) -> None:
        if not self.data:
            raise ConfigError("sft needs at least one demo file or directory (--data)")
        for name in ("steps", "batch_size", "eval_every", "save_every", "num_threads"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not 0.0 <= self.val_fraction < 1.0:
            raise ConfigError(f"val_fraction must be in [0, 1), got {self.val_fraction}")
        if self.lr <= 0:
            raise ConfigError(f"lr must be > 0, got {self.lr}")


def demo_files(paths: tuple[str, ...] | list[str]) -> list[Path]:
    """Expand files and directories into a sorted list of HDF5 files; a missing path is an error."""
    files: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            found = sorted(p.rglob("*.hdf5"))
            if not found:
                raise DatasetError(f"directory {p} contains no *.hdf5 demo files")
            files.extend(found)
        elif p.exists():
            files.append(p)
        else:
            raise DatasetError(f"demo path {p} does not exist; create demos with `tgrpo collect-demos`")
    return files


@dataclass
class DemoRows:
    """All (observation, action) rows of a set of demos, in memory.

    Attributes:
        images: camera -> (M, H, W, 3) uint8 (emptied once ``features`` are cached).
        proprio: (M, 8) float32 raw proprioception (ee_pos, ee_ori, gripper_states).
        actions: (M, 7) float32 raw actions.
        instruction: (M,) int64 index into ``instructions``.
        demo: (M,) int64 global demo index.
        instructions: the distinct instructions.
        features: (M, C, P, D) float16 output of a frozen vision encoder, or None (see :func:`cache_features`).
    """

    images: dict[str, np.ndarray]
    proprio: np.ndarray
    actions: np.ndarray
    instruction: np.ndarray
    demo: np.ndarray
    instructions: list[str]
    features: torch.Tensor | None = None

    def __len__(self) -> int:
        return len(self.actions)

    def subset(self, rows: np.ndarray) -> "DemoRows":
        return DemoRows({c: v[rows] for c, v in self.images.items()}, self.proprio[rows], self.actions[rows],
                        self.instruction[rows], self.demo[rows], self.instructions,
                        None if self.features is None else self.features[torch.as_tensor(rows)])


def load_rows(files: list[Path], cameras: tuple[str, ...], val_fraction: float, seed: int,
              max_demos: int | None = None) -> tuple[DemoRows, DemoRows]:
    """Read demos into train and validation rows, split by whole demos within each file."""
    rng = np.random.default_rng(seed)
    parts: dict[str, list] = {"img": [], "prop": [], "act": [], "ins": [], "demo": [], "val": []}
    instructions: list[str] = []
    demo_id = 0
    for path in tqdm(files, desc="loading demos", unit="file", file=sys.stderr, leave=False):
        with DemoFile(path) as f:
            if f.info.language_instruction not in instructions:
                instructions.append(f.info.language_instruction)
            ins = instructions.index(f.info.language_instruction)
            n = len(f) if max_demos is None else min(len(f), max_demos)
            n_val = max(1, round(val_fraction * n)) if (val_fraction > 0 and n > 1) else 0
            val = set(rng.permutation(n)[:n_val].tolist())
            for k in range(n):
                demo = f[k]
                parts["img"].append({c: demo.obs[DATASET_IMAGE_KEYS[c]] for c in cameras})
                parts["prop"].append(demo.proprio)
                parts["act"].append(demo.actions)
                parts["ins"].append(np.full(len(demo), ins))
                parts["demo"].append(np.full(len(demo), demo_id))
                parts["val"].append(np.full(len(demo), k in val))
                demo_id += 1
    rows = DemoRows(
        images={c: np.concatenate([d[c] for d in parts["img"]]) for c in cameras},
        proprio=np.concatenate(parts["prop"]).astype(np.float32),
        actions=np.concatenate(parts["act"]).astype(np.float32),
        instruction=np.concatenate(parts["ins"]).astype(np.int64),
        demo=np.concatenate(parts["demo"]).astype(np.int64),
        instructions=instructions,
    )
    is_val = np.concatenate(parts["val"])
    return rows.subset(np.flatnonzero(~is_val)), rows.subset(np.flatnonzero(is_val))


@torch.no_grad()
def cache_features(policy: LlavaVLA, rows: DemoRows, chunk: int = 8) -> DemoRows:
    """Run the policy's frozen vision encoder over every row once; the images are dropped afterwards.

    Returns ``rows`` unchanged when the encoder trains. Stored as float16 (about 30 KB per row with two
    cameras at 128 px, stride 16).
    """
    if not policy.frozen_vision or len(rows) == 0:
        return rows
    feats = []
    for start in tqdm(range(0, len(rows), chunk), desc="encoding images", unit="batch", file=sys.stderr, leave=False):
        index = np.arange(start, min(start + chunk, len(rows)))
        px = policy.pixel_values({c: rows.images[c][index] for c in policy.config.cameras})
        f = policy.image_features(px)
        feats.append(f.reshape(len(index), -1, *f.shape[1:]).to(torch.float16))
    return dataclasses.replace(rows, images={}, features=torch.cat(feats))


def random_shift(x: torch.Tensor, pad: int, rng: np.random.Generator) -> torch.Tensor:
    """DrQ augmentation: replicate-pad (N, C, S, S) by ``pad`` pixels and crop back at random offsets."""
    if pad <= 0:
        return x
    size = x.shape[-1]
    padded = F.pad(x, (pad,) * 4, mode="replicate")
    offsets = rng.integers(0, 2 * pad + 1, size=(len(x), 2))
    return torch.stack([padded[i, :, dy:dy + size, dx:dx + size] for i, (dy, dx) in enumerate(offsets)])


def batch_inputs(policy: LlavaVLA, rows: DemoRows, index: np.ndarray, shift: int = 0,
                 rng: np.random.Generator | None = None) -> tuple[PolicyInputs, torch.Tensor]:
    """Model inputs and (B, 7) target bins for rows ``index``.

    Uses the cached features when ``rows`` has them (no augmentation: the encoder is frozen), else the
    images with a random shift of ``shift`` pixels.
    """
    ids, mask = policy.prompt_ids([rows.instructions[i] for i in rows.instruction[index]])
    proprio = policy.proprio_values(rows.proprio[index])
    if rows.features is not None:
        feats = rows.features[torch.as_tensor(index)].flatten(0, 1).float()
        inputs = PolicyInputs(ids, mask, features=feats, proprio=proprio)
    else:
        px = policy.pixel_values({c: rows.images[c][index] for c in policy.config.cameras})
        if shift and rng is not None:
            px = random_shift(px, shift, rng)
        inputs = PolicyInputs(ids, mask, pixels=px, proprio=proprio)
    bins = torch.from_numpy(policy.action_tokenizer.encode(policy.normalizer.normalize(rows.actions[index])))
    return inputs, bins


@torch.no_grad()
def evaluate_rows(policy: LlavaVLA, rows: DemoRows, batch_size: int = 64, greedy: bool = True) -> dict[str, float]:
    """Validation metrics, teacher-forced at temperature 1: token NLL and the entropy of the token
    distributions (nats); with ``greedy`` also greedy token accuracy and the L1 error of the greedy action
    (normalised units), which cost a 7-token decoding per row. The policy's train/eval mode is restored."""
    was_training = policy.training
    policy.eval()
    nll, acc, l1, entropy, count = 0.0, 0.0, 0.0, 0.0, 0
    for start in range(0, len(rows), batch_size):
        index = np.arange(start, min(start + batch_size, len(rows)))
        inputs, bins = batch_inputs(policy, rows, index)
        logp, ent = policy.token_logprobs(inputs, bins, temperature=1.0, with_entropy=True)
        nll += float(-logp.sum())
        entropy += float(ent.sum())
        count += bins.numel()
        if greedy:
            best, _ = policy.sample(inputs, temperature=0.0)
            acc += float((best == bins).float().sum())
            centers = torch.from_numpy(policy.action_tokenizer.decode(best.numpy()))
            target = torch.from_numpy(policy.normalizer.normalize(rows.actions[index]))
            l1 += float((centers - target).abs().sum())
    policy.train(was_training)
    out = {"val/nll": nll / count, "val/entropy": entropy / count}
    return out | ({"val/token_acc": acc / count, "val/l1": l1 / count} if greedy else {})


def lr_at(step: int, cfg: SFTConfig) -> float:
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    progress = (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps)
    return cfg.lr * (0.1 + 0.9 * 0.5 * (1 + np.cos(np.pi * min(1.0, progress))))


def train_sft(cfg: SFTConfig, resume: bool = True, stop_at: int | None = None) -> dict:
    """Run behaviour cloning; returns the summary written to ``<out>/sft_summary.json``.

    ``resume`` continues from ``<out>/checkpoint`` when it exists; ``stop_at`` ends the run after that
    step with a checkpoint, as an interruption would (a later call resumes it).
    """
    from torch.utils.tensorboard import SummaryWriter

    torch.set_num_threads(cfg.num_threads)
    out = Path(cfg.out)
    files = demo_files(cfg.data)
    ckpt = find_checkpoint(out / "checkpoint") if resume else None
    source = ckpt or cfg.policy.checkpoint  # a resumed or initial checkpoint decides the cameras to read
    policy = TinyVLA.load(source) if source else None
    cameras = policy.config.cameras if policy is not None else cfg.policy.cameras
    train, val = load_rows(files, cameras, cfg.val_fraction, cfg.seed, cfg.max_demos)
    if len(train) == 0:
        raise DatasetError(f"no training rows in {', '.join(map(str, files))}")
    if policy is None:
        proprio = ActionNormalizer.fit(train.proprio, gripper_dim=None) if cfg.policy.proprio else None
        policy = TinyVLA(cfg.policy, normalizer=ActionNormalizer.fit(train.actions), proprio_normalizer=proprio)
    train, val = cache_features(policy, train), cache_features(policy, val)
    params = [p for p in policy.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    start, best = 0, float("inf")
    if ckpt is not None:
        state = load_trainer_state(ckpt, optimizer)
        start, best = int(state["step"]), float(state.get("best_val_nll", best))
        print(f"resuming from {ckpt} at step {start}", file=sys.stderr)

    writer = SummaryWriter(str(out / "tb"))
    out.mkdir(parents=True, exist_ok=True)
    (out / "sft_config.json").write_text(json.dumps(dataclasses.asdict(cfg), indent=2, default=str))

    def checkpoint(step: int, path: Path) -> None:
        save_checkpoint(path, policy.save, optimizer, {"step": step, "best_val_nll": best})

    policy.train()
    bar = tqdm(range(start, cfg.steps), initial=start, total=cfg.steps, desc="sft", unit="step", file=sys.stderr)
    t0, metrics = time.perf_counter(), {}
    for step in bar:
        rng = np.random.default_rng([cfg.seed, step])
        index = rng.integers(0, len(train), size=cfg.batch_size)
        inputs, bins = batch_inputs(policy, train, index, cfg.augment_shift, rng)
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step, cfg)
        loss = -policy.token_logprobs(inputs, bins, temperature=1.0).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
        optimizer.step()
        writer.add_scalar("train/loss", loss.item(), step)
        writer.add_scalar("train/grad_norm", float(grad_norm), step)
        writer.add_scalar("train/lr", optimizer.param_groups[0]["lr"], step)
        bar.set_postfix(loss=f"{loss.item():.3f}")
        done = step + 1
        if len(val) and (done % cfg.eval_every == 0 or done == cfg.steps):
            metrics = evaluate_rows(policy, val)
            for k, v in metrics.items():
                writer.add_scalar(k, v, done)
            if metrics["val/nll"] < best:
                best = metrics["val/nll"]
                checkpoint(done, out / "best")
            bar.write(f"step {done}: " + ", ".join(f"{k} {v:.4f}" for k, v in metrics.items()))
        if done % cfg.save_every == 0 or done == cfg.steps or done == stop_at:
            checkpoint(done, out / "checkpoint")
        if done == stop_at:
            break
    writer.close()
    summary = {"steps": cfg.steps, "train_rows": len(train), "val_rows": len(val), "files": [str(f) for f in files],
               "instructions": train.instructions, "best_val_nll": best, "final": metrics,
               "seconds": round(time.perf_counter() - t0, 1), "machine": machine()}
    (out / "sft_summary.json").write_text(json.dumps(summary, indent=2))
    return summary
