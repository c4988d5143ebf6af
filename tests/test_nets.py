"""The network generators: committed prototxt, GLRL's structure as the paper states it, solvers, CLI."""
from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
from glrl import settings, tiling
from glrl.caffe.io import read_net, read_solver
from glrl.cli import main
from glrl.errors import GlrlError, ModelError, TrainingError
from glrl.nets import glrl as glrl_module
from glrl.nets.diagram import to_dot, write_diagram
from glrl.nets.emit import emit
from glrl.nets.registry import NETS, get_net
from glrl.nets.solver import iters_per_epoch
from glrl.nets.stats import measure

COMMITTED = settings.PROTOTXT_DIR


def conv(kernel: int, cin: int, cout: int, bias: bool = True) -> int:
    return kernel * kernel * cin * cout + (cout if bias else 0)


def glrl_params(blocks: int, units: int, width: int = 64, prelu: bool = True, shared: bool = True) -> int:
    """The parameter count from the architecture: patch extraction, B LRBs, shared reconstruction, average."""
    slope = width if prelu else 0
    extraction = conv(3, 1, width) + slope + conv(3, width, width)
    unit = slope + conv(3, width, width) + slope + conv(3, width, width) + conv(3, width, width)
    mapping = blocks * unit * (1 if shared else units)
    reconstruction = slope + conv(3, width, width) + slope + conv(3, width, 1)
    return extraction + mapping + reconstruction + conv(1, blocks, 1, bias=False)


def glrl_macs(blocks: int, units: int, width: int = 64) -> int:
    per_unit = 3 * 9 * width * width
    return 9 * width + 9 * width * width + blocks * units * per_unit + blocks * (9 * width * width + 9 * width) + blocks


def committed_deploy(name: str):
    return read_net(COMMITTED / name / "deploy.prototxt")


# ---- committed files


def test_emitting_every_net_reproduces_the_committed_prototxt_byte_for_byte(tmp_path: Path) -> None:
    for recipe in NETS.values():
        emit(recipe, tmp_path)
    generated = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*") if p.is_file())
    committed = sorted(p.relative_to(COMMITTED) for p in COMMITTED.rglob("*") if p.is_file())
    assert generated == committed, "prototxt/ and the registry disagree: run `make prototxt`"
    for relative in generated:
        assert (tmp_path / relative).read_bytes() == (COMMITTED / relative).read_bytes(), (
            f"prototxt/{relative} differs from its generator: run `make prototxt`")


def test_committed_files_parse_back_to_the_generated_messages() -> None:
    for name, recipe in NETS.items():
        assert read_net(COMMITTED / name / "train_test.prototxt") == recipe.train_test("train_h5.txt", "test_h5.txt")
        assert committed_deploy(name) == recipe.deploy()
        solver = read_solver(COMMITTED / name / "solver.prototxt")
        assert solver.net == "train_test.prototxt"


# ---- GLRL as the paper states it, read from the committed prototxt


def test_glrl_is_16_convolutions_deep_as_the_paper_states() -> None:
    stats = measure(committed_deploy("glrl"))
    assert stats.conv_depth == 16  # "a network depth of 16 layers"
    assert stats.conv_depth == glrl_module.GlrlOptions().conv_depth()
    assert measure(committed_deploy("glrl-2lrb")).conv_depth == 2 + 2 * 2 * 2 + 2


def test_glrl_parameter_count_follows_the_architecture_formula() -> None:
    assert measure(committed_deploy("glrl")).params == glrl_params(blocks=3, units=2) == 408_004
    assert measure(committed_deploy("glrl-2lrb")).params == glrl_params(blocks=2, units=2)
    assert measure(committed_deploy("glrl-relu")).params == glrl_params(blocks=3, units=2, prelu=False)
    assert measure(committed_deploy("glrl-noshare")).params == glrl_params(blocks=3, units=2, shared=False)


def test_glrl_macs_per_pixel_follow_the_architecture_formula() -> None:
    assert measure(committed_deploy("glrl")).macs_per_pixel == glrl_macs(3, 2) == 813_315
    assert measure(committed_deploy("glrl-2lrb")).macs_per_pixel == glrl_macs(2, 2)


def test_glrl_shares_unit_weights_within_an_lrb_but_not_across_lrbs() -> None:
    net = committed_deploy("glrl")
    layers = {layer.name: layer for layer in net.layer}

    def names(layer):
        return [spec.name for spec in layer.param]

    for b in (1, 2, 3):
        for part in ("act", "deep1", "deep_act", "deep2", "shallow"):
            assert names(layers[f"lrb{b}_u1_{part}"]) == names(layers[f"lrb{b}_u2_{part}"])
            assert all(names(layers[f"lrb{b}_u1_{part}"]))
    assert not set(names(layers["lrb1_u1_deep1"])) & set(names(layers["lrb2_u1_deep1"]))
    for part in ("act1", "conv1", "act2", "conv2"):  # one reconstruction module, applied to every LRB output
        assert names(layers[f"rec1_{part}"]) == names(layers[f"rec2_{part}"]) == names(layers[f"rec3_{part}"])
    shared = measure(net).shared_blobs
    assert len(shared) == 3 * 8 + 6  # per LRB: 2 slopes + 3 convs x (w, b); reconstruction: 2 slopes + 2 x (w, b)
    assert not any(spec.name for layer in read_net(COMMITTED / "glrl-noshare" / "deploy.prototxt").layer
                   if layer.name.startswith("lrb") for spec in layer.param)


def test_glrl_units_add_deep_and_shallow_branches_to_the_block_input() -> None:
    layers = {layer.name: layer for layer in committed_deploy("glrl").layer}
    for b, block_input in ((1, "fe_conv2"), (2, "lrb1_u2")):
        for u in (1, 2):
            assert list(layers[f"lrb{b}_u{u}"].bottom) == [block_input, f"lrb{b}_u{u}_deep2", f"lrb{b}_u{u}_shallow"]
        assert list(layers[f"lrb{b}_u2_act"].bottom) == [f"lrb{b}_u1"]
    assert list(layers["lrb1_u1_shallow"].bottom) == list(layers["lrb1_u1_deep1"].bottom) == ["lrb1_u1_act"]


def test_glrl_averages_the_predictions_with_learned_weights_starting_at_one_over_b() -> None:
    layers = {layer.name: layer for layer in committed_deploy("glrl").layer}
    for b in (1, 2, 3):
        assert list(layers[f"pred{b}"].bottom) == [f"rec{b}_conv2", "data"]  # global residual
    assert list(layers["predictions"].bottom) == ["pred1", "pred2", "pred3"]
    average = layers["output"].convolution_param
    assert (average.num_output, list(average.kernel_size), average.bias_term) == (1, [1], False)
    assert average.weight_filler.type == "constant"
    assert average.weight_filler.value == pytest.approx(1 / 3)


def test_glrl_initialisation_and_prelu_settings() -> None:
    for layer in committed_deploy("glrl").layer:
        if layer.type == "Convolution" and layer.convolution_param.kernel_size[0] == 3:
            filler = layer.convolution_param.weight_filler
            if layer.name.endswith("_conv2") and layer.name.startswith("rec"):
                # the residual's last conv starts at zero: the untrained net is bicubic interpolation
                assert (filler.type, filler.value) == ("constant", 0)
            else:
                assert filler.type == "msra"
            assert layer.convolution_param.bias_filler.type == "constant"
            assert layer.convolution_param.bias_filler.value == 0
        if layer.type == "PReLU":
            assert not layer.prelu_param.channel_shared  # channel-wise, Caffe's default slope 0.25
            assert layer.param[0].decay_mult == 0


def test_deep_supervision_adds_a_loss_per_prediction_only_in_training() -> None:
    train = read_net(COMMITTED / "glrl-ds" / "train_test.prototxt")
    losses = {layer.name: layer for layer in train.layer if layer.type == "EuclideanLoss"}
    assert sorted(losses) == ["loss", "loss_pred1", "loss_pred2", "loss_pred3"]
    assert losses["loss_pred2"].loss_weight[0] == pytest.approx(1 / 3)
    assert list(committed_deploy("glrl-ds").layer) == list(committed_deploy("glrl").layer)  # same net to deploy


def test_generator_options_change_the_net_as_named() -> None:
    narrow = glrl_module.glrl_recipe("t", "test", glrl_module.GlrlOptions(blocks=1, units=3, width=16,
                                                                          shallow_kernel=1))
    stats = measure(narrow.deploy())
    slope = 16
    unit = slope + conv(3, 16, 16) + slope + conv(3, 16, 16) + conv(1, 16, 16)
    expected = conv(3, 1, 16) + slope + conv(3, 16, 16) + unit + slope + conv(3, 16, 16) + slope + conv(3, 16, 1) + 1
    assert stats.params == expected
    assert stats.conv_depth == 2 + 2 * 3 + 2
    for bad, message in (({"blocks": 0}, "blocks must be a positive integer"),
                         ({"width": -1}, "width must be a positive integer"),
                         ({"shallow_kernel": 2}, "shallow-branch kernel must be odd"),
                         ({"activation": "tanh"}, "unknown GLRL activation 'tanh'")):
        with pytest.raises(ModelError, match=message):
            glrl_module.glrl_body(glrl_module.GlrlOptions(**bad))


# ---- the other nets and the I/O contract


def test_srcnn_trains_and_deploys_valid_33_to_21_and_is_run_on_edge_padded_images() -> None:
    srcnn = get_net("srcnn")
    assert srcnn.patch_sizes == (33, 21)
    train = read_net(COMMITTED / "srcnn" / "train_test.prototxt")
    convs = [layer for layer in train.layer if layer.type == "Convolution"]
    assert [(c.convolution_param.kernel_size[0], c.convolution_param.num_output) for c in convs] == [
        (9, 64), (1, 32), (5, 1)]
    assert all(not c.convolution_param.pad for c in convs)
    assert 33 - sum(c.convolution_param.kernel_size[0] - 1 for c in convs) == 21
    assert [c.convolution_param.weight_filler.type for c in convs] == ["msra", "msra", "gaussian"]
    assert convs[2].convolution_param.weight_filler.std == pytest.approx(1e-3)
    assert [spec.lr_mult for spec in convs[2].param] == pytest.approx([0.1, 0.1])
    deploy = committed_deploy("srcnn")
    stats = measure(deploy)
    assert stats.output_shape == (1, 1, 244, 244)  # the train net's arithmetic: 6 pixels lost a side
    assert tiling.border_loss(deploy) == 6 and tiling.border_loss(committed_deploy("glrl")) == 0
    assert stats.params == conv(9, 1, 64) + conv(1, 64, 32) + conv(5, 32, 1)
    assert stats.macs_per_pixel == 81 * 64 + 64 * 32 + 25 * 32  # per output pixel of a large image


def test_vdsr_is_twenty_3x3_convolutions_with_a_global_residual() -> None:
    stats = measure(committed_deploy("vdsr"))
    assert stats.conv_depth == stats.conv_layers == 20
    assert stats.params == conv(3, 1, 64) + 18 * conv(3, 64, 64) + conv(3, 64, 1)
    assert list(committed_deploy("vdsr").layer[-1].bottom) == ["conv20", "data"]


def test_every_net_has_the_shared_io_contract() -> None:
    for name, recipe in NETS.items():
        train = recipe.train_test("a.txt", "b.txt", batch_size=8, test_batch_size=3)
        data_layers = [layer for layer in train.layer if layer.type == "HDF5Data"]
        assert [(list(d.top), d.include[0].phase, d.hdf5_data_param.batch_size) for d in data_layers] == [
            (["data", "label"], 0, 8), (["data", "label"], 1, 3)], name
        assert data_layers[0].hdf5_data_param.shuffle and data_layers[0].hdf5_data_param.source == "a.txt"
        assert train.layer[-1].type == "EuclideanLoss" and list(train.layer[-1].bottom)[1] == "label"
        deploy = recipe.deploy(40, 24)
        assert deploy.layer[0].type == "Input" and list(deploy.layer[0].input_param.shape[0].dim) == [1, 1, 40, 24]
        lost = tiling.border_loss(deploy)  # SRCNN's 'valid' net 6, the others 0: the size once edge-padded
        assert measure(deploy).output_shape == (1, 1, 40 - 2 * lost, 24 - 2 * lost), name
        assert not any(layer.type in ("HDF5Data", "EuclideanLoss") for layer in deploy.layer)


def test_bad_arguments_are_refused_clearly() -> None:
    with pytest.raises(ModelError, match="unknown net 'glrl3'"):
        get_net("glrl3")
    with pytest.raises(ModelError, match="deploy size must be positive"):
        get_net("glrl").deploy(0, 10)
    with pytest.raises(ModelError, match="batch size must be a positive integer"):
        get_net("glrl").train_test("a", "b", batch_size=0)
    with pytest.raises(TrainingError, match="unknown schedule"):
        get_net("glrl").solver("net.prototxt", 100, schedule="fast")
    with pytest.raises(TrainingError, match="iterations per epoch must be a positive integer"):
        get_net("glrl").solver("net.prototxt", 0)


# ---- solvers


def test_paper_solver_matches_section_4_1() -> None:
    solver = get_net("glrl").solver("train_test.prototxt", iters_per_epoch=1000, snapshot_prefix="run/glrl")
    assert (solver.type, solver.momentum, solver.weight_decay, solver.base_lr) == (
        "SGD", pytest.approx(0.9), pytest.approx(1e-4), pytest.approx(0.1))
    assert (solver.lr_policy, solver.gamma, solver.stepsize) == ("step", 0.5, 10 * 1000)  # halved every 10 epochs
    assert solver.max_iter == 76 * 1000 and solver.snapshot == 1000 and solver.test_interval == 1000
    assert solver.clip_gradients == pytest.approx(0.01)
    assert solver.snapshot_prefix == "run/glrl"
    assert not solver.HasField("solver_mode")  # chosen at run time
    train = get_net("glrl").train_test("a", "b")
    assert train.layer[0].hdf5_data_param.batch_size == 32


def test_srcnn_solver_is_its_own_recipe_and_short_schedules_count_iterations() -> None:
    solver = get_net("srcnn").solver("t.prototxt", iters_per_epoch=500)
    assert (solver.base_lr, solver.lr_policy, solver.weight_decay) == (pytest.approx(1e-4), "fixed", 0)
    assert not solver.HasField("clip_gradients") and not solver.HasField("stepsize")
    assert iters_per_epoch(patches=1000, batch_size=32) == 32  # the last batch is partial
    with pytest.raises(TrainingError, match="cannot make epochs of 0 patches"):
        iters_per_epoch(patches=0, batch_size=32)
    smoke = get_net("glrl").solver("t.prototxt", iters_per_epoch=500, schedule="smoke")
    assert (smoke.max_iter, smoke.stepsize, smoke.snapshot) == (8, 4, 4)


# ---- commands and diagram


def test_nets_list_prints_every_net_with_its_numbers(capsys: pytest.CaptureFixture) -> None:
    assert main(["nets", "list"]) == 0
    out = capsys.readouterr().out
    for name in NETS:
        assert re.search(rf"^{re.escape(name)}\s", out, re.MULTILINE), name
    assert re.search(r"^glrl\s+16\s+408,004\s+813,315\s", out, re.MULTILINE)


def test_nets_show_and_emit_commands(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["nets", "show", "glrl-2lrb"]) == 0
    assert "297,091" in capsys.readouterr().out
    assert main(["nets", "show", "vdsr", "--file", "deploy"]) == 0
    assert capsys.readouterr().out == (COMMITTED / "vdsr" / "deploy.prototxt").read_text()
    assert main(["nets", "emit", "srcnn", "--out", str(tmp_path)]) == 0
    assert sorted(p.name for p in (tmp_path / "srcnn").iterdir()) == [
        "deploy.prototxt", "solver.prototxt", "train_test.prototxt"]
    assert main(["nets", "emit", "--out", str(tmp_path)]) == 2
    assert main(["nets", "show", "nope"]) == 2
    assert "choose one of: glrl" in capsys.readouterr().err


def test_diagram_draws_every_layer_and_groups_the_blocks(tmp_path: Path) -> None:
    net = committed_deploy("glrl")
    dot = to_dot(net)
    for layer in net.layer:
        assert f'"{layer.name}" [label=' in dot
    for box in ("lrb1", "lrb3_u2", "rec2", "fe"):
        assert f'subgraph "cluster_{box}"' in dot
    assert '"lrb1_u2" -> "lrb2_u1_act";' in dot and '"data" -> "pred3";' in dot
    write_diagram(net, tmp_path / "glrl.dot")
    assert (tmp_path / "glrl.dot").read_text() == dot
    with pytest.raises(GlrlError, match="diagram"):
        write_diagram(net, tmp_path / "glrl.jpg")
    if shutil.which("dot"):
        write_diagram(net, tmp_path / "glrl.png")
        assert (tmp_path / "glrl.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_architecture_doc_quotes_the_numbers_of_the_committed_nets() -> None:
    doc = (settings.REPO_ROOT / "docs" / "architecture.md").read_text()
    rows = re.findall(r"^\| `([\w-]+)` \| (\d+) \| ([\d,]+) \| ([\d,]+) \|", doc, re.MULTILINE)
    assert [row[0] for row in rows] == list(NETS)
    for name, depth, params, macs in rows:
        stats = measure(committed_deploy(name))
        assert (int(depth), int(params.replace(",", "")), int(macs.replace(",", ""))) == (
            stats.conv_depth, stats.params, stats.macs_per_pixel), name


# ---- every generated net runs in the PyTorch backend


def _patch_set(folder: Path, name: str, count: int, input_size: int, label_size: int, seed: int) -> Path:
    """A tiny HDF5 patch set and its Caffe list file (N×1×H×W float32 ``data`` and ``label``)."""
    import h5py
    import numpy as np

    rng = np.random.default_rng(seed)
    with h5py.File(folder / f"{name}.h5", "w") as handle:
        handle["data"] = rng.random((count, 1, input_size, input_size), dtype=np.float32)
        handle["label"] = rng.random((count, 1, label_size, label_size), dtype=np.float32)
    (folder / f"{name}.txt").write_text(f"{folder / name}.h5\n")
    return folder / f"{name}.txt"


@pytest.mark.parametrize("name", list(NETS))
def test_every_net_trains_and_deploys_in_the_torch_backend(name: str, tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    from glrl.backends.torch_net import TorchNet

    torch.set_num_threads(1)
    recipe = get_net(name)
    input_size, label_size = recipe.patch_sizes
    train_list = _patch_set(tmp_path, "train", 4, input_size, label_size, seed=1)
    test_list = _patch_set(tmp_path, "test", 2, input_size, label_size, seed=2)
    net = TorchNet(recipe.train_test(str(train_list), str(test_list), batch_size=2), "TRAIN", seed=0)

    learnable = net.learnable_params()
    deploy_stats = measure(recipe.deploy())
    assert sum(entry.param.numel() for entry in learnable) == deploy_stats.params  # shared blobs once
    blobs = net.forward()
    assert blobs["data"].shape == (2, 1, input_size, input_size)
    loss = net.loss(blobs)
    assert torch.isfinite(loss) and loss > 0
    loss.backward()
    for entry in learnable:
        if entry.lr_mult != 0:
            assert entry.param.grad is not None and torch.isfinite(entry.param.grad).all(), entry.key
    assert any(entry.param.grad.abs().sum() > 0 for entry in learnable)

    test_net = TorchNet(recipe.train_test(str(train_list), str(test_list)), "TEST", seed=0)
    assert test_net.forward()["data"].shape[0] == 2  # the TEST phase reads the test list at batch 2

    deploy = TorchNet(recipe.deploy(20, 28), "TEST", seed=0)
    image = torch.rand(1, 1, 20, 28)
    lost = 6 if name == "srcnn" else 0  # SRCNN's deploy net is 'valid', as its train net
    assert deploy.forward({"data": image})[deploy_stats.output].shape == (1, 1, 20 - 2 * lost, 28 - 2 * lost)
    if name != "srcnn":  # global residual: with the last residual conv at zero, the net returns its input
        with torch.no_grad():
            for entry in deploy.learnable_params():
                if entry.key.startswith("rec_conv2") or entry.layer_name == "conv20":
                    entry.param.zero_()
            output = deploy.forward({"data": image})[deploy_stats.output]
        torch.testing.assert_close(output, image, rtol=0, atol=1e-6)
    if name.startswith("glrl"):  # as initialised by its fillers, the untrained GLRL is bicubic interpolation
        untrained = TorchNet(recipe.deploy(20, 28), "TEST", seed=0)
        with torch.no_grad():
            output = untrained.forward({"data": image})[deploy_stats.output]
        torch.testing.assert_close(output, image, rtol=0, atol=1e-6)



# ---- real Caffe (the oracle root) accepts every generated net

CAFFE_SCRIPT = r"""
import json, os
import caffe, h5py, numpy as np
from glrl.caffe.io import write_net
from glrl.nets.emit import render
from glrl.nets.registry import NETS
caffe.set_mode_cpu()
report = {}
for name, recipe in NETS.items():
    identical = all(open(os.path.join("prototxt", name, f)).read() == text for f, text in render(recipe).items())
    size, label = recipe.patch_sizes
    with h5py.File(name + ".h5", "w") as handle:
        handle["data"] = np.random.rand(2, 1, size, size).astype("f4")
        handle["label"] = np.random.rand(2, 1, label, label).astype("f4")
    open(name + ".txt", "w").write(os.path.abspath(name + ".h5") + "\n")
    write_net(recipe.train_test(name + ".txt", name + ".txt", batch_size=2), name + ".prototxt")
    train = caffe.Net(name + ".prototxt", caffe.TRAIN)
    loss = float(train.forward()["loss"])
    train.backward()
    gradient = sum(float(np.abs(blob.diff).sum()) for blobs in train.params.values() for blob in blobs)
    deploy = caffe.Net(os.path.join("prototxt", name, "deploy.prototxt"), caffe.TEST)
    shared = None
    if "lrb1_u2_deep1" in deploy.params:
        deploy.params["lrb1_u1_deep1"][0].data[...] = 0.5
        shared = bool((deploy.params["lrb1_u2_deep1"][0].data == 0.5).all())
    report[name] = {"identical": identical, "loss": loss, "gradient": gradient, "outputs": list(deploy.outputs),
                    "shape": list(deploy.blobs[deploy.outputs[0]].data.shape), "shared": shared,
                    "blobs": sum(blob.data.size for blobs in deploy.params.values() for blob in blobs)}
print(json.dumps(report))
"""


@pytest.mark.oracle
def test_real_caffe_builds_trains_and_deploys_every_generated_net(caffe_root) -> None:
    import json

    from glrl import oracle

    with oracle.RootSession() as session:
        shutil.copytree(COMMITTED, session.path / "prototxt")
        report = json.loads(session.run_python(CAFFE_SCRIPT).strip().splitlines()[-1])
    assert list(report) == list(NETS)
    for name, found in report.items():
        stats = measure(committed_deploy(name))
        assert found["identical"], f"{name}: bullseye's protobuf 3.12 writes other text than prototxt/{name}"
        assert found["loss"] > 0 and found["gradient"] > 0, name
        assert found["outputs"] == [stats.output] and found["shape"] == list(stats.output_shape), name
        assert found["blobs"] == stats.params_with_sharing, name  # pycaffe lists a shared blob under each user
        expected_sharing = None if not name.startswith("glrl") else name != "glrl-noshare"
        assert found["shared"] is expected_sharing, name  # writing unit 1's weights changes unit 2's


def test_a_named_optimizer_replaces_the_nets_recipe_and_cpu_schedules_cap_the_test_pass() -> None:
    paper = get_net("glrl").solver("train_test.prototxt", 1000, "cpu-release", test_iters=1100)
    adam = get_net("glrl").solver("train_test.prototxt", 1000, "cpu-release", test_iters=1100, optimizer="adam")
    assert (paper.type, paper.base_lr, paper.clip_gradients) == ("SGD", pytest.approx(0.1), pytest.approx(0.01))
    assert (adam.type, adam.base_lr, adam.momentum, adam.momentum2) == (
        "Adam", pytest.approx(1e-4), pytest.approx(0.9), pytest.approx(0.999))
    assert not adam.HasField("clip_gradients")
    assert adam.max_iter == paper.max_iter == 800 and list(adam.test_iter) == [50]
    full = get_net("glrl").solver("train_test.prototxt", 1000, "paper", test_iters=1100)
    assert list(full.test_iter) == [1100]
    with pytest.raises(TrainingError, match="unknown optimizer"):
        get_net("glrl").solver("train_test.prototxt", 1000, "paper", optimizer="rmsprop")
