"""Draw the book's diagrams from the package itself, as SVG files beside this script.

    python book/figures/draw_figures.py            # rewrite book/figures/*.svg
    python book/figures/draw_figures.py --out DIR  # write them elsewhere (the tests do)

Nothing in a diagram is typed by hand that the code can tell: the shapes of the whole model
come from a forward pass of ``haformer_b1`` at 360 x 480 with hooks, the widths and denotes
from ``haformer.model.SEED_CHANNELS`` / ``SEED_DENOTES``, the layers of each block from the
modules' own attributes (kernel sizes, groups, BatchNorm, activation). The SVGs keep their text
as text (searchable, and checked by tests/test_book_figures.py) and are byte-for-byte
reproducible with the same matplotlib.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # every model here is built without weights

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch, Rectangle  # noqa: E402
from torch import nn  # noqa: E402

from haformer import fusion, hape  # noqa: E402
from haformer.model import SEED_CHANNELS, SEED_DENOTES, create_model  # noqa: E402
from haformer.opcount import count_ops  # noqa: E402

HERE = Path(__file__).resolve().parent
CAMVID = (360, 480)  # the size the shapes are drawn for

# Light-mode palette: dark text on pale fills, one colour per part of the network.
INK = "#1f2328"
COLOURS = {
    "cnn": "#dbe9f6",
    "vit": "#fde3c8",
    "fusion": "#d5efcf",
    "decoder": "#e7def3",
    "io": "#f2f2f2",
    "op": "#ffffff",
    "dead": "#fbe0dd",
}
DEFECT = "#b42318"  # edge colour of what the seed gets wrong
STYLE = {
    "svg.fonttype": "none",  # text stays text
    "svg.hashsalt": "haformer-book",  # stable ids: the same drawing gives the same bytes
    "font.family": "DejaVu Sans",
    "font.size": 9,
    "text.color": INK,
    "axes.edgecolor": INK,
    "figure.facecolor": "white",  # readable on a dark page too
    "savefig.facecolor": "white",
}


# --- drawing primitives ---------------------------------------------------------------------


def canvas(width: float, height: float, scale: float = 0.62) -> tuple[plt.Figure, plt.Axes]:
    """A figure whose data units are drawing units (x right, y up), without axes."""
    fig = plt.figure(figsize=(width * scale, height * scale))
    ax = fig.add_axes((0, 0, 1, 1))
    ax.set_xlim(0, width)
    ax.set_ylim(0, height)
    ax.set_axis_off()
    return fig, ax


def box(
    ax: plt.Axes,
    cx: float,
    cy: float,
    w: float,
    h: float,
    text: str,
    fill: str = "op",
    *,
    edge: str = INK,
    dashed: bool = False,
    size: float = 9,
    bold_first: bool = False,
) -> tuple[float, float, float, float]:
    """A rounded box centred at (cx, cy); returns (left, right, bottom, top)."""
    ax.add_patch(
        FancyBboxPatch(
            (cx - w / 2, cy - h / 2),
            w,
            h,
            boxstyle="round,pad=0,rounding_size=0.12",
            facecolor=COLOURS.get(fill, fill),
            edgecolor=edge,
            linewidth=1.6 if edge != INK else 1.0,
            linestyle="--" if dashed else "-",
        )
    )
    lines = text.split("\n")
    if bold_first and len(lines) > 1:
        top = cy + h / 2 - 0.12
        ax.text(cx, top, lines[0], ha="center", va="top", size=size, weight="bold")
        ax.text(
            cx,
            top - 0.42,
            "\n".join(lines[1:]),
            ha="center",
            va="top",
            size=size - 0.5,
            linespacing=1.3,
        )
    else:
        ax.text(cx, cy, text, ha="center", va="center", size=size, linespacing=1.25)
    return cx - w / 2, cx + w / 2, cy - h / 2, cy + h / 2


def arrow(
    ax: plt.Axes,
    start: tuple[float, float],
    end: tuple[float, float],
    label: str = "",
    *,
    colour: str = INK,
    rad: float = 0.0,
    dashed: bool = False,
) -> None:
    """An arrow from ``start`` to ``end``, with an optional label beside its middle."""
    ax.add_patch(
        FancyArrowPatch(
            start,
            end,
            arrowstyle="-|>",
            mutation_scale=10,
            color=colour,
            linewidth=1.0,
            linestyle="--" if dashed else "-",
            connectionstyle=f"arc3,rad={rad}",
            shrinkA=1,
            shrinkB=1,
        )
    )
    if label:
        mx, my = (start[0] + end[0]) / 2, (start[1] + end[1]) / 2
        ax.text(mx + 0.08, my, label, ha="left", va="center", size=7.5, style="italic")


def circle_op(ax: plt.Axes, cx: float, cy: float, symbol: str, r: float = 0.22) -> None:
    """A small circle holding an operator symbol (+, x, Sum)."""
    ax.add_patch(plt.Circle((cx, cy), r, facecolor="white", edgecolor=INK, linewidth=1.0))
    ax.text(cx, cy, symbol, ha="center", va="center", size=10)


def shape(t: torch.Tensor | tuple[int, ...]) -> str:
    """(B, C, H, W) -> '(C, H, W)': the batch is always 1 in the drawings."""
    dims = tuple(t.shape if isinstance(t, torch.Tensor) else t)
    return "(" + ", ".join(str(d) for d in dims[1:]) + ")"


def layer_names(module: nn.Module) -> list[str]:
    """Short names of the layers of ``module``, read from the layers themselves.

    ``conv 1x3`` (full), ``dw 3x1`` (depthwise), ``pw`` (1x1), ``gpw/2`` (1x1 in 2 groups),
    ``BN``, ``ReLU``, ``ReLU6``; a trailing ``+b`` on a conv with a bias.
    """
    names = []
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            kh, kw = m.kernel_size
            bias = "+b" if m.bias is not None else ""
            if m.groups == m.in_channels and m.groups > 1:
                names.append(f"dw {kh}x{kw}{bias}")
            elif (kh, kw) == (1, 1):
                names.append(f"pw{bias}" if m.groups == 1 else f"gpw/{m.groups}{bias}")
            else:
                names.append(f"conv {kh}x{kw}{bias}")
        elif isinstance(m, nn.BatchNorm2d):
            names.append("BN")
        elif isinstance(m, nn.ReLU6):
            names.append("ReLU6")
        elif isinstance(m, nn.ReLU):
            names.append("ReLU")
    return names


def save(fig: plt.Figure, out: Path, name: str) -> Path:
    path = out / f"{name}.svg"
    fig.savefig(path, format="svg", metadata={"Date": None})
    plt.close(fig)
    return path


# --- the whole model ---------------------------------------------------------------------------


def model_shapes(size: tuple[int, int] = CAMVID) -> dict[str, torch.Size]:
    """Output shapes of every step of ``haformer_b1`` on one (1, 3, *size) image, by hooks."""
    torch.manual_seed(0)
    model = create_model("haformer_b1", num_classes=11).eval()
    shapes: dict[str, torch.Size] = {}

    def keep(name: str) -> Callable:
        def hook(module: nn.Module, args: tuple, output: object) -> None:
            shapes[name] = output[-1].shape if isinstance(output, list) else output.shape
            if name == "fusion":
                shapes["fusion_a"], shapes["fusion_b"] = args[0].shape, args[1].shape

        return hook

    parts = {
        "stem": model.stem,
        "stage0": model.stages[0],
        "stage1": model.stages[1],
        "stage2": model.stages[2],
        "backbone": model.backbone,
        "proj": model.proj,
        "fusion": model.fusion,
        "stage3": model.stages[3],
        "classifier": model.classifier,
    }
    handles = [m.register_forward_hook(keep(name)) for name, m in parts.items()]
    x = torch.randn(1, 3, *size)
    with torch.no_grad():
        shapes["output"] = model(x).shape
    for handle in handles:
        handle.remove()
    shapes["input"] = x.shape
    return shapes


def stride(s: torch.Size, size: tuple[int, int] = CAMVID) -> str:
    return f"stride {round(size[1] / s[-1])}"


def denotes(stage: int) -> str:
    ds = SEED_DENOTES[stage]
    return f"{len(ds)} HAPE blocks, C = {SEED_CHANNELS[stage]}, denote {','.join(map(str, ds))}"


def draw_haformer(out: Path) -> Path:
    """The corrected HAFormer: both branches, the fusion, the decoder, shapes at 360 x 480."""
    s = model_shapes()
    fig, ax = canvas(13.0, 16.4)
    cnn_x, vit_x, mid_x, w, h = 3.6, 9.9, 6.5, 5.6, 1.05
    rows = [15.6 - 1.5 * i for i in range(10)]

    box(ax, mid_x, rows[0] + 0.3, 4.2, 0.8, f"image {shape(s['input'])}", "io")
    cnn = [
        ("down0 + stem\n3x3 s2 conv, depthwise 3x3, 1x1", s["stem"]),
        (f"down1 + stage 0\n{denotes(0)}", s["stage0"]),
        (f"down2 + stage 1\n{denotes(1)}", s["stage1"]),
        (f"expand 1x1 + stage 2\n{denotes(2)}", s["stage2"]),
        ("bilinear resize\nto stage 0's size", s["fusion_a"]),
    ]
    ax.text(cnn_x, rows[0] - 0.55, "CNN branch (HAPE)", ha="center", size=10, weight="bold")
    previous = (mid_x - 0.5, rows[0] - 0.1)
    for i, (text, out_shape) in enumerate(cnn):
        y = rows[1] - 1.5 * i
        box(ax, cnn_x, y, w, h, f"{text}\n{shape(out_shape)}, {stride(out_shape)}", "cnn")
        arrow(ax, previous, (cnn_x, y + h / 2))
        previous = (cnn_x, y - h / 2)
    cnn_end = previous

    ax.text(vit_x, rows[0] - 0.55, "transformer branch", ha="center", size=10, weight="bold")
    vit_top, vit_bottom = rows[1] + h / 2, rows[3] - h / 2
    box(
        ax,
        vit_x,
        (vit_top + vit_bottom) / 2,
        w,
        vit_top - vit_bottom,
        "EfficientViT-B1 (timm, features_only)\nstem and MBConv stages: stride 4, 8\n"
        "EfficientViT blocks (ReLU linear\nattention + MBConv): stride 16, 32\n\n"
        f"last map only: {shape(s['backbone'])}, {stride(s['backbone'])}",
        "vit",
    )
    arrow(ax, (mid_x + 0.5, rows[0] - 0.1), (vit_x, vit_top))
    box(
        ax,
        vit_x,
        rows[4],
        w,
        h,
        f"proj: 1x1 conv + BN\n{shape(s['proj'])}, {stride(s['proj'])}",
        "vit",
    )
    arrow(ax, (vit_x, vit_bottom), (vit_x, rows[4] + h / 2))
    box(
        ax,
        vit_x,
        rows[5],
        w,
        h,
        f"bilinear resize\nto the CNN map's size\n{shape(s['fusion_b'])}, {stride(s['fusion_b'])}",
        "vit",
    )
    arrow(ax, (vit_x, rows[4] - h / 2), (vit_x, rows[5] + h / 2))

    fy = rows[6] - 0.2
    box(ax, mid_x, fy, w, h, f"CWF fusion: w a + (1 - w) b\n{shape(s['fusion'])}", "fusion")
    arrow(ax, cnn_end, (mid_x - 1.2, fy + h / 2), "a")
    arrow(ax, (vit_x, rows[5] - h / 2), (mid_x + 1.2, fy + h / 2), "b")
    decoder = [
        (f"reduce 1x1 + stage 3\n{denotes(3)}", s["stage3"]),
        ("classifier: 1x1 conv", s["classifier"]),
        ("bilinear resize to the input", s["output"]),
    ]
    previous = (mid_x, fy - h / 2)
    for i, (text, out_shape) in enumerate(decoder):
        y = fy - 1.5 * (i + 1)
        kind = "io" if i == len(decoder) - 1 else "decoder"
        box(ax, mid_x, y, w, h, f"{text}\n{shape(out_shape)}, {stride(out_shape)}", kind)
        arrow(ax, previous, (mid_x, y + h / 2))
        previous = (mid_x, y - h / 2)
    return save(fig, out, "haformer")


# --- the HAPE block ----------------------------------------------------------------------------

EXAMPLE = (64, 4)  # (C, denote) of the drawn blocks: one branch of each kind


def branch_text(block: nn.Module, i: int, width: int = 15) -> str:
    """'branch i' and its layers, wrapped at ``width`` characters."""
    lines: list[str] = []
    for name in layer_names(block.convs[i]):
        if lines and len(lines[-1]) + 3 + len(name) <= width:
            lines[-1] += " . " + name
        else:
            lines.append(name)
    return f"branch {i}\n" + "\n".join(lines)


def draw_hape_panel(ax: plt.Axes, x0: float, block: nn.Module, title: str, seed: bool) -> None:
    """One HAPE block, top to bottom, in the 10-unit-wide column starting at ``x0``."""
    c, d = EXAMPLE
    hidden = c // d
    cx = x0 + 5.0
    ax.text(cx, 15.6, title, ha="center", size=10.5, weight="bold")
    box(ax, cx, 14.7, 4.0, 0.6, f"x  (B, C, H, W), C = {c}", "io")
    conv_in = " . ".join(layer_names(block.conv_in))
    box(ax, cx, 13.5, 6.0, 0.8, f"conv_in: {conv_in}\nC -> C/denote = {c} -> {hidden}", "cnn")
    arrow(ax, (cx, 14.4), (cx, 13.9))
    xs = [x0 + 1.25 + 2.5 * i for i in range(d)]
    pem_y, sum_y = 8.9, 7.7
    for i, bx in enumerate(xs):
        arrow(ax, (cx, 13.1), (bx, 12.35))
        height = 1.5 if seed else 2.0
        top = 12.35
        box(ax, bx, top - height / 2, 2.3, height, branch_text(block, i), "cnn", size=7.5)
        pem = block.pems[i]
        fc = getattr(pem, "fc", None)
        if fc is not None:
            box(
                ax,
                bx,
                pem_y + 0.05,
                2.3,
                1.0,
                f"PEM\nunused fc:\n{sum(p.numel() for p in fc.parameters())} params",
                "dead",
                edge=DEFECT,
                size=7.5,
            )
        else:
            box(ax, bx, pem_y + 0.05, 2.3, 1.0, "PEM\nno parameters", "op", size=7.5)
        arrow(ax, (bx, top - height), (bx, pem_y + 0.55))
        arrow(ax, (bx, pem_y - 0.45), (cx, sum_y + 0.22))
    circle_op(ax, cx, sum_y, "Σ")
    ax.text(
        cx + 0.35,
        sum_y,
        f"sum of the {d} branches, (B, {hidden}, H, W)",
        ha="left",
        va="center",
        size=7.5,
    )
    conv_out = " . ".join(layer_names(block.conv_out))
    box(ax, cx, 6.5, 6.0, 0.8, f"conv_out: {conv_out}\nC/denote -> C = {hidden} -> {c}", "cnn")
    arrow(ax, (cx, sum_y - 0.22), (cx, 6.9))
    circle_op(ax, cx, 5.4, "+")
    arrow(ax, (cx, 6.1), (cx, 5.62))
    edge = x0 + 9.9  # the residual path runs down the right edge of the column
    ax.plot([cx + 2.0, edge, edge], [14.7, 14.7, 5.4], color=INK, lw=1.0)
    arrow(ax, (edge, 5.4), (cx + 0.22, 5.4))
    ax.text(edge - 0.15, 10.3, "residual: x", rotation=90, ha="right", va="center", size=7.5)
    act = layer_names(block.act)[0]
    act_box = box(
        ax, cx, 4.3, 3.0, 0.6, act, "dead" if seed else "op", edge=DEFECT if seed else INK
    )
    arrow(ax, (cx, 5.18), (cx, act_box[3]))
    box(ax, cx, 3.2, 5.0, 0.6, f"channel shuffle, {d} groups", "op")
    arrow(ax, (cx, act_box[2]), (cx, 3.5))
    box(ax, cx, 2.1, 4.0, 0.6, "y  (B, C, H, W)", "io")
    arrow(ax, (cx, 2.9), (cx, 2.4))


def draw_hape(out: Path) -> Path:
    """The seed's HAPE block beside the corrected per-branch block (C = 64, denote 4)."""
    c, d = EXAMPLE
    fig, ax = canvas(20.6, 16.2, scale=0.5)
    seed = hape.BranchHAPEBlock(c, d, seed=True)
    draw_hape_panel(ax, 0.0, seed, "the seed's HAPE block", True)
    draw_hape_panel(ax, 10.4, hape.BranchHAPEBlock(c, d), "the corrected HAPE block", False)
    ax.text(
        10.2,
        0.9,
        f"Drawn for C = {c}, denote = {d}: one branch per kind. Branch i has the kind of branch "
        "i mod 4. +b: with a bias; dw: depthwise; pw: 1x1.",
        ha="center",
        size=8,
    )
    return save(fig, out, "hape_blocks")


def operation_counts(channels: int, denotes: Sequence[int]) -> dict[str, dict[int, int]]:
    """ATen operations of one inference forward, per block form and denote (1 x C x 8 x 8)."""
    x = torch.randn(1, channels, 8, 8)
    forms = {"stacked": hape.HAPEBlock, "per-branch": hape.BranchHAPEBlock}
    return {
        name: {d: sum(count_ops(make(channels, d), x).values()) for d in denotes}
        for name, make in forms.items()
    }


def draw_kernel_taps(ax: plt.Axes, x0: float, top: float, layer: hape.StackedDepthwise) -> None:
    """The stacked k x 1 kernel of ``layer``: one column per branch, its taps shaded, the
    zero padding that centres the shorter kernels in the longest one left white ("0")."""
    lengths = layer.lengths
    hidden = layer.mask.shape[0] // len(lengths)
    cell = 0.3
    for t, k in enumerate(lengths):
        taps = layer.mask[t * hidden].flatten().tolist()  # the first channel of branch t
        x = x0 + t * (cell + 0.08)
        for j, live in enumerate(taps):
            y = top - (j + 1) * cell
            ax.add_patch(
                Rectangle(
                    (x, y),
                    cell,
                    cell,
                    facecolor="#7fa7d1" if live else "white",
                    edgecolor=INK,
                    lw=0.6,
                )
            )
            if not live:
                ax.text(x + cell / 2, y + cell / 2, "0", ha="center", va="center", size=6)
        ax.text(x + cell / 2, top - len(taps) * cell - 0.12, str(k), ha="center", va="top", size=7)
    ax.text(
        x0 + len(lengths) * (cell + 0.08) / 2,
        top + 0.12,
        "the stacked k x 1 kernel",
        ha="center",
        va="bottom",
        size=7.5,
        style="italic",
    )


def draw_hape_grouped(out: Path, channels: int = 64, denote: int = 8) -> Path:
    """The corrected block as the models run it (``HAPEBlock``): the branches stacked on
    channels, a fixed number of operations whatever ``denote`` is."""
    block = hape.HAPEBlock(channels, denote)
    branches = block.branches
    hidden = channels // denote
    order = hape.branch_order(denote)
    kernels = hape.branch_kernels(denote)
    dense = [i for i in order if not kernels[i][1]]
    deep = [i for i in order if kernels[i][1]]
    dw1, pw1, dw2, pw2 = branches.depthwise
    counts = operation_counts(channels, (4, denote, 2 * denote))
    stacked = set(counts["stacked"].values())
    assert len(stacked) == 1, counts  # what the caption says: the count does not grow
    n_ops = stacked.pop()

    fig, ax = canvas(18.0, 15.2, scale=0.55)
    ax.set_ylim(1.8, 17.0)  # the drawing runs from y = 17 down to 2
    cx, left, right = 8.5, 3.6, 11.2
    box(ax, cx, 16.3, 7.4, 0.6, f"u = conv_in(x): conv 1x1 . BN . ReLU, (B, {hidden}, H, W)", "io")

    def conv_text(name: str, m: nn.Conv2d) -> str:
        kh, kw = m.kernel_size
        groups = f", {m.groups} groups" if m.groups > 1 else ""
        return f"{name}: conv {kh}x{kw}, {m.in_channels} -> {m.out_channels}{groups}"

    # dense branches: one conv reads u once for all of them, then one grouped conv
    ax.text(
        left,
        15.35,
        f"full 3x3 branches {', '.join(map(str, dense))}",
        ha="center",
        size=9,
        weight="bold",
    )
    box(
        ax,
        left,
        14.5,
        5.6,
        0.8,
        conv_text("dense1", branches.dense1) + "\n(u read once for all)",
        "cnn",
        size=8,
    )
    arrow(ax, (cx - 1.5, 16.0), (left, 14.9))
    box(
        ax,
        left,
        13.2,
        5.6,
        0.8,
        conv_text("dense2", branches.dense2) + "\n(one group per branch)",
        "cnn",
        size=8,
    )
    arrow(ax, (left, 14.1), (left, 13.6))
    dense_out = (left, 12.8)

    # depthwise-separable branches: u repeated, two stacked depthwise convs, two grouped 1x1s
    ax.text(
        right,
        15.35,
        f"depthwise-separable branches {', '.join(map(str, deep))}",
        ha="center",
        size=9,
        weight="bold",
    )
    wide = len(deep) * hidden
    box(ax, right, 14.5, 6.4, 0.8, f"u repeated {len(deep)} times: (B, {wide}, H, W)", "op", size=8)
    arrow(ax, (cx + 1.5, 16.0), (right, 14.9))
    rows = (
        (
            dw1,
            f"dw1: depthwise {dw1.mask.shape[2]}x1, {wide} groups\n"
            f"kernels {', '.join(map(str, dw1.lengths))} zero-padded to {max(dw1.lengths)} taps",
        ),
        (pw1, conv_text("pw1", pw1)),
        (dw2, f"dw2: depthwise 1x{dw2.mask.shape[3]}, {wide} groups\n(the same zero padding)"),
        (pw2, conv_text("pw2", pw2)),
    )
    y = 13.2
    previous = 14.1
    for _, text in rows:
        box(ax, right, y, 6.4, 0.8, text, "cnn", size=8)
        arrow(ax, (right, previous), (right, y + 0.4))
        previous, y = y - 0.4, y - 1.2
    deep_out = (right, previous)
    draw_kernel_taps(ax, 14.9, 13.4, dw1)

    cat_y = 8.0
    box(
        ax,
        cx,
        cat_y,
        11.0,
        0.8,
        f"concatenate: (B, {denote * hidden}, H, W), the branches in the order "
        f"{', '.join(map(str, order))}",
        "op",
        size=8.5,
    )
    arrow(ax, dense_out, (cx - 2.5, cat_y + 0.4), f"(B, {len(dense) * hidden}, H, W)")
    arrow(ax, deep_out, (cx + 2.5, cat_y + 0.4), f"(B, {wide}, H, W)")
    box(
        ax,
        cx,
        6.8,
        11.0,
        0.8,
        f"one BatchNorm ({branches.bn.num_features} channels) + one ReLU for all branches",
        "cnn",
        size=8.5,
    )
    arrow(ax, (cx, cat_y - 0.4), (cx, 7.2))
    box(
        ax,
        cx,
        5.3,
        11.0,
        1.4,
        "PEM of every branch and the branch sum in one step (excite_and_sum):\n"
        f"view as (B, {denote}, {hidden}, H, W), softmax of the means over each branch's "
        f"{hidden} channels,\nz A + z, sum over the branch axis -> (B, {hidden}, H, W)",
        "op",
        size=8.5,
    )
    arrow(ax, (cx, 6.4), (cx, 6.0))
    box(
        ax,
        cx,
        3.8,
        9.0,
        0.8,
        f"conv_out: conv 1x1 . BN, {hidden} -> {channels}; + x; ReLU;\n"
        f"channel shuffle in {denote} groups",
        "io",
        size=8.5,
    )
    arrow(ax, (cx, 4.6), (cx, 4.2))
    per_branch = counts["per-branch"]
    ax.text(
        cx,
        2.6,
        f"Drawn from haformer.hape.HAPEBlock for C = {channels}, denote = {denote}. "
        f"At inference it dispatches {n_ops} ATen operations\nfor denote "
        f"{', '.join(map(str, counts['stacked']))} alike; the per-branch block (BranchHAPEBlock) "
        f"dispatches {', '.join(str(per_branch[d]) for d in per_branch)}.",
        ha="center",
        va="top",
        size=8,
    )
    return save(fig, out, "hape_grouped")


# --- PEM -----------------------------------------------------------------------------------------


def draw_pem(out: Path) -> Path:
    """PEM: pool, softmax over channels, x * A + x; the seed's unused fc beside it."""
    fig, ax = canvas(17.0, 5.4, scale=0.6)
    y = 3.2
    box(ax, 1.2, y, 2.0, 0.9, "x\n(B, C, H, W)", "io")
    box(ax, 4.1, y, 2.4, 0.9, "global average\npool", "op")
    box(ax, 8.0, y, 2.4, 0.9, "softmax over\nthe C channels", "op")
    box(ax, 11.0, y, 2.0, 0.9, "A\n(B, C, 1, 1)", "io")
    circle_op(ax, 12.9, y, "x")
    circle_op(ax, 14.0, y, "+")
    box(ax, 15.8, y, 2.0, 0.9, "y\n(B, C, H, W)", "io")
    arrow(ax, (2.2, y), (2.9, y))
    arrow(ax, (5.3, y), (6.8, y))
    ax.text(6.05, y + 0.15, "s (B, C, 1, 1)", ha="center", va="bottom", size=7.5)
    arrow(ax, (9.2, y), (10.0, y))
    arrow(ax, (12.0, y), (12.68, y))
    arrow(ax, (13.12, y), (13.78, y))
    arrow(ax, (14.22, y), (14.8, y))
    # x feeds the product and the residual sum
    ax.plot([1.2, 1.2, 14.0], [y + 0.45, y + 1.3, y + 1.3], color=INK, lw=1.0)
    arrow(ax, (12.9, y + 1.3), (12.9, y + 0.22))
    arrow(ax, (14.0, y + 1.3), (14.0, y + 0.22))
    ax.text(
        7.6,
        y + 1.42,
        "x: one gain 1 + A_c per channel, the same at every pixel",
        ha="center",
        size=7.5,
        style="italic",
    )
    box(
        ax,
        8.0,
        1.0,
        8.6,
        0.9,
        "the seed's PEM also builds fc = 1x1 conv C -> C (C*C + C parameters)\n"
        "and never calls it: no arrow reaches it",
        "dead",
        edge=DEFECT,
        dashed=True,
        size=8,
    )
    return save(fig, out, "pem")


# --- attention -----------------------------------------------------------------------------------


def attention_sizes(size: tuple[int, int] = CAMVID) -> tuple[int, int, tuple[int, int]]:
    """Tokens N of the stride-32 map of EfficientViT-B1 and the head width of its attention."""
    from timm.models.efficientvit_mit import LiteMLA

    from haformer.backbone import create_backbone

    backbone = create_backbone("efficientvit_b1").eval()
    with torch.no_grad():
        last = backbone(torch.randn(1, 3, *size))[-1]
    mla = [m for m in backbone.modules() if isinstance(m, LiteMLA)][-1]  # a stride-32 one
    return last.shape[-2] * last.shape[-1], mla.dim, tuple(last.shape[-2:])


def matrix(
    ax: plt.Axes, x: float, y: float, rows: float, cols: float, label: str, fill: str
) -> float:
    """A matrix drawn as a rectangle of rows x cols units, top-left corner at (x, y).

    Returns the x of its right edge.
    """
    ax.add_patch(
        Rectangle((x, y - rows), cols, rows, facecolor=COLOURS[fill], edgecolor=INK, lw=1.0)
    )
    ax.text(x + cols / 2, y - rows / 2, label, ha="center", va="center", size=8)
    return x + cols


def operator(ax: plt.Axes, x: float, y: float, text: str, width: float = 0.7) -> float:
    """An operator between two matrices, centred at height y; returns where the next starts."""
    ax.text(x + width / 2, y, text, ha="center", va="center", size=9)
    return x + width


def draw_linear_attention(out: Path) -> Path:
    """Softmax attention builds N x N; ReLU linear attention regroups to a d x (d+1) matrix."""
    n, d, (mh, mw) = attention_sizes()
    big = 3.0  # N in drawing units
    small = max(big * d / n * 4, 0.45)  # d, magnified 4x so that it can be seen
    fig, ax = canvas(18.5, 11.2, scale=0.55)
    ax.text(
        0.2, 10.9, "softmax attention: (Q @ Kᵀ) @ V, one head", size=10.5, weight="bold", va="top"
    )
    top, mid = 9.8, 9.8 - big / 2
    x = matrix(ax, 0.4, top, big, small, "Q", "cnn")
    x = operator(ax, x, mid, "@")
    x = matrix(ax, x, top, small, big, "Kᵀ", "cnn")
    x = operator(ax, x, mid, "->")
    x = matrix(ax, x, top, big, big, f"N x N\n{n * n:,} entries", "dead")
    x = operator(ax, x, mid, "softmax, @", 1.5)
    x = matrix(ax, x, top, big, small, "V", "cnn")
    x = operator(ax, x, mid, "->")
    matrix(ax, x, top, big, small, "out", "io")
    ax.text(
        0.4,
        top - big - 0.3,
        "cost 2 N² d multiply-adds; the N x N matrix is held in memory",
        size=8.5,
        va="top",
    )

    ax.text(
        0.2,
        5.9,
        "ReLU linear attention: ReLU(Q) @ (ReLU(K)ᵀ @ [V 1]), one head",
        size=10.5,
        weight="bold",
        va="top",
    )
    top, mid = 4.9, 4.9 - big / 2
    x = matrix(ax, 0.4, top, small, big, "ReLU(K)ᵀ", "cnn")
    x = operator(ax, x, mid, "@")
    x = matrix(ax, x, top, big, small + 0.25, "[V 1]", "cnn")
    x = operator(ax, x, mid, "->")
    x = matrix(ax, x, top, small, small + 0.25, "", "fusion")
    ax.text(
        x - (small + 0.25) / 2,
        top - small - 0.12,
        f"d x (d+1)\n{d * (d + 1)} entries",
        ha="center",
        va="top",
        size=8,
    )
    x = operator(ax, x, mid, "then", 1.0)
    x = matrix(ax, x, top, big, small, "ReLU(Q)", "cnn")
    x = operator(ax, x, mid, "@ it ->", 1.3)
    x = matrix(ax, x, top, big, small + 0.25, "", "io")
    x = operator(ax, x, mid, "/ last\ncolumn", 1.3)
    matrix(ax, x, top, big, small, "out", "io")
    ax.text(
        0.4,
        0.75,
        f"cost 2 N d (d+1) multiply-adds; nothing of size N x N. Drawn for the stride-32 map of "
        f"a {CAMVID[0]} x {CAMVID[1]} image in EfficientViT-B1:\nN = {mh} x {mw} = {n} tokens, "
        f"head width d = {d} (d drawn 4x wider than to scale).",
        size=8,
    )
    return save(fig, out, "linear_attention")


# --- the fusions ---------------------------------------------------------------------------------


def fusion_layers(module: nn.Module) -> list[str]:
    """One line per conv of a fusion's gate, with its widths: '1x1 conv 256 -> 32 . BN . ReLU'."""
    lines = []
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            kh, kw = m.kernel_size
            kind = "depthwise" if m.groups == m.in_channels > 1 else "conv"
            lines.append(f"{kh}x{kw} {kind} {m.in_channels} -> {m.out_channels}")
        elif isinstance(m, nn.BatchNorm2d | nn.ReLU):
            lines[-1] += " . BN" if isinstance(m, nn.BatchNorm2d) else " . ReLU"
        elif isinstance(m, nn.AdaptiveAvgPool2d):
            lines.append("global average pool")
    return lines


def draw_fusions(out: Path) -> Path:
    """The seed's fusion (one weight per channel for a + b) beside the gated CWF."""
    c = SEED_CHANNELS[2]
    fig, ax = canvas(18.0, 10.0, scale=0.55)
    panels = (
        (
            4.5,
            fusion.SeedCWF(c),
            "the seed's fusion (SeedCWF)",
            "w  (B, C, 1, 1)",
            "ReLU6(w a + w b) = ReLU6(w (a + b))",
        ),
        (
            13.5,
            fusion.CWF(c),
            "the corrected fusion (CWF)",
            "w  (B, C, H, W)",
            "w a + (1 - w) b = b + w (a - b)",
        ),
    )
    for cx, module, title, gate, output in panels:
        seed = isinstance(module, fusion.SeedCWF)
        ax.text(cx, 9.6, title, ha="center", size=10.5, weight="bold")
        box(ax, cx - 1.8, 8.7, 2.6, 0.6, f"a: CNN (B, {c}, H, W)", "cnn", size=8)
        box(ax, cx + 1.8, 8.7, 2.6, 0.6, f"b: ViT (B, {c}, H, W)", "vit", size=8)
        box(ax, cx, 7.6, 4.4, 0.6, f"concat: (B, {2 * c}, H, W)", "op", size=8)
        arrow(ax, (cx - 1.8, 8.4), (cx - 0.6, 7.9))
        arrow(ax, (cx + 1.8, 8.4), (cx + 0.6, 7.9))
        lines = fusion_layers(module.dsconv) + fusion_layers(module.conv) if seed else []
        lines += fusion_layers(module.fc) if seed else fusion_layers(module.mix)
        if seed:
            lines.insert(len(lines) - 1, "global average pool")
        lines.append("sigmoid")
        height = 0.3 * len(lines) + 0.75
        box(
            ax,
            cx,
            7.3 - 0.35 - height / 2,
            6.6,
            height,
            "gate\n" + "\n".join(lines),
            "fusion",
            size=8,
            bold_first=True,
        )
        arrow(ax, (cx, 7.3), (cx, 6.95))
        gy = 6.95 - height - 0.6
        box(ax, cx, gy, 3.6, 0.6, gate, "fusion", edge=DEFECT if seed else INK, size=8.5)
        arrow(ax, (cx, 6.95 - height), (cx, gy + 0.3))
        box(
            ax,
            cx,
            gy - 1.3,
            6.6,
            0.8,
            output,
            "dead" if seed else "fusion",
            edge=DEFECT if seed else INK,
            size=8.5,
        )
        arrow(ax, (cx, gy - 0.3), (cx, gy - 0.9))
        for side in (-1, 1):  # a and b also go straight to the output
            ax.plot(
                [cx + side * 3.1, cx + side * 3.5, cx + side * 3.5],
                [8.7, 8.7, gy - 1.3],
                color=INK,
                lw=0.8,
                ls=":",
            )
            arrow(ax, (cx + side * 3.5, gy - 1.3), (cx + side * 3.3, gy - 1.3))
        params = sum(p.numel() for p in module.parameters())
        note = (
            "one weight per channel for the whole image, the same for a and b"
            if seed
            else "one weight per pixel and channel; a and b compete for it"
        )
        ax.text(
            cx, gy - 2.2, f"{note}\n{params:,} parameters (C = {c})", ha="center", va="top", size=8
        )
    return save(fig, out, "fusions")


# --- view vs resize ------------------------------------------------------------------------------


def placements(h: int = 3, w: int = 4, factor: int = 8) -> tuple[torch.Tensor, ...]:
    """Which cell of an (h, w) map each pixel of the (factor h, factor w) map comes from.

    ``view``: the seed's re-reading of factor**2 channel copies; ``resize``: the cell with the
    largest weight in a bilinear resize (``align_corners=False``), as the corrected model does.
    """
    cells = torch.arange(h * w, dtype=torch.float32).view(1, 1, h, w)
    viewed = cells.repeat(1, factor * factor, 1, 1).view(1, 1, factor * h, factor * w)
    one_hot = torch.eye(h * w).view(h * w, 1, h, w)
    weights = F.interpolate(
        one_hot, size=(factor * h, factor * w), mode="bilinear", align_corners=False
    )
    resized = weights[:, 0].argmax(dim=0)
    return cells[0, 0], viewed[0, 0], resized


def draw_view_vs_resize(out: Path) -> Path:
    """Where each value of a stride-32 map lands: the seed's view vs a bilinear resize."""
    cells, viewed, resized = placements()
    h, w = cells.shape
    colours = plt.get_cmap("tab20")(range(h * w))
    cmap = matplotlib.colors.ListedColormap(colours)
    fig, axes = plt.subplots(1, 3, figsize=(11, 3.4), width_ratios=(1, 2.2, 2.2))
    panels = (
        (cells, f"stride-32 map: {h} x {w} cells"),
        (viewed, "seed: 64 channel copies, view"),
        (resized, "corrected: bilinear resize (x8)"),
    )
    for ax, (grid, title) in zip(axes, panels, strict=True):
        ax.imshow(grid.numpy(), cmap=cmap, vmin=-0.5, vmax=h * w - 0.5, interpolation="nearest")
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_title(title, size=9.5)
    for i in range(h):
        for j in range(w):
            axes[0].text(j, i, str(i * w + j), ha="center", va="center", size=9)
    fig.text(
        0.5,
        0.03,
        "Colour: the cell a pixel's value comes from (for the resize, the cell with the largest "
        "bilinear weight).",
        ha="center",
        size=8.5,
    )
    fig.subplots_adjust(left=0.02, right=0.98, top=0.88, bottom=0.12, wspace=0.08)
    return save(fig, out, "view_vs_resize")


DRAWINGS: dict[str, Callable[[Path], Path]] = {
    "haformer": draw_haformer,
    "hape_blocks": draw_hape,
    "hape_grouped": draw_hape_grouped,
    "pem": draw_pem,
    "linear_attention": draw_linear_attention,
    "fusions": draw_fusions,
    "view_vs_resize": draw_view_vs_resize,
}


def draw_all(out: Path = HERE) -> list[Path]:
    """Write every diagram into ``out``; returns the SVG paths."""
    out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(1)
    with plt.rc_context(STYLE):
        return [draw(out) for draw in DRAWINGS.values()]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=HERE, help="folder for the SVGs")
    args = parser.parse_args(argv)
    for path in draw_all(args.out):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
