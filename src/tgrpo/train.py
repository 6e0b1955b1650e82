"""TGRPO training (``tgrpo train``): the paper's pipeline, one phase per call.

    for each iteration:
        group    = sample N trajectories from one initial state        (sample_groups)
        rewards  = multi-stage dense rewards R[i, t] = f1 + f2         (dense_rewards)
        adv      = a1 * A_step + a2 * A_traj                           (advantage estimator)
        stats    = K epochs of clipped-surrogate + KL minibatch updates (update_policy)
        log, evaluate on held-out init states, checkpoint

Checkpoints (policy with its LoRA adapter, optimizer, sampling generator, iteration, history) are written
atomically after every ``save_every`` iterations; ``resume`` continues an interrupted run where it stopped.
"""

from __future__ import annotations

import json
import math
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from tgrpo.algo.advantages import absorb_success, get_advantage_estimator
from tgrpo.algo.loss import dpo_loss, dpo_margin_grad, kl_k3, preference_pair, tgrpo_loss, token_weights
from tgrpo.checkpoint import GracefulStop, find_checkpoint, load_trainer_state, save_checkpoint
from tgrpo.config import AlgoConfig, TrainConfig
from tgrpo.data.hdf5 import find_task_demo_file, load_task_demos
from tgrpo.envs.config import EnvConfig
from tgrpo.envs.libero_env import LiberoEnv, TaskInfo, resolve_task
from tgrpo.errors import TgrpoError, choice_error
from tgrpo.evaluation import EvalConfig, FixedTemperature, evaluate
from tgrpo.policy.registry import load_policy
from tgrpo.policy.vla import PolicyInputs
from tgrpo.reward.dense import DenseRewards, Keyposes, StageEvaluator, StageRewardParams, dense_rewards
from tgrpo.reward.keyposes import extract_keyposes
from tgrpo.reward.sources import task_stages
from tgrpo.rollout.backends import make_env_pool
from tgrpo.rollout.engine import rollout_groups
from tgrpo.rollout.types import GroupRollout
from tgrpo.rollout.workers import with_worker_retries
from tgrpo.sft import DemoRows, cache_features, evaluate_rows, load_rows

MAX_BAD_UPDATES = 5  # consecutive non-finite gradients before the run stops


@dataclass
class StepBatch:
    """The valid steps of a group, flattened for the learner. B = number of valid steps.

    Attributes:
        inputs: the policy's inputs of the B observations (vision features cached when the encoder is frozen).
        tokens: (B, 7) int64 sampled action bins.
        old_logp: (B, 7) log pi_old of the tokens (from sampling).
        adv: (B,) advantage of each step.
        weights: (B,) per-token weight ``1 / (N * 7 * len_i)``.
        traj: (B,) int64 group row (trajectory) of each step, or None.
        returns: (N,) return of each trajectory of the group (the one the advantages compare), or None.
    """

    inputs: PolicyInputs
    tokens: torch.Tensor
    old_logp: torch.Tensor
    adv: torch.Tensor
    weights: torch.Tensor
    traj: torch.Tensor | None = None
    returns: torch.Tensor | None = None

    def __len__(self) -> int:
        return len(self.tokens)

    def select(self, index: np.ndarray) -> "StepBatch":
        idx = torch.as_tensor(index)
        return StepBatch(self.inputs.select(idx), self.tokens[idx], self.old_logp[idx], self.adv[idx],
                         self.weights[idx], None if self.traj is None else self.traj[idx], self.returns)


def flatten_group(rollout: GroupRollout, adv: torch.Tensor, policy, instruction: str,
                  returns: torch.Tensor | None = None) -> StepBatch:
    """Gather the valid steps of ``rollout`` with their advantages, token weights and trajectory index, as
    policy inputs; ``returns`` (N,) travel along for objectives that compare whole trajectories."""
    if rollout.action_tokens is None or rollout.logprobs is None:
        raise TgrpoError("the rollout has no action tokens/log-probs; TGRPO needs a token policy")
    mask = rollout.mask
    images = {c: rollout.images[c][mask] for c in policy.config.cameras if c in rollout.images}
    proprio = rollout.states.proprio[:, :-1][mask.numpy()] if policy.config.proprio else None
    inputs = policy.encode(policy.inputs(images, [instruction] * int(mask.sum()), proprio))
    return StepBatch(
        inputs=inputs,
        tokens=rollout.action_tokens[mask],
        old_logp=rollout.logprobs[mask],
        adv=adv[mask].float(),
        weights=token_weights(mask)[mask],
        traj=torch.arange(mask.shape[0])[:, None].expand_as(mask)[mask],
        returns=returns,
    )


def _chunks(index: np.ndarray, size: int):
    for start in range(0, len(index), size):
        yield index[start:start + size]


@torch.no_grad()
def reference_logprobs(policy, batch: StepBatch, microbatch: int) -> torch.Tensor | None:
    """(B, 7) log pi_ref of the sampled tokens: the policy with its LoRA adapter disabled."""
    if not policy.lora_enabled:
        return None
    out = []
    with policy.reference():
        for idx in _chunks(np.arange(len(batch)), microbatch):
            part = batch.select(idx)
            out.append(policy.token_logprobs(part.inputs, part.tokens).float().cpu())
    return torch.cat(out)


@dataclass
class UpdateStats:
    """Means over the update's minibatches (weighted as the loss)."""

    loss: float = 0.0
    policy_objective: float = 0.0
    kl: float = 0.0
    clip_fraction: float = 0.0
    ratio_mean: float = 0.0
    ratio_max: float = 0.0
    entropy: float = 0.0
    grad_norm: float = 0.0
    optimizer_steps: int = 0
    skipped_steps: int = 0
    preference_margin: float = 0.0  # DPO: log-ratio margin of the chosen over the rejected trajectory


def _step_or_skip(optimizer: torch.optim.Optimizer, params, algo, loss: float, stats: UpdateStats) -> float | None:
    """Clip the accumulated gradient and step; a non-finite loss or gradient skips the step with a warning
    and leaves the weights untouched. Returns the gradient norm, or None when skipped."""
    grad_norm = float(torch.nn.utils.clip_grad_norm_(params, algo.grad_clip))
    if not math.isfinite(grad_norm) or not math.isfinite(loss):
        optimizer.zero_grad(set_to_none=True)
        stats.skipped_steps += 1
        print(f"warning: non-finite loss or gradient (loss {loss}, grad norm {grad_norm}); "
              "update skipped, weights unchanged", file=sys.stderr)
        return None
    optimizer.step()
    stats.optimizer_steps += 1
    return grad_norm


def update_policy(policy, optimizer: torch.optim.Optimizer, batch: StepBatch, algo,
                  rng: np.random.Generator) -> UpdateStats:
    """K epochs of minibatch updates of the TGRPO objective on one group's steps.

    Each optimizer step takes ``algo.minibatch_steps`` steps in random order, accumulated over
    micro-batches; its loss is the minibatch's weighted mean (paper weights, renormalised). A step whose
    gradient is not finite is skipped with a warning and leaves the weights untouched.
    """
    policy.train()
    ref = reference_logprobs(policy, batch, algo.microbatch_steps) if algo.beta > 0 else None
    params = [p for p in policy.parameters() if p.requires_grad]
    stats = UpdateStats()
    sums: dict[str, float] = {}
    minibatches = 0
    for _ in range(algo.epochs):
        for mb in _chunks(rng.permutation(len(batch)), algo.minibatch_steps):
            optimizer.zero_grad(set_to_none=True)
            scale = 1.0 / (7.0 * float(batch.weights[mb].sum()))
            mb_sums: dict[str, float] = {}
            for micro in _chunks(mb, algo.microbatch_steps):
                part = batch.select(micro)
                logp, ent = policy.token_logprobs(part.inputs, part.tokens, with_entropy=True)
                out = tgrpo_loss(logp.float(), part.old_logp, None if ref is None else ref[micro], part.adv,
                                 part.weights * scale, clip_eps=algo.clip_eps, beta=algo.beta, entropy=ent.float())
                out.loss.backward()
                share = float(part.weights.sum()) * 7.0 * scale
                for key in ("policy_objective", "kl", "clip_fraction", "ratio_mean", "entropy"):
                    mb_sums[key] = mb_sums.get(key, 0.0) + share * float(getattr(out, key))
                mb_sums["loss"] = mb_sums.get("loss", 0.0) + float(out.loss.detach())
                stats.ratio_max = max(stats.ratio_max, float(out.ratio_max))
            grad_norm = _step_or_skip(optimizer, params, algo, mb_sums["loss"], stats)
            if grad_norm is None:
                continue
            minibatches += 1
            stats.grad_norm += grad_norm
            for key, value in mb_sums.items():
                sums[key] = sums.get(key, 0.0) + value
    for key, value in sums.items():
        setattr(stats, key, value / max(1, minibatches))
    stats.grad_norm /= max(1, minibatches)
    return stats


def update_dpo(policy, optimizer: torch.optim.Optimizer, batch: StepBatch, algo,
               rng: np.random.Generator) -> UpdateStats:
    """K epochs of DPO on the group's best-vs-worst trajectory pair (the trajectory-preference baseline).

    The pair is the group's highest- and lowest-return trajectories from the same initial state (GRAPE's
    trajectory-wise preference, online). Each epoch is one optimizer step: the margin
    ``sum log pi/pi_ref (chosen) - sum log pi/pi_ref (rejected)`` is computed without gradients, then
    ``dpo_margin_grad * (+-log pi)`` is backpropagated micro-batch by micro-batch (exact, bounded memory).
    A group whose returns are all equal has no pair: no step.
    """
    stats = UpdateStats()
    pair = None if batch.returns is None or batch.traj is None else preference_pair(batch.returns)
    if pair is None:
        return stats
    policy.train()
    chosen, rejected = (np.flatnonzero(batch.traj.numpy() == row) for row in pair)
    sub = batch.select(np.concatenate([chosen, rejected]))
    sign = torch.cat([torch.ones(len(chosen)), -torch.ones(len(rejected))])
    ref = reference_logprobs(policy, sub, algo.microbatch_steps)
    if ref is None:
        raise TgrpoError("algo.objective=dpo needs a reference policy: set policy.lora_rank > 0")
    params = [p for p in policy.parameters() if p.requires_grad]
    micro = list(_chunks(np.arange(len(sub)), algo.microbatch_steps))
    steps = 0
    for _ in range(algo.epochs):
        with torch.no_grad():
            logp = torch.cat([policy.token_logprobs(sub.select(i).inputs, sub.tokens[i]).float() for i in micro])
        log_ratio = (logp - ref).sum(1)                                 # (B,) per step, summed over 7 tokens
        margin = (sign * log_ratio).sum()
        loss = float(dpo_loss(margin, algo.dpo_beta))
        coef = dpo_margin_grad(margin, algo.dpo_beta)
        optimizer.zero_grad(set_to_none=True)
        entropy = 0.0
        for idx in micro:
            part = sub.select(idx)
            lp, ent = policy.token_logprobs(part.inputs, part.tokens, with_entropy=True)
            (coef * (sign[idx, None] * lp.float()).sum()).backward()
            entropy += float(ent.detach().float().sum())
        grad_norm = _step_or_skip(optimizer, params, algo, loss, stats)
        if grad_norm is None:
            continue
        steps += 1
        stats.grad_norm += grad_norm
        stats.loss += loss
        stats.preference_margin += float(margin)
        stats.kl += float(kl_k3(logp, ref).mean())
        stats.entropy += entropy / (7 * len(sub))
    for key in ("loss", "preference_margin", "kl", "entropy", "grad_norm"):
        setattr(stats, key, getattr(stats, key) / max(1, steps))
    return stats


UpdateFn = Callable[..., UpdateStats]
OBJECTIVES: dict[str, UpdateFn] = {"clip": update_policy, "dpo": update_dpo}


def get_objective(name: str) -> UpdateFn:
    """The update of ``algo.objective``: ``clip`` (TGRPO's clipped surrogate with KL) or ``dpo``."""
    try:
        return OBJECTIVES[name]
    except KeyError:
        raise choice_error("algo.objective", name, OBJECTIVES) from None


def task_keyposes(cfg: TrainConfig, task: TaskInfo, stages) -> Keyposes:
    """Keyposes from the task's demos (``cfg.demos``: a file, or a directory holding the task's file)."""
    if not cfg.demos:
        print("warning: no demos given (--demos); keyposes use defaults (object origin, 8 cm above target)",
              file=sys.stderr)
        return Keyposes()
    _, demos = load_task_demos(cfg.demos, task, cfg.reward.keypose_demos)
    with LiberoEnv(EnvConfig(suite=task.suite, task=task.task_id, cameras=())) as env:
        return extract_keyposes(demos, env, stages)


def group_advantages(group: GroupRollout, rewards: DenseRewards, algo: AlgoConfig) -> torch.Tensor:
    """(N, T) advantages of a group under ``algo.advantage``, zero on padded steps. Under ``all_done`` a
    success is absorbing (:func:`absorb_success`) before the z-scores."""
    estimator = get_advantage_estimator(algo.advantage)
    absorbed = absorb_success(torch.from_numpy(rewards.rewards), group.mask, group.success)
    return estimator(*absorbed, a1=algo.a1, a2=algo.a2, eps=algo.adv_eps) * group.mask


def demo_probe(cfg: TrainConfig, task: TaskInfo, policy) -> DemoRows | None:
    """All rows of the task's first ``cfg.probe_demos`` demos, encoded once (None without demos or probe)."""
    if not cfg.demos or cfg.probe_demos == 0:
        return None
    path = find_task_demo_file(cfg.demos, task)
    rows, _ = load_rows([path], policy.config.cameras, val_fraction=0.0, seed=cfg.seed, max_demos=cfg.probe_demos)
    return cache_features(policy, rows)


def probe_metrics(policy, probe: DemoRows | None) -> dict[str, float]:
    """``probe/nll``: mean NLL of the expert's action tokens; ``probe/entropy``: mean entropy (nats) of the
    policy's token distributions, both teacher-forced at temperature 1 on the probe rows (SFT's validation
    metrics without the greedy decoding: about 2 s for two demos)."""
    if probe is None:
        return {}
    return {k.replace("val/", "probe/"): v for k, v in evaluate_rows(policy, probe, greedy=False).items()}


def group_returns(rollout: GroupRollout, rewards: DenseRewards) -> torch.Tensor:
    """(N,) return of each trajectory as the advantage estimators compare them (success absorbing)."""
    absorbed, absorbed_mask = absorb_success(torch.from_numpy(rewards.rewards), rollout.mask, rollout.success)
    return (absorbed * absorbed_mask).sum(1)


def group_metrics(rollout: GroupRollout, rewards: DenseRewards, adv: torch.Tensor,
                  returns: torch.Tensor) -> dict[str, float]:
    """Scalars of one group; ``returns`` (N,) from :func:`group_returns`."""
    mask = rollout.mask.numpy()
    returns = returns.numpy()
    success = rollout.success.numpy().astype(bool)
    # Does the dense return rank the successful trajectories first? (only for groups with a success)
    credit = {} if not success.any() else {
        "reward/success_is_best": float((returns[success] >= returns.max() - 1e-9).mean()),
        "adv/success_mean": float(adv[torch.from_numpy(success)][rollout.mask[torch.from_numpy(success)]].mean())}
    return credit | {
        "rollout/success_rate": float(rollout.success.float().mean()),
        "rollout/length": float(rollout.lengths.float().mean()),
        "reward/return_mean": float(returns.mean()),
        "reward/return_std": float(returns.std(ddof=1)) if len(returns) > 1 else 0.0,
        "reward/step_mean": float(rewards.rewards[mask].mean()),
        "reward/f1_mean": float(rewards.f1[mask].mean()),
        "reward/f2_mean": float(rewards.f2[mask].mean()),
        "reward/max_stage": float(rewards.stage.max(1).mean()),
        "adv/mean": float(adv[rollout.mask].mean()),
        "adv/std": float(adv[rollout.mask].std()),
        "adv/abs_mean": float(adv[rollout.mask].abs().mean()),
    }


def group_starts(cfg: TrainConfig, it: int, rng: np.random.Generator) -> tuple[list[int | None], list[int | None]]:
    """Per-env (init states, placement seeds) of iteration ``it``: G groups, each of N envs sharing one start.

    ``train_init=random``: group g of iteration ``it`` gets the placement seed ``seed * 1_000_003 + it * G + g``
    (a new layout every group, never one of LIBERO's fixed states); ``fixed``: a state drawn from
    ``train_init_states`` with ``rng`` per group."""
    n, g_count = cfg.rollout.group_size, cfg.rollout.groups_per_iteration
    if cfg.rollout.train_init == "random":
        starts = [cfg.seed * 1_000_003 + it * g_count + g for g in range(g_count)]
        return [None] * n * g_count, [s for s in starts for _ in range(n)]
    states = [int(rng.choice(cfg.rollout.train_init_states)) for _ in range(g_count)]
    return [s for s in states for _ in range(n)], [None] * n * g_count


def sample_groups(pool, sampler, cfg: TrainConfig, init: list, seeds: list) -> tuple[list[GroupRollout], int]:
    """Roll out the iteration's G groups. A worker that dies or hangs (:class:`WorkerError`) is replaced
    (``pool.rebuild()``) and the groups are sampled again from the same starts, up to
    ``rollout.max_retries`` times in a row; then the run stops with the failure named.
    Returns the groups and the number of failed attempts."""
    return with_worker_retries(
        pool, lambda: rollout_groups(pool, sampler, groups=cfg.rollout.groups_per_iteration, init_state=init,
                                     seeds=seeds, stop_rule=cfg.rollout.stop_rule,
                                     max_steps=cfg.rollout.max_steps, overlap=cfg.rollout.overlap),
        retries=cfg.rollout.max_retries, what="rollout",
        hint=f"The last checkpoint is in {Path(cfg.out) / 'checkpoint'}")


def mean_metrics(per_group: list[dict[str, float]]) -> dict[str, float]:
    """Mean of each metric over the groups that report it."""
    keys = dict.fromkeys(k for m in per_group for k in m)
    return {k: float(np.mean([m[k] for m in per_group if k in m])) for k in keys}


def train(cfg: TrainConfig, resume: bool = True, stop_at: int | None = None) -> dict:
    """Run TGRPO as configured; returns the final summary (also in ``<out>/summary.json``)."""
    from torch.utils.tensorboard import SummaryWriter
    from tqdm import tqdm

    out = Path(cfg.out)
    resolve_task(cfg.suite, cfg.task)  # an unknown task is refused by name before anything starts
    ckpt = find_checkpoint(out / "checkpoint") if resume else None
    if ckpt is not None:
        policy = load_policy(ckpt)
    else:
        if not cfg.policy.checkpoint:
            raise TgrpoError("tgrpo train starts from an SFT checkpoint: pass --checkpoint (see `tgrpo sft`)")
        policy = load_policy(cfg.policy.checkpoint, temperature=cfg.policy.temperature, seed=cfg.seed)
        if cfg.policy.lora_rank > 0:
            policy.enable_lora(cfg.policy.lora_rank, cfg.policy.lora_alpha)
    params = [p for p in policy.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=cfg.algo.lr, weight_decay=cfg.algo.weight_decay)
    start, history, evals, probe_start = 0, [], [], {}
    if ckpt is not None:
        state = load_trainer_state(ckpt, optimizer)
        start, history, evals = int(state["iteration"]), state["history"], state["evals"]
        probe_start = state.get("probe_start", {})
        policy.generator.set_state(torch.tensor(state["generator"], dtype=torch.uint8))
        print(f"resuming {out} at iteration {start}", file=sys.stderr)
    out.mkdir(parents=True, exist_ok=True)
    (out / "train_config.json").write_text(json.dumps(cfg.to_dict(), indent=2, default=str))
    cameras = policy.config.cameras
    env_cfg = EnvConfig(suite=cfg.suite, task=cfg.task, cameras=cameras, image_size=policy.config.image_size)
    writer = SummaryWriter(str(out / "tb"))
    bad_updates = 0
    update = get_objective(cfg.algo.objective)

    num_envs = cfg.rollout.group_size * cfg.rollout.groups_per_iteration
    with GracefulStop() as stop, make_env_pool(cfg.rollout.backend, env_cfg, num_envs, timeout_s=cfg.rollout.worker_timeout_s,
                       address=cfg.rollout.ray_address) as pool:
        task = pool.task
        stages = task_stages(task, cfg.reward)
        kp_file = out / "keyposes.json"
        keyposes = Keyposes.from_dict(json.loads(kp_file.read_text())) if kp_file.exists() else task_keyposes(cfg, task, stages)
        kp_file.write_text(json.dumps(keyposes.to_dict(), indent=2))
        evaluator = StageEvaluator(task, stages, keyposes, StageRewardParams(cfg.reward.sigma, cfg.reward.shaping_weight))
        sampler = FixedTemperature(policy, policy.config.temperature)
        probe = demo_probe(cfg, task, policy)
        if start == 0 and probe is not None:
            probe_start = probe_metrics(policy, probe)  # the starting (SFT) policy
            for k, v in probe_start.items():
                writer.add_scalar(k, v, 0)

        def run_eval(iteration: int) -> None:
            ecfg = EvalConfig(suite=cfg.suite, tasks=(task.task_id,), init_states=cfg.eval_init_states,
                              num_envs=pool.num_envs, max_steps=cfg.rollout.max_steps,
                              temperature=policy.config.eval_temperature, out=str(out / "eval" / f"iter_{iteration:04d}"))
            summary = evaluate(policy, ecfg, pool=pool)
            evals.append({"iteration": iteration, "success_rate": summary["success_rate"],
                          "successes": summary["successes"], "episodes": summary["episodes"]})
            writer.add_scalar("eval/success_rate", summary["success_rate"], iteration)

        def eval_due(done: int) -> bool:
            return done == cfg.iterations or bool(cfg.eval_every and done % cfg.eval_every == 0)

        def save(done: int) -> None:
            with stop.writing():  # SIGINT/SIGTERM wait for the write to finish
                save_checkpoint(out / "checkpoint", policy.save, optimizer, {
                    "iteration": done, "history": history, "evals": evals, "probe_start": probe_start,
                    "generator": policy.generator.get_state().tolist()})

        if cfg.eval_every and start == 0 and not evals:
            run_eval(0)  # the starting (SFT) policy on the held-out states
        if start and eval_due(start) and not any(e["iteration"] == start for e in evals):
            run_eval(start)  # interrupted during this evaluation: it resumes from its episodes.jsonl
            save(start)
        bar = tqdm(range(start, cfg.iterations), initial=start, total=cfg.iterations, desc="tgrpo", unit="iter",
                   file=sys.stderr)
        for it in bar:
            t0 = time.perf_counter()
            rng = np.random.default_rng([cfg.seed, it])
            init, seeds = group_starts(cfg, it, rng)
            torch.set_num_threads(1)  # the env workers are busy on the other cores
            groups, retries = sample_groups(pool, sampler, cfg, init, seeds)                          # 1. groups
            t_rollout = time.perf_counter() - t0
            torch.set_num_threads(cfg.num_threads)
            t_update, per_group = 0.0, []
            for group in groups:  # one group unless rollout.groups_per_iteration > 1
                rewards = dense_rewards(evaluator, group.states, group.mask.numpy(), group.scenes)        # 2. rewards
                adv = group_advantages(group, rewards, cfg.algo)                                          # 3. advantages
                t1 = time.perf_counter()
                returns = group_returns(group, rewards)
                batch = flatten_group(group, adv, policy, task.language, returns)
                stats = update(policy, optimizer, batch, cfg.algo, rng)                                   # 4. update
                t_update += time.perf_counter() - t1
                bad_updates = bad_updates + 1 if stats.skipped_steps and not stats.optimizer_steps else 0
                if bad_updates >= MAX_BAD_UPDATES:
                    raise TgrpoError(f"{bad_updates} updates in a row had only non-finite gradients; stopping. "
                                     f"The last good checkpoint is in {out / 'checkpoint'}")
                per_group.append(group_metrics(group, rewards, adv, returns) |
                                 {f"update/{k}": float(v) for k, v in asdict(stats).items()})
            metrics = mean_metrics(per_group) | probe_metrics(policy, probe)                               # 5. log
            env_steps = sum(int(g.lengths.sum()) for g in groups)
            metrics.update({"time/rollout_s": t_rollout, "time/update_s": t_update,
                            "time/env_steps_per_s": env_steps / t_rollout, "time/learner_steps_per_s":
                            env_steps * cfg.algo.epochs / max(t_update, 1e-9), "faults/rollout_retries": retries,
                            "rollout/groups": len(groups)})
            for k, v in metrics.items():
                writer.add_scalar(k, v, it + 1)
            history.append({"iteration": it + 1, **metrics})
            bar.set_postfix(success=f"{metrics['rollout/success_rate']:.2f}", ret=f"{metrics['reward/return_mean']:.1f}",
                            kl=f"{metrics['update/kl']:.3f}")
            done = it + 1
            if eval_due(done):  # saved first, so an interrupted evaluation resumes with the same weights
                save(done)
                run_eval(done)
            if done % cfg.save_every == 0 or eval_due(done) or done == stop_at:
                save(done)
            if done == stop_at:
                break
    writer.close()
    summary = {"task": task.name, "suite": cfg.suite, "iterations": len(history), "evals": evals,
               "probe_start": probe_start, "probe_end": {k: v for k, v in (history[-1] if history else {}).items()
                                                         if k.startswith("probe/")},
               "final_group_success": history[-1]["rollout/success_rate"] if history else None,
               "rollout_retries": int(sum(h.get("faults/rollout_retries", 0) for h in history))}
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary
