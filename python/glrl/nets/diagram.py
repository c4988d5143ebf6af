"""Draw a net from its prototxt with Graphviz: one box per layer, arrows along the blobs.

Layers are grouped into nested boxes by their name's prefixes (``lrb1_u2_deep1`` sits in ``lrb1_u2``
inside ``lrb1``), and layers that share weights through ``param { name }`` get the same colour and a
"shares" line, so the recursion of an LRB is visible. ``dot`` renders the DOT text (``.png``/``.svg``);
writing ``.dot`` needs no Graphviz.
"""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any, Dict, List, Set

from glrl.caffe.geometry import conv_geometry
from glrl.errors import GlrlError
from glrl.fsutil import atomic_write_bytes, atomic_write_text

PALETTE = ("#fde0b6", "#cde5f7", "#d5f0d0", "#f3d1e8", "#e4dcf5", "#fff3a8", "#d0eeee", "#f6d0c8")
TYPE_COLOURS = {"Convolution": "#ffffff", "PReLU": "#eeeeee", "ReLU": "#eeeeee", "Input": "#b8d8b8"}


def _quote(text: str) -> str:
    return '"' + text.replace('"', '\\"') + '"'


def _label(layer: Any) -> str:
    if layer.type == "Convolution":
        p = layer.convolution_param
        kernel_h, kernel_w = conv_geometry(layer).kernel
        text = f"{layer.name}\\n{kernel_h}x{kernel_w} conv, {p.num_output}"
        if not p.bias_term:
            text += ", no bias"
    elif layer.type == "Eltwise":
        text = f"{layer.name}\\nsum"
    else:
        text = f"{layer.name}\\n{layer.type}"
    shared = [spec.name for spec in layer.param if spec.name]
    if shared:
        text += "\\nshares " + shared[0].rsplit("_", 1)[0]
    return text


def _groups(name: str) -> List[str]:
    """The name's prefixes that may form nested boxes: 'a_b_c' -> ['a', 'a_b']."""
    tokens = name.split("_")
    return ["_".join(tokens[: i + 1]) for i in range(len(tokens) - 1)]


def to_dot(net: Any) -> str:
    """The DOT source for ``net`` (a deploy or train/test ``NetParameter``)."""
    layers = list(net.layer)
    members: Dict[str, List[str]] = {}
    for layer in layers:
        for group in _groups(layer.name):
            members.setdefault(group, []).append(layer.name)
    boxes = {group for group, names in members.items() if len(names) > 1}
    colours: Dict[str, str] = {}
    lines = [f"digraph {_quote(net.name or 'net')} {{", "  rankdir=TB;", "  nodesep=0.25; ranksep=0.3;",
             '  node [shape=box, style="rounded,filled", fontname="Helvetica", fontsize=10];',
             '  edge [arrowsize=0.6, color="#555555"];']
    tree: Dict[str, List[str]] = {}  # box (or "" for the top level) -> node lines
    for layer in layers:
        shared = [spec.name for spec in layer.param if spec.name]
        if shared:
            key = shared[0].split("_", 1)[0]  # one colour per weight-set family: lrb1, lrb2, rec
            colour = colours.setdefault(key, PALETTE[len(colours) % len(PALETTE)])
        else:
            colour = TYPE_COLOURS.get(layer.type, "#f4f4f4")
        shape = ", shape=ellipse" if layer.type in ("Eltwise", "Concat") else ""
        node = f"    {_quote(layer.name)} [label={_quote(_label(layer))}, fillcolor={_quote(colour)}{shape}];"
        inner = [group for group in _groups(layer.name) if group in boxes]
        tree.setdefault(inner[-1] if inner else "", []).append(node)
    lines.extend(line[2:] for line in tree.get("", []))
    emitted: Set[str] = set()

    def emit_box(box: str, indent: str) -> None:
        emitted.add(box)
        lines.append(f"{indent}subgraph {_quote('cluster_' + box)} {{")
        lines.append(f'{indent}  label={_quote(box)}; style="rounded"; color="#999999"; fontname="Helvetica";')
        lines.extend(indent + node[2:] for node in tree.get(box, []))
        for child in sorted(b for b in boxes if b.startswith(box + "_") and b.count("_") == box.count("_") + 1):
            emit_box(child, indent + "  ")
        lines.append(f"{indent}}}")

    for box in sorted(b for b in boxes if not any(b.startswith(o + "_") for o in boxes)):
        emit_box(box, "  ")
    producer: Dict[str, str] = {}
    for layer in layers:
        for bottom in layer.bottom:
            if bottom in producer and producer[bottom] != layer.name:
                lines.append(f"  {_quote(producer[bottom])} -> {_quote(layer.name)};")
        for top in layer.top:
            producer[top] = layer.name
    lines.append("}")
    return "\n".join(lines) + "\n"


DIAGRAM_SUFFIXES = (".dot", ".png", ".svg")


def write_diagram(net: Any, path: Path) -> None:
    """Write ``net``'s diagram to ``path``: ``.dot`` source, or ``.png``/``.svg`` rendered by Graphviz."""
    path = Path(path)
    source = to_dot(net)
    suffix = path.suffix.lower()
    if suffix == ".dot":
        atomic_write_text(path, source)
        return
    if suffix not in DIAGRAM_SUFFIXES:
        raise GlrlError(f"cannot draw a diagram as {path.name!r}", hint="use a .png, .svg or .dot file name")
    dot = shutil.which("dot")
    if dot is None:
        raise GlrlError("Graphviz's 'dot' is not installed, so the diagram cannot be rendered",
                        hint="install graphviz (apt-get install graphviz), or write a .dot file instead")
    args = [dot, f"-T{suffix[1:]}"] + (["-Gdpi=80"] if suffix == ".png" else [])
    result = subprocess.run(args, input=source.encode("utf-8"), capture_output=True, check=False)
    if result.returncode != 0:
        raise GlrlError(f"dot failed to render {path.name}: {result.stderr.decode(errors='replace').strip()}")
    atomic_write_bytes(path, result.stdout)
