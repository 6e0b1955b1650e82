"""Aggregation of the finished cells: the paper's suite table, seed spread, paired tests, sweeps and plots."""

from __future__ import annotations

import functools
import json
from pathlib import Path

import numpy as np

from tgrpo.envs.suites import SUITES
from tgrpo.evaluation import mcnemar_exact_p
from tgrpo.experiment.config import SFT, ExperimentConfig, format_ranges, slug
from tgrpo.experiment.ledger import collect_results
from tgrpo.plotting import pyplot


def _mean_std(values: list[float]) -> tuple[float, float]:
    """Mean and sample std (0 for a single value)."""
    return float(np.mean(values)), (float(np.std(values, ddof=1)) if len(values) > 1 else 0.0)


def _fmt(values: list[float]) -> str:
    if not values:
        return "-"
    mean, std = _mean_std(values)
    return f"{100 * mean:.1f}" + (f" ± {100 * std:.1f}" if len(values) > 1 else "")


def paper_table(rows: dict[str, dict[str, list[float]]]) -> str:
    """Markdown table laid out like the paper's (Spatial / Object / Goal / Long / Average).

    ``rows``: label -> suite -> per-seed success rates in [0, 1]. A cell shows the mean over seeds in %,
    with the sample std over seeds when there are several; a suite without results shows "-". Average: the
    mean over the suites, seed by seed, for a row with results on every suite any row has (an average over
    fewer suites would not compare with the others; "-" otherwise)."""
    suites = {s for per_suite in rows.values() for s, v in per_suite.items() if v}
    lines = ["| method | " + " | ".join(s.paper_name for s in SUITES.values()) + " | Average |",
             "|---|" + "---|" * (len(SUITES) + 1)]
    for label, per_suite in rows.items():
        cells = [_fmt(per_suite.get(s, [])) for s in SUITES]
        present = [per_suite[s] for s in SUITES if per_suite.get(s)]
        n = min((len(v) for v in present), default=0) if len(present) == len(suites) else 0
        avg = [float(np.mean([v[i] for v in present])) for i in range(n)]
        lines.append(f"| {label} | " + " | ".join(cells) + f" | {_fmt(avg)} |")
    return "\n".join(lines) + "\n"


def _paired(r: dict, base: dict) -> dict:
    """Outcome pairs of a cell ``r`` and its SFT start ``base`` on the init states both evaluated: counts of
    both successful, only the SFT start, only the cell, and the exact McNemar p-value of the discordant pairs."""
    keys = [k for k in r["outcomes"] if k in base["outcomes"]]
    c = {"pairs": len(keys),
         "both": sum(bool(r["outcomes"][k] and base["outcomes"][k]) for k in keys),
         "only_sft": sum(bool(base["outcomes"][k] and not r["outcomes"][k]) for k in keys),
         "only_method": sum(bool(r["outcomes"][k] and not base["outcomes"][k]) for k in keys)}
    return c | {"p_value": mcnemar_exact_p(c["only_sft"], c["only_method"])}


def report(cfg: ExperimentConfig) -> dict:
    """Aggregate the finished cells into ``results.json``, ``results.md`` and plots; returns the summary."""
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    records = collect_results(cfg)
    by_key = {(r["method"], r["suite"], r["task"], r["seed"]): r for r in records}
    methods = [SFT] + [m.name for m in cfg.methods]
    total = len(cfg.runs())

    # suite level, seed by seed (mean over the suite's tasks; only seeds with all of them done)
    suite_rows: dict[str, dict[str, list[float]]] = {}
    for m in methods:
        covered = cfg.method_tasks(m)
        for suite in dict.fromkeys(s for s, _ in covered):
            suite_rows.setdefault(m, {})[suite] = _seed_rates(cfg, records, m, [(s, t) for s, t in covered if s == suite])

    # paired against SFT of the same seed on the same states: per cell, and pooled over tasks and seeds
    cell_pairs = {k: _paired(r, by_key[(SFT, *k[1:])]) for k, r in by_key.items()
                  if k[0] != SFT and (SFT, *k[1:]) in by_key}
    paired = {}
    for m in methods[1:]:
        counts = [c for k, c in cell_pairs.items() if k[0] == m]
        pooled = {f: sum(c[f] for c in counts) for f in ("pairs", "both", "only_sft", "only_method")}
        paired[m] = pooled | {"p_value": mcnemar_exact_p(pooled["only_sft"], pooled["only_method"])}

    lines = [f"# Experiment {out}", "",
             f"{len(records)}/{total} runs finished. Seeds {list(cfg.seeds)}; evaluation: greedy, LIBERO protocol, "
             f"fixed init states {format_ranges(cfg.eval_init_states)} of each task. Success in %, mean ± sample std over "
             "seeds.", "", "## By suite (laid out like the paper's table)", "", paper_table(suite_rows),
             "## By task", ""]
    head = [f"{s} {t}" for s, t in cfg.tasks]
    lines += ["| method | " + " | ".join(head) + " |", "|---|" + "---|" * len(head)]
    for m in methods:
        cells = []
        for s, t in cfg.tasks:
            done = [by_key[(m, s, t, seed)] for seed in cfg.seeds if (m, s, t, seed) in by_key]
            cells.append(_fmt([r["successes"] / r["episodes"] for r in done]) +
                         (" (" + ", ".join(f"{r['successes']}/{r['episodes']}" for r in done) + ")" if done else ""))
        lines.append(f"| {m} | " + " | ".join(cells) + " |")
    sweeps = sweep_points(cfg, records)
    for group, sw in sweeps.items():
        lines += ["", f"## Sweep of {sw['key']} on {_task_names(sw['tasks'])} (methods {group})", "",
                  f"| {sw['key']} | method | success |", "|---|---|---|"]
        lines += [f"| {x} | {label} | {_fmt(rates)} |" for label, x, rates in sw["points"]]
        lines.append(f"| | SFT start | {_fmt(sw['sft'])} |")
    lines += ["", "## Paired with the SFT start of the same seed (same init states; exact McNemar test)", "",
              "| method | both | only SFT | only this | p |", "|---|---|---|---|---|"]
    for m, p in paired.items():
        if not p["pairs"]:  # nothing paired yet: no test to show
            lines.append(f"| {m} | - | - | - | - |")
            continue
        lines.append(f"| {m} | {p['both']} | {p['only_sft']} | {p['only_method']} | {p['p_value']:.3f} |")
    lines += ["", "Cell by cell (`groups`: training iterations whose group had a success):", "",
              "| method | task | seed | this | SFT | both | only SFT | only this | p | groups | minutes |",
              "|---|---|---|---|---|---|---|---|---|---|---|"]
    for (m, s, t, seed), c in sorted(cell_pairs.items(), key=lambda kc: (methods.index(kc[0][0]), kc[0][1:])):
        r, base = by_key[(m, s, t, seed)], by_key[(SFT, s, t, seed)]
        groups = r.get("group_success")
        groups = f"{round(groups * len(r['return_curve']))}/{len(r['return_curve'])}" if groups is not None else "-"
        minutes = f"{r['seconds'] / 60:.0f}" if r.get("seconds") else "-"
        lines.append(f"| {m} | {s} {t} | {seed} | {r['successes']}/{r['episodes']} | "
                     f"{base['successes']}/{base['episodes']} | {c['both']} | {c['only_sft']} | {c['only_method']} | "
                     f"{c['p_value']:.2f} | {groups} | {minutes} |")
    lines += ["", "## Wall time", "", "| method | runs | minutes per run |", "|---|---|---|"]
    for m in methods:
        secs = [r["seconds"] for r in records if r["method"] == m and r["seconds"]]
        if secs:
            lines.append(f"| {m} | {len(secs)} | {np.mean(secs) / 60:.1f} |")
    if cfg.adopted:
        lines += ["", "## Adopted runs (made outside the grid, checked against their cells' settings)", "",
                  "| cell | run | execution differences |", "|---|---|---|"]
        for a in cfg.adopted:
            lines.append(f"| {a.method}, {a.suite} task {a.task}, seed {a.seed} | {a.path} | "
                         f"{'; '.join(a.notes) or 'none'} |")
    plots = _plots(cfg, records, sweeps, out)
    lines += [""] + [f"![{p.stem}]({p.name})" for p in plots]
    (out / "results.md").write_text("\n".join(lines) + "\n")
    summary = {"finished": len(records), "total": total, "runs": records, "by_suite": suite_rows, "paired": paired,
               "sweeps": sweeps}
    (out / "results.json").write_text(json.dumps(summary, indent=2))
    return summary


def _task_names(tasks) -> str:
    return ", ".join(f"{s} {t}" for s, t in tasks)


def _seed_rates(cfg: ExperimentConfig, records: list[dict], method: str, tasks) -> list[float]:
    """Per seed, the mean success over ``tasks`` of ``method``; only seeds with every one of them done."""
    rate = {(r["suite"], r["task"], r["seed"]): r["successes"] / r["episodes"] for r in records if r["method"] == method}
    return [float(np.mean([rate[(s, t, seed)] for s, t in tasks])) for seed in cfg.seeds
            if all((s, t, seed) in rate for s, t in tasks)]


def sweep_points(cfg: ExperimentConfig, records: list[dict]) -> dict[str, dict]:
    """Each sweep of the grid as data for its table and plot, keyed by the declared name template.

    Per sweep: ``key`` (the first swept key, the x axis), ``tasks`` (the sweep's tasks), ``members`` (its
    methods' names), ``points``: ``(label, value, per-seed success rates)`` sorted by value, and ``sft``: the
    SFT start's per-seed rates on the same tasks (the baseline line). A method without overrides that runs on
    the sweep's tasks is a point too, at its default value, labelled with every swept key's default: it is
    the sweep's missing point when the defaults lie on it (TGRPO's a1 = 0.3, a2 = 0.7 in the paper's a1 sweep,
    where a1 + a2 = 1)."""
    sweeps = {}
    for group in dict.fromkeys(m.sweep_group for m in cfg.methods if m.sweep_group):
        members = [m for m in cfg.methods if m.sweep_group == group]
        key, tasks = members[0].sweep, cfg.method_tasks(members[0].name)
        keys = [key] + [k for k in members[0].overrides
                        if k != key and len({repr(m.overrides.get(k)) for m in members}) > 1]
        points = [(m.name, m.overrides[key], _seed_rates(cfg, records, m.name, tasks)) for m in members]
        for m in cfg.methods:
            if not m.overrides and set(tasks) <= set(cfg.method_tasks(m.name)):
                tc = cfg.train_config(m, *tasks[0], cfg.seeds[0])
                value = {k: functools.reduce(getattr, k.split("."), tc) for k in keys}
                label = f"{m.name} (" + ", ".join(f"{k}={v}" for k, v in value.items()) + ")"
                points.append((label, value[key], _seed_rates(cfg, records, m.name, tasks)))
        sweeps[group] = {"key": key, "tasks": tasks, "members": [m.name for m in members],
                         "points": sorted(points, key=lambda p: p[1]), "sft": _seed_rates(cfg, records, SFT, tasks)}
    return sweeps


def learning_curve_figure(cfg: ExperimentConfig, records: list[dict]):
    """One panel per task of the grid: each method's group return per iteration (mean over its finished seeds,
    running mean of 4), in the method's colour on every panel, with one legend for the figure; a task without
    a finished training run says so. None when no record has a return curve (only SFT cells)."""
    plt = pyplot()
    curves = [r for r in records if r.get("return_curve")]
    if not curves:
        return None
    colours = {m.name: f"C{i % 10}" for i, m in enumerate(cfg.methods)}
    fig, axes = plt.subplots(1, len(cfg.tasks), figsize=(5 * len(cfg.tasks) + 2, 3.6), squeeze=False,
                             layout="constrained")
    for ax, (s, t) in zip(axes[0], cfg.tasks):
        for m in cfg.methods:
            runs = [r["return_curve"] for r in curves if (r["method"], r["suite"], r["task"]) == (m.name, s, t)]
            if runs:
                n = min(map(len, runs))
                y = np.convolve(np.mean([c[:n] for c in runs], 0), np.ones(4) / 4, mode="valid")
                ax.plot(np.arange(len(y)) + 4, y, color=colours[m.name], label=m.name)
        if not ax.lines:
            ax.text(0.5, 0.5, "no finished training run", ha="center", va="center", transform=ax.transAxes)
        ax.set_title(f"{s} task {t}")
        ax.set_xlabel("iteration")
        ax.set_ylabel("group return (running mean of 4)")
    handles = {line.get_label(): line for ax in axes[0] for line in ax.lines}
    fig.legend(list(handles.values()), list(handles), loc="outside right upper", fontsize=7)
    return fig


def sweep_figure(sw: dict):
    """One sweep (an entry of ``sweep_points``) on the full 0-100% scale: each finished seed's success as a dot,
    their mean with the sample std as an error bar, the defaults' point named, and the SFT start's mean over
    seeds as a dashed line in a band of its std. None when no point has a finished seed."""
    plt = pyplot()
    points = [(label, x, rates) for label, x, rates in sw["points"] if rates]
    if not points:
        return None
    fig, ax = plt.subplots(figsize=(5.5, 3.6), layout="constrained")
    xs = [x for _, x, _ in points]
    stats = [_mean_std(rates) for _, _, rates in points]
    ax.errorbar(xs, [100 * m for m, _ in stats], yerr=[100 * s for _, s in stats], marker="o", capsize=3,
                label="mean ± std over seeds")
    ax.scatter([x for _, x, rates in points for _ in rates], [100 * r for _, _, rates in points for r in rates],
               s=12, color="C0", alpha=0.5, label="one seed")
    for (label, x, _), (mean, _) in zip(points, stats):
        if label not in sw["members"]:  # the defaults' point (TGRPO's a1=0.3), named
            ax.annotate(label, (x, 100 * mean), fontsize=7, xytext=(4, -12), textcoords="offset points")
    if sw["sft"]:
        mean, std = _mean_std(sw["sft"])
        ax.axhline(100 * mean, color="gray", linestyle="--", label=f"SFT start ({len(sw['sft'])} seeds)")
        ax.axhspan(100 * (mean - std), 100 * (mean + std), color="gray", alpha=0.15)
    ax.set_ylim(0, 100)
    ax.set_xlabel(sw["key"])
    ax.set_ylabel("held-out success (%)")
    ax.set_title(f"sweep of {sw['key']} ({_task_names(sw['tasks'])})")
    ax.legend(fontsize=7, loc="lower right")
    return fig


def _plots(cfg: ExperimentConfig, records: list[dict], sweeps: dict[str, dict], out: Path) -> list[Path]:
    """Learning curves per task (``learning_curve_figure``) and one plot per sweep (``sweep_figure``)."""
    plt = pyplot()
    paths = []
    fig = learning_curve_figure(cfg, records)
    if fig is not None:
        paths.append(out / "learning_curves.png")
        fig.savefig(paths[-1], dpi=100, bbox_inches="tight")
        plt.close(fig)
    for sw in sweeps.values():
        fig = sweep_figure(sw)
        if fig is not None:
            paths.append(out / f"sweep_{slug(sw['key'])}.png")
            fig.savefig(paths[-1], dpi=100)
            plt.close(fig)
    return paths
