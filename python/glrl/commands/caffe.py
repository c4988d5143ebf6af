"""``glrl caffe info FILE`` and ``glrl caffe upgrade IN OUT``: look inside Caffe's files, upgrade legacy ones.

``info`` recognises a net (``.prototxt``), a solver (``solver.prototxt``), weights (``.caffemodel``) and a
snapshot (``.solverstate``) by their content and prints a summary: layers with their types, bottoms, tops,
phase rules and parameter blob shapes; or the solver's settings; or the snapshot's iteration and history.
``upgrade`` rewrites a V1 or ``input_dim`` net (text or binary) or a ``solver_type`` solver in today's format.
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any, Dict, List

HELP = "inspect Caffe files (info) and upgrade legacy nets and solvers (upgrade)"


def configure(parser: argparse.ArgumentParser) -> None:
    from glrl.cli import add_action

    actions = parser.add_subparsers(dest="caffe_command", metavar="ACTION")
    actions.required = True
    info = add_action(actions, "info", "summarise a .prototxt, solver, .caffemodel or .solverstate")
    info.add_argument("file", type=Path, help="a net or solver .prototxt, a .caffemodel or a .solverstate")
    upgrade = add_action(actions, "upgrade", "rewrite a legacy (V1, input_dim, solver_type) file")
    upgrade.add_argument("input", type=Path, help="the legacy file")
    upgrade.add_argument("output", type=Path,
                         help="the upgraded file, in the input's format (text for nets and solvers, binary for "
                              "weights and snapshots)")


def run(args: argparse.Namespace) -> int:
    from glrl.caffe import io

    if args.caffe_command == "info":
        caffe_file = io.read_any(args.file)
        print(f"{args.file}: {caffe_file.kind}")
        for note in caffe_file.upgrades:
            print(f"  legacy format, upgraded on reading: {note}")
        print("\n".join(SUMMARIES[caffe_file.kind](caffe_file.message)))
        return 0
    if args.output.exists() and args.output.resolve() == args.input.resolve():
        from glrl.errors import FormatError

        raise FormatError(f"the output {args.output} is the input itself; the legacy file would be lost",
                          hint="write the upgrade to another file, check it, then replace the original")
    caffe_file = io.read_any(args.input)
    _check_output_name(args.output, caffe_file.kind)
    io.write_any(caffe_file, args.output)
    done = "; ".join(caffe_file.upgrades) if caffe_file.upgrades else "already current, written unchanged"
    print(f"{args.input} -> {args.output} ({caffe_file.kind}: {done})")
    return 0


TEXT_SUFFIXES, BINARY_SUFFIXES = (".prototxt", ".pbtxt", ".txt"), (".caffemodel", ".solverstate", ".binaryproto")
SUFFIX_OF_KIND = {"net": ".prototxt", "solver": ".prototxt", "caffemodel": ".caffemodel",
                  "solverstate": ".solverstate"}


def _check_output_name(path: Path, kind: str) -> None:
    """The output's name must not promise the other format: a net or solver is written as text, weights and
    snapshots as binary protobuf (as Caffe reads each)."""
    from glrl.errors import FormatError

    text = SUFFIX_OF_KIND[kind] == ".prototxt"
    if path.suffix.lower() in (BINARY_SUFFIXES if text else TEXT_SUFFIXES):
        written = "protobuf text" if text else "binary protobuf"
        raise FormatError(f"the input is a {kind}, written as {written}, but the output is named {path.name}",
                          hint=f"name the output <something>{SUFFIX_OF_KIND[kind]}")


def _rules(layer: Any) -> str:
    from glrl.caffe import pb

    def describe(rule: Any) -> str:
        parts = [pb.Phase.Name(rule.phase)] if rule.HasField("phase") else []
        parts += [f"stage={s}" for s in rule.stage] + [f"not_stage={s}" for s in rule.not_stage]
        if rule.HasField("min_level"):
            parts.append(f"level>={rule.min_level}")
        if rule.HasField("max_level"):
            parts.append(f"level<={rule.max_level}")
        return "+".join(parts) or "always"

    rules = [f"include {describe(r)}" for r in layer.include]
    rules += [f"exclude {describe(r)}" for r in layer.exclude]
    return f"  [{', '.join(rules)}]" if rules else ""


def summarise_net(net: Any) -> List[str]:
    from glrl.caffe import io
    from glrl.caffe.weights import blob_key

    lines = [f"name: {net.name or '(unnamed)'}, {len(net.layer)} layers"]
    width = max([len(layer.name) for layer in net.layer] + [4])
    counts: Dict[str, int] = {}  # a blob shared through ``param { name }`` counts once
    stored = 0
    for layer in net.layer:
        flow = f"{', '.join(layer.bottom) or '-'} -> {', '.join(layer.top) or '-'}"
        line = f"  {layer.name:<{width}}  {layer.type:<14} {flow}{_rules(layer)}{_details(layer)}"
        if len(layer.blobs):
            shapes = [io.blob_shape(blob) for blob in layer.blobs]
            for index, shape in enumerate(shapes):
                counts[blob_key(layer, index)] = int(_count(shape))
                stored += int(_count(shape))
            line += "  blobs " + ", ".join("x".join(map(str, shape)) or "scalar" for shape in shapes)
        lines.append(line)
    total = sum(counts.values())
    if total:
        lines.append(f"parameters: {total:,}" + (f" ({stored:,} stored: a shared blob is stored in each layer "
                                                 "that uses it)" if stored != total else ""))
    return lines


def _details(layer: Any) -> str:
    """The settings that matter most for reading a net at a glance."""
    from glrl.caffe import pb
    from glrl.caffe.geometry import conv_geometry

    parts = []
    if layer.type == "Input":
        parts.append("shape " + ", ".join("x".join(str(d) for d in s.dim) for s in layer.input_param.shape))
    if layer.type in ("Convolution", "Deconvolution"):
        conv, geometry = layer.convolution_param, conv_geometry(layer)

        def size(pair) -> str:  # "3" for 3x3, "3x1" otherwise
            return str(pair[0]) if pair[0] == pair[1] else f"{pair[0]}x{pair[1]}"

        parts.append(f"{conv.num_output} out, kernel {size(geometry.kernel)}")
        for name, values, default in (("pad", geometry.pad, 0), ("stride", geometry.stride, 1),
                                      ("dilation", geometry.dilation, 1)):
            if values != (default, default):
                parts.append(f"{name} {size(values)}")
        if conv.group != 1:
            parts.append(f"group {conv.group}")
        if not conv.bias_term:
            parts.append("no bias")
    if layer.type == "Eltwise":
        eltwise = layer.eltwise_param
        op = pb.EltwiseParameter.EltwiseOp.Name(eltwise.operation)
        coefficients = ", ".join(f"{c:g}" for c in eltwise.coeff)
        parts.append(f"{op} coeff {coefficients}" if coefficients else op)
    if layer.type == "HDF5Data":
        parts.append(f"source {layer.hdf5_data_param.source}, batch {layer.hdf5_data_param.batch_size}"
                     + (", shuffle" if layer.hdf5_data_param.shuffle else ""))
    if len(layer.loss_weight):
        parts.append("loss_weight " + ", ".join(f"{w:g}" for w in layer.loss_weight))
    shared = [spec.name for spec in layer.param if spec.name]
    if shared:
        parts.append("shares " + ", ".join(shared))
    return ("  " + "; ".join(parts)) if parts else ""


def _count(shape: List[int]) -> int:
    count = 1
    for dim in shape:
        count *= dim
    return count


def summarise_solver(solver: Any) -> List[str]:
    from google.protobuf import text_format

    return ["  " + line for line in text_format.MessageToString(solver).splitlines()]


def summarise_solverstate(state: Any) -> List[str]:
    from glrl.caffe import io

    history = ", ".join("x".join(map(str, io.blob_shape(blob))) or "scalar" for blob in state.history)
    return [
        f"  iter: {state.iter}",
        f"  learned_net: {state.learned_net or '(none)'}",
        f"  current_step: {state.current_step}",
        f"  history: {len(state.history)} blobs" + (f" ({history})" if history else ""),
    ]


SUMMARIES = {
    "net": summarise_net,
    "caffemodel": summarise_net,
    "solver": summarise_solver,
    "solverstate": summarise_solverstate,
}
