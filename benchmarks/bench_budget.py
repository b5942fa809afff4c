"""Is HAFormer worth it? Every model trained for the same CPU budget, several seeds (issue 11).

Each run trains one model with the package's own engine (``haformer.train.train``) and ONE
recipe, for a fixed budget: ``--budget minutes=M`` (training wall-clock time, validation
excluded) or ``--budget images=N`` (training images seen). The recipe (:data:`RECIPE`):
CamVid ``train`` (367 images) at reduced resolution (images scaled around 192x256, random
scale 0.75-2.0, 192x256 crops: multiples of 32, which every model takes), horizontal flips,
cross entropy with ENet class weights, Adam lr 1e-3 with a one-epoch linear warm-up then poly
decay over the budget, batch 8, from scratch (no pretrained weights), CPU, one thread, no
DataLoader workers. Every epoch the model is scored on ``val`` (101 images, inputs resized to
192x256, logits resized back: scored at the full 360x480 label resolution); ``best.pt`` is the
epoch with the best val mIoU (model selection), and its weights are then scored once on
``test`` (233 images), the number reported.

Each run is its own process (``OMP_NUM_THREADS=1``, ``torch.set_num_threads(1)``); ``--jobs 2``
runs two at a time. A run writes ``<label>-seed<k>.json`` into ``--out`` (history of val mIoU
against training minutes and images, best val mIoU, test mIoU of the val-selected weights,
parameters, steps, images seen, machine): JSON only, its checkpoints live in a temporary folder
that is deleted. Runs whose JSON exists are skipped, so the same command resumes an
interrupted sweep. At the end (or with ``--report`` alone) the runs in ``--out`` are aggregated
into ``summary.json`` (read by book ch. 12 and 13) and a markdown table: per model the mean,
min-max and standard deviation over seeds of val and test mIoU, and each difference against
the reference model (``haformer_b1``; ``full`` for the ablation variants) next to the
seed-to-seed spread, the larger min-max range of the two models. A difference smaller than
that spread is written "tie".

    python benchmarks/bench_budget.py --budget minutes=12 --seeds 0 1 2 --jobs 2
    python benchmarks/bench_budget.py --budget images=2880 --seeds 0 1 2 --jobs 2
    python benchmarks/bench_budget.py --variants --budget minutes=12 --seeds 0 1 2 --jobs 2
    python benchmarks/bench_budget.py --report --out benchmarks/results/budget-minutes-12

Default ``--out``: ``benchmarks/results/budget-<kind>-<value>`` (``ablation-...`` with
``--variants``).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import deque
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

RESULTS = Path(__file__).resolve().parent / "results"
SUMMARY = "summary.json"
MODELS = (
    "haformer_b0",
    "haformer_b1",
    "lraspp_mobilenet_v3_large",
    "deeplabv3_mobilenet_v3_large",
    "fpn_mobilenet_v2",
    "segformer_mit_b0",
    "lraspp_mobilenet_v3_large@bn_momentum=0.1",
    "deeplabv3_mobilenet_v3_large@bn_momentum=0.1",
)
"""The models of the main comparison: HAFormer's two smallest, then the peers (random init).

``NAME@KEY=VALUE`` is ``create_model(NAME, KEY=VALUE)``: the torchvision peers once more with
PyTorch's default BatchNorm momentum instead of their own 0.01 (book ch. 13 shows why)."""
VARIANT_MODEL = "haformer_b0"
VARIANTS: dict[str, dict[str, Any]] = {
    "full": {},
    "no_pem": {"use_pem": False},
    "no_transformer": {"use_transformer": False},
    "seed_fusion": {"fusion": "seed"},
    "add_fusion": {"fusion": "add"},
}
"""The ablation variants of book ch. 12: keyword arguments of ``create_model(VARIANT_MODEL)``."""
RECIPE: dict[str, Any] = {
    "train_split": "train",
    "val_split": "val",
    "test_split": "test",
    "crop": (192, 256),
    "scale": (0.75, 2.0),
    "batch_size": 8,
    "optimizer": "adam",
    "lr": 1e-3,
    "weight_decay": 1e-4,
    "warmup_epochs": 1.0,
    "poly_power": 0.9,
    "loss": "ce",
    "class_weights": "enet",
    "val_every": 1,
    "max_epochs": 1000,
    "pretrained": False,
    "threads": 1,
    "workers": 0,
}
"""The one recipe every run shares (``--crop`` may shrink the crop for smoke runs)."""
HISTORY_KEYS = ("epoch", "step", "images_seen", "train_seconds", "lr", "train_loss", "val_miou")
"""The history columns kept in a run's JSON (the rest of history.csv stays out: small files)."""


class UsageError(Exception):
    """A mistake in the command or its inputs; printed in one line, exit status 2."""


# ----------------------------------------------------------------------------- what to run


@dataclass(frozen=True)
class Budget:
    """``minutes`` of training wall-clock time (validation excluded) or ``images`` seen."""

    kind: str
    value: float

    @classmethod
    def parse(cls, text: str) -> Budget:
        """``"minutes=12"`` or ``"images=2880"``."""
        kind, _, value = text.partition("=")
        try:
            number = float(value)
        except ValueError:
            number = math.nan
        if kind not in ("minutes", "images") or not number > 0 or not math.isfinite(number):
            raise UsageError(
                f"--budget must be minutes=M or images=N with a positive number; got {text!r} "
                "(for example --budget minutes=12)"
            )
        if kind == "images" and number != int(number):
            raise UsageError(f"--budget images=N needs a whole number of images; got {text!r}")
        return cls(kind, number)

    @property
    def slug(self) -> str:
        """``minutes-12``, ``minutes-0.5``, ``images-2880``: a folder-name fragment."""
        return f"{self.kind}-{self.value:g}"

    def train_kwargs(self) -> dict[str, Any]:
        """The TrainConfig fields that set this budget."""
        if self.kind == "minutes":
            return {"max_minutes": self.value}
        return {"max_images": int(self.value)}


EXAMPLE_ENTRY = "lraspp_mobilenet_v3_large@bn_momentum=0.1"


@dataclass(frozen=True)
class Entry:
    """One row of the comparison: ``label`` (file names, tables), registry name, kwargs."""

    label: str
    model: str
    kwargs: dict[str, Any] = field(default_factory=dict)


def model_entries(names: Iterable[str]) -> list[Entry]:
    """One entry per name, labelled by it: a registry name (a haformer model or a peer), or
    ``NAME@KEY=VALUE[@KEY=VALUE...]`` for that model with keyword arguments (JSON values).

    >>> model_entries(["lraspp_mobilenet_v3_large@bn_momentum=0.1"])[0].kwargs
    {'bn_momentum': 0.1}
    """
    entries = []
    for text in names:
        name, *pairs = text.split("@")
        kwargs: dict[str, Any] = {}
        for pair in pairs:
            key, sep, value = pair.partition("=")
            if not (key and sep and value):
                raise UsageError(f"--models {text!r}: write NAME@KEY=VALUE, e.g. {EXAMPLE_ENTRY}")
            try:
                kwargs[key] = json.loads(value)
            except json.JSONDecodeError:
                kwargs[key] = value  # a bare string
        entries.append(Entry(text, name, kwargs))
    return entries


def variant_entries(names: Iterable[str]) -> list[Entry]:
    """The ablation variants of :data:`VARIANT_MODEL`, labelled by variant name."""
    entries = []
    for name in names:
        if name not in VARIANTS:
            raise UsageError(f"unknown variant {name!r}; choose from {', '.join(VARIANTS)}")
        entries.append(Entry(name, VARIANT_MODEL, VARIANTS[name]))
    return entries


def run_spec(
    entry: Entry, seed: int, budget: Budget, crop: tuple[int, int], device: str
) -> dict[str, Any]:
    """Everything that defines one run; stored in its JSON and compared when resuming."""
    recipe = {**RECIPE, "crop": list(crop), "scale": list(RECIPE["scale"]), "device": device}
    return {
        "label": entry.label,
        "model": entry.model,
        "model_kwargs": dict(entry.kwargs),
        "seed": seed,
        "budget": {"kind": budget.kind, "value": budget.value},
        "recipe": recipe,
    }


def run_path(out: Path, label: str, seed: int) -> Path:
    """Where the run ``label``, ``seed`` writes its JSON."""
    return out / f"{label}-seed{seed}.json"


# ----------------------------------------------------------------------------- one run


def train_config(spec: dict[str, Any], data_root: str | None, out: str) -> Any:
    """The ``haformer.train.TrainConfig`` of a run spec (``out``: its checkpoint folder)."""
    from haformer.train import TrainConfig

    r = spec["recipe"]
    if r["pretrained"]:
        raise UsageError("the comparison trains every model from scratch")
    budget = Budget(spec["budget"]["kind"], spec["budget"]["value"])
    crop = tuple(r["crop"])
    cfg = TrainConfig(
        data_root=data_root,
        out=out,
        model=spec["model"],
        model_kwargs=spec["model_kwargs"],
        train_split=r["train_split"],
        val_split=r["val_split"],
        epochs=r["max_epochs"],
        batch_size=r["batch_size"],
        crop=crop,
        scale=tuple(r["scale"]),
        base_size=crop,
        eval_size=crop,
        cache=True,
        optimizer=r["optimizer"],
        lr=r["lr"],
        weight_decay=r["weight_decay"],
        warmup_epochs=r["warmup_epochs"],
        poly_power=r["poly_power"],
        loss=r["loss"],
        class_weights=r["class_weights"],
        val_every=r["val_every"],
        workers=r["workers"],
        device=r["device"],
        seed=spec["seed"],
        progress=False,
        **budget.train_kwargs(),
    )
    if tuple(cfg.crop) != crop:  # the engine would change it: not the same recipe for all
        raise UsageError(f"{spec['model']} cannot train on {crop[0]}x{crop[1]} crops")
    return cfg


def run_one(
    spec: dict[str, Any], data_root: str | None, path: Path, jobs: int = 1
) -> dict[str, Any]:
    """Train one run, score its val-selected weights on test, write its JSON to ``path``.

    ``jobs`` (how many runs shared the machine) is recorded, not used.

    Checkpoints go to a temporary folder, deleted afterwards; ``path`` is written atomically
    (a half-written file never exists), so an interrupted run simply runs again.
    """
    import torch
    from torch.utils.data import DataLoader

    from haformer.data import CLASSES, CamVid, eval_transforms
    from haformer.evaluate import evaluate, load_model
    from haformer.model import input_multiple
    from haformer.profile import count_parameters
    from haformer.train import train

    torch.set_num_threads(spec["recipe"]["threads"])
    torch.set_num_interop_threads(spec["recipe"]["threads"])
    load_before = os.getloadavg()
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench-budget-") as tmp:
        cfg = train_config(spec, data_root, tmp)
        result = train(cfg)
        if result["best"] is None:
            raise RuntimeError(f"{spec['label']} seed {spec['seed']}: no validation, no best.pt")
        model, _ = load_model(result["best"], cfg.device)
        test_set = CamVid(data_root, spec["recipe"]["test_split"], eval_transforms(), cache=True)
        test = evaluate(
            model,
            DataLoader(test_set, batch_size=cfg.batch_size),
            cfg.device,
            cfg.num_classes,
            multiple=input_multiple(model),
            size=cfg.eval_size,
        )
    history = [{k: row[k] for k in HISTORY_KEYS if k in row} for row in result["history"]]
    last = result["history"][-1]
    record = {
        **spec,
        "params": count_parameters(model),
        "steps": last["step"],
        "images_seen": last["images_seen"],
        "train_seconds": last["train_seconds"],
        "epochs": last["epoch"],
        "best_val_miou": result["best_miou"],
        "best_epoch": result["best_epoch"],
        "test_miou": test["miou"],
        "test_iou": dict(zip(CLASSES, _finite(test["iou"]), strict=True)),
        "test_images": len(test_set),
        "history": history,
        "machine": machine_info(),
        "jobs": jobs,
        "load_average": {"start": load_before[0], "end": os.getloadavg()[0]},
        "wall_seconds": time.perf_counter() - started,
        "finished": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    write_json(path, record)
    return record


def machine_info() -> dict[str, Any]:
    """What the numbers were measured on (no path, no host name)."""
    import torch

    return {
        "machine": platform.machine(),
        "processor": _cpu_model() or platform.processor() or None,
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
    }


def _cpu_model() -> str | None:
    """The CPU's model name from /proc/cpuinfo (Linux), else None."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def write_json(path: Path, data: Any) -> None:
    """Write ``data`` as JSON to ``path`` atomically (temporary file + rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=1) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def _finite(values: Sequence[float]) -> list[float | None]:
    """NaN (a class absent from the split) -> None, for strict JSON."""
    return [None if v is None or math.isnan(v) else v for v in values]


# ----------------------------------------------------------------------------- the sweep


def pending_runs(
    entries: Sequence[Entry],
    seeds: Sequence[int],
    budget: Budget,
    crop: tuple[int, int],
    device: str,
    out: Path,
) -> tuple[list[tuple[dict[str, Any], Path]], list[Path]]:
    """(runs to do, runs already done) in entry-major order.

    A done run must have been made with the same spec; otherwise this raises UsageError
    rather than mixing two protocols in one folder.
    """
    todo, done = [], []
    for entry in entries:
        for seed in seeds:
            spec = run_spec(entry, seed, budget, crop, device)
            path = run_path(out, entry.label, seed)
            if not path.is_file():
                todo.append((spec, path))
                continue
            saved = json.loads(path.read_text(encoding="utf-8"))
            differ = [k for k in spec if saved.get(k) != spec[k]]
            if differ:
                raise UsageError(
                    f"{path} was made with other settings ({', '.join(differ)} differ): "
                    "use another --out, or delete that file to redo the run"
                )
            done.append(path)
    return todo, done


def check_inputs(entries: Sequence[Entry], spec: dict[str, Any], data_root: str | None) -> None:
    """Fail early, in one line, on a model that cannot be built or data that cannot be read."""
    from haformer.data import CamVid, DatasetError
    from haformer.errors import UsageError as HaformerUsageError
    from haformer.model import create_model

    for entry in entries:
        one = {**spec, "model": entry.model, "model_kwargs": dict(entry.kwargs)}
        try:
            train_config(one, data_root, "unused")  # names, crop multiples
            create_model(entry.model, **entry.kwargs)  # missing optional packages, kwargs
        except (HaformerUsageError, ValueError) as error:
            raise UsageError(f"{entry.label}: {error}") from error
    for split in ("train_split", "val_split", "test_split"):
        try:
            CamVid(data_root, spec["recipe"][split])
        except DatasetError as error:
            raise UsageError(str(error)) from error


def sweep(
    todo: Sequence[tuple[dict[str, Any], Path]],
    data_root: str | None,
    jobs: int,
    quiet: bool = False,
) -> list[str]:
    """Run every pending run, ``jobs`` single-thread processes at a time; failures as text."""
    failures: list[str] = []
    lock = threading.Lock()
    running: set[subprocess.Popen] = set()

    def launch(item: tuple[dict[str, Any], Path]) -> None:
        spec, path = item
        name = f"{spec['label']} seed {spec['seed']}"
        cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", json.dumps(spec)]
        cmd += ["--worker-path", str(path), "--jobs", str(jobs)]
        if data_root is not None:
            cmd += ["--data-root", data_root]
        env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
        tail: deque[str] = deque(maxlen=20)
        with subprocess.Popen(
            cmd,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,  # Ctrl-C reaches the sweep only; it stops the runs itself
        ) as proc:
            with lock:
                running.add(proc)
                print(f"[{name}] started -> {path.name}", flush=True)
            for line in proc.stdout or ():
                tail.append(line.rstrip())
                if not quiet:
                    print(f"[{name}] {line.rstrip()}", flush=True)
            code = proc.wait()
            with lock:
                running.discard(proc)
        with lock:
            if code == 0:
                print(f"[{name}] done", flush=True)
            else:
                failures.append(f"{name}: exit status {code}; last lines:\n  " + "\n  ".join(tail))

    pool = ThreadPoolExecutor(max_workers=jobs)
    try:
        for future in [pool.submit(launch, item) for item in todo]:
            future.result()
    except KeyboardInterrupt:
        pool.shutdown(wait=False, cancel_futures=True)
        with lock:
            for proc in running:
                proc.send_signal(signal.SIGTERM)
        raise
    pool.shutdown()
    return failures


# ----------------------------------------------------------------------------- the report


def load_runs(folder: Path) -> list[dict[str, Any]]:
    """Every run JSON (``*-seed<k>.json``) in ``folder``, sorted by label and seed."""
    runs = []
    for path in sorted(folder.glob("*-seed*.json")):
        try:
            runs.append(json.loads(path.read_text(encoding="utf-8")))
        except json.JSONDecodeError as error:
            raise UsageError(f"{path} is not valid JSON ({error}): delete it to redo it") from error
    return sorted(runs, key=lambda r: (r["label"], r["seed"]))


def describe(values: Sequence[float]) -> dict[str, Any]:
    """n, mean, sample standard deviation (None for one value), min, max, range of ``values``."""
    if not values:
        raise ValueError("describe() needs at least one value")
    return {
        "n": len(values),
        "mean": statistics.fmean(values),
        "std": statistics.stdev(values) if len(values) > 1 else None,
        "min": min(values),
        "max": max(values),
        "range": max(values) - min(values),
        "values": list(values),
    }


def compare(a: dict[str, Any], ref: dict[str, Any]) -> dict[str, Any]:
    """``a`` against ``ref`` (two :func:`describe` dicts): difference of means and its verdict.

    The spread is the larger seed-to-seed range (max - min) of the two. A difference whose size
    is smaller than the spread is a ``"tie"``; a larger one is ``"ahead"`` or ``"behind"``.
    With a single seed on either side there is no spread to compare with: ``"n/a"``.
    """
    diff = a["mean"] - ref["mean"]
    if min(a["n"], ref["n"]) < 2:
        return {"diff": diff, "spread": None, "verdict": "n/a"}
    spread = max(a["range"], ref["range"])
    verdict = "tie" if abs(diff) < spread else ("ahead" if diff > 0 else "behind")
    return {"diff": diff, "spread": spread, "verdict": verdict}


def curve(runs: Sequence[dict[str, Any]], x: str, points: int = 40) -> dict[str, Any]:
    """Val mIoU against ``x`` (``"minutes"`` or ``"images"``): mean, min and max over the runs.

    Each run's validation points are interpolated linearly onto a common grid from the latest
    first point to the earliest last point of the runs (where every run has data).
    """
    key = {"minutes": "train_seconds", "images": "images_seen"}[x]
    scale = 60.0 if x == "minutes" else 1.0
    series = []
    for run in runs:
        rows = [r for r in run["history"] if r.get("val_miou") is not None]
        series.append(
            (np.array([r[key] / scale for r in rows]), np.array([r["val_miou"] for r in rows]))
        )
    lo = max(xs[0] for xs, _ in series)
    hi = min(xs[-1] for xs, _ in series)
    grid = np.linspace(lo, hi, points) if hi > lo else np.array([hi])
    ys = np.stack([np.interp(grid, xs, vs) for xs, vs in series])
    return {
        "x": grid.tolist(),
        "mean": ys.mean(axis=0).tolist(),
        "min": ys.min(axis=0).tolist(),
        "max": ys.max(axis=0).tolist(),
        "seeds": [
            {"seed": run["seed"], "x": xs.tolist(), "val_miou": vs.tolist()}
            for run, (xs, vs) in zip(runs, series, strict=True)
        ],
    }


def _order(label: str) -> tuple[int, str]:
    known = [*MODELS, *VARIANTS]
    return (known.index(label) if label in known else len(known), label)


def summarize(runs: Sequence[dict[str, Any]], reference: str | None = None) -> dict[str, Any]:
    """Aggregate run records into the summary the book reads (one entry per label)."""
    if not runs:
        raise UsageError("no run results to report (no *-seed<k>.json files in --out)")
    protocols = {json.dumps([r["budget"], r["recipe"]], sort_keys=True) for r in runs}
    if len(protocols) > 1:
        raise UsageError("the runs in this folder differ in budget or recipe: one folder each")
    labels = sorted({r["label"] for r in runs}, key=_order)
    if reference is None:
        reference = next((x for x in ("haformer_b1", "full") if x in labels), labels[0])
    if reference not in labels:
        raise UsageError(f"reference {reference!r} has no runs here; have: {', '.join(labels)}")
    models: dict[str, dict[str, Any]] = {}
    for label in labels:
        mine = [r for r in runs if r["label"] == label]
        models[label] = {
            "model": mine[0]["model"],
            "model_kwargs": mine[0]["model_kwargs"],
            "seeds": [r["seed"] for r in mine],
            "params": mine[0]["params"],
            "steps": describe([r["steps"] for r in mine]),
            "images_seen": describe([r["images_seen"] for r in mine]),
            "train_minutes": describe([r["train_seconds"] / 60 for r in mine]),
            "val_miou": describe([r["best_val_miou"] for r in mine]),
            "test_miou": describe([r["test_miou"] for r in mine]),
            "curve_minutes": curve(mine, "minutes"),
            "curve_images": curve(mine, "images"),
        }
    for item in models.values():
        ref = models[reference]
        item["vs_reference"] = {
            metric: compare(item[metric], ref[metric]) for metric in ("val_miou", "test_miou")
        }
    first = runs[0]
    summary = {
        "budget": first["budget"],
        "recipe": first["recipe"],
        "reference": reference,
        "labels": labels,
        "models": models,
        "machine": first["machine"],
        "jobs": sorted({r.get("jobs", 1) for r in runs}),
        "load_average": describe([r["load_average"]["start"] for r in runs]),
        "runs": len(runs),
        "finished": max(r["finished"] for r in runs),
    }
    summary["table"] = markdown_table(summary)
    return summary


def _pct(stats: dict[str, Any]) -> str:
    text = f"{100 * stats['mean']:.2f} ({100 * stats['min']:.2f}-{100 * stats['max']:.2f})"
    return text + ("" if stats["std"] is None else f", sd {100 * stats['std']:.2f}")


def _versus(cmp: dict[str, Any]) -> str:
    if cmp["spread"] is None:
        return f"{100 * cmp['diff']:+.2f} (one seed: no spread)"
    return f"{100 * cmp['diff']:+.2f} (spread {100 * cmp['spread']:.2f}): {cmp['verdict']}"


def markdown_table(summary: dict[str, Any]) -> str:
    """The summary as a markdown table (mIoU in %, differences in points)."""
    ref = summary["reference"]
    lines = [
        f"| model | params (M) | seeds | steps | images seen | val mIoU % mean (min-max), sd "
        f"| test mIoU % mean (min-max), sd | val vs {ref} | test vs {ref} |",
        "|---|---:|---:|---:|---:|---|---|---|---|",
    ]
    for label in summary["labels"]:
        m = summary["models"][label]
        versus = ("reference", "reference")
        if label != ref:
            versus = tuple(_versus(m["vs_reference"][k]) for k in ("val_miou", "test_miou"))
        lines.append(
            f"| {label} | {m['params'] / 1e6:.2f} | {len(m['seeds'])} "
            f"| {m['steps']['mean']:.0f} | {m['images_seen']['mean']:.0f} "
            f"| {_pct(m['val_miou'])} | {_pct(m['test_miou'])} | {versus[0]} | {versus[1]} |"
        )
    return "\n".join(lines)


def report(folder: Path, reference: str | None = None) -> dict[str, Any]:
    """Aggregate the runs of ``folder``, write ``folder/summary.json``, return the summary."""
    summary = summarize(load_runs(folder), reference)
    write_json(folder / SUMMARY, summary)
    return summary


def caption(summary: dict[str, Any]) -> str:
    """One line under the table: budget, recipe, machine, how ties are called."""
    b, r, m = summary["budget"], summary["recipe"], summary["machine"]
    amount = {"minutes": "minutes of training", "images": "training images"}[b["kind"]]
    return (
        f"{b['value']:g} {amount} per run; CamVid {r['train_split']}, "
        f"{'x'.join(map(str, r['crop']))} crops, batch {r['batch_size']}, {r['optimizer']} "
        f"lr {r['lr']:g}, from scratch; {r['device']}, {r['threads']} thread per run "
        f"({m.get('processor') or m['machine']}, {m['cpus']} CPUs, torch {m['torch']}). "
        "val: best epoch (model selection); test: that epoch's weights. Spread: the larger "
        "min-max range over seeds of the two models compared; a difference smaller than the "
        "spread is a tie."
    )


# ----------------------------------------------------------------------------- command line


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        epilog="\n".join(line for line in __doc__.splitlines() if "bench_budget.py" in line),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--budget", help="minutes=M (training wall-clock) or images=N (seen)")
    which = parser.add_mutually_exclusive_group()
    which.add_argument(
        "--models",
        nargs="+",
        default=None,
        help=f"registry names, or NAME@KEY=VALUE for model kwargs (default: {' '.join(MODELS)})",
    )
    which.add_argument(
        "--variants",
        nargs="*",
        default=None,
        metavar="VARIANT",
        help=f"ablation variants of {VARIANT_MODEL} instead (none given: {' '.join(VARIANTS)})",
    )
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--jobs", type=int, default=1, help="runs at a time (one thread each)")
    parser.add_argument(
        "--out",
        default=None,
        help="results folder (default: benchmarks/results/budget-<kind>-<value>, or "
        "ablation-<kind>-<value> with --variants)",
    )
    parser.add_argument(
        "--data-root", default=None, help="CamVid root (default: $CAMVID_ROOT or ./data/camvid)"
    )
    parser.add_argument(
        "--crop", default=None, help="HxW crop, multiples of 32 (default 192x256; smaller: smoke)"
    )
    parser.add_argument("--device", default="cpu", help="where runs train (default cpu)")
    parser.add_argument("--report", action="store_true", help="only aggregate --out's runs")
    parser.add_argument("--reference", default=None, help="model the others are compared with")
    parser.add_argument("--quiet", action="store_true", help="no per-epoch lines of the runs")
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--worker-path", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.jobs < 1:
        parser.error(f"--jobs must be at least 1; got {args.jobs}")
    if args.worker is None and args.budget is None and not (args.report and args.out):
        parser.error("give --budget minutes=M or images=N (or --report --out FOLDER)")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.worker is not None:  # one run, in its own process (started by sweep())
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # clean up the temp folder
        run_one(json.loads(args.worker), args.data_root, Path(args.worker_path), args.jobs)
        return 0
    try:
        return _main(args)
    except UsageError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2


def _main(args: argparse.Namespace) -> int:
    from haformer.utils import parse_size

    budget = Budget.parse(args.budget) if args.budget else None
    variants = args.variants is not None
    if args.out:
        out = Path(args.out)
    else:
        assert budget is not None  # parse_args() demands one without --out
        out = RESULTS / f"{'ablation' if variants else 'budget'}-{budget.slug}"
    if not args.report:
        try:
            crop = parse_size(args.crop) if args.crop else tuple(RECIPE["crop"])
        except ValueError as error:
            raise UsageError(f"--crop: {error}") from error
        if crop[0] % 32 or crop[1] % 32:  # what every model of the comparison takes
            raise UsageError(f"--crop sides must be multiples of 32; got {crop[0]}x{crop[1]}")
        entries = (
            variant_entries(args.variants or list(VARIANTS))
            if variants
            else model_entries(args.models or MODELS)
        )
        todo, done = pending_runs(entries, args.seeds, budget, crop, args.device, out)
        print(f"{len(done)} run(s) already in {out}, {len(todo)} to do, {args.jobs} at a time")
        if todo:
            check_inputs(entries, todo[0][0], args.data_root)
        try:
            failures = sweep(todo, args.data_root, args.jobs, args.quiet)
        except KeyboardInterrupt:
            print(
                f"interrupted: finished runs are kept in {out}; run the same command to go on",
                file=sys.stderr,
            )
            return 130
        if failures:
            print("\n".join(f"failed: {f}" for f in failures), file=sys.stderr)
            return 1
    summary = report(out, args.reference)
    print(summary["table"])
    print()
    print(caption(summary))
    print(f"summary: {out / SUMMARY}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
