"""Bad input at the command line: each gets ``error:``/``hint:`` lines naming what is wrong and exit status 2
(argparse's own refusal for a value out of range), never a traceback, and nothing written earlier is lost."""
from __future__ import annotations

import json
import shutil

import pytest

from glrl import settings
from glrl.cli import main

torch = pytest.importorskip("torch")


def refused(argv, capsys) -> str:
    """Run ``glrl argv``; it must exit with status 2 and a hint. Returns what it printed on stderr."""
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "\nhint: " in err and "Traceback" not in err
    return err


@pytest.mark.parametrize("argv, message", [
    (["train", "--threads", "-2"], "argument --threads: must be a positive integer, not -2"),
    (["train", "--time-limit", "-1"], "argument --time-limit: must be a number of at least 0, not -1"),
    (["train", "--stop-at", "0"], "argument --stop-at: must be a positive integer, not 0"),
    (["upscale", "a.png", "b.png", "--scale", "3", "--tile", "-5"], "argument --tile: must be 0 or an integer"),
    (["upscale", "a.png", "b.png", "--scale", "3", "--tile", "1"], "at least 16 pixels, not 1"),
    (["upscale", "a.png", "b.png", "--scale", "3", "--tile", "100000000"], "at most 65536 pixels"),
    (["data", "inspect", "x.h5", "--samples", "-3"], "argument --samples: must be a positive integer, not -3"),
    (["nets", "show", "srcnn", "--diagram", "x.jpg"], "argument --diagram: cannot draw a diagram as 'x.jpg'"),
])
def test_option_values_out_of_range_are_refused_by_the_parser(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 2
    assert message in capsys.readouterr().err


def test_an_output_folder_that_cannot_be_made_is_an_error_naming_it(tmp_path, capsys):
    blocker = tmp_path / "a-file.png"
    blocker.write_bytes(b"")
    err = refused(["nets", "emit", "glrl", "--out", str(blocker)], capsys)
    assert str(blocker) in err and "not a folder" in err


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
@pytest.mark.parametrize("device", ["cuda", "cuda:3"])
def test_a_gpu_asked_for_on_a_machine_without_one_is_an_error(tmp_path, data_root, device, capsys):
    err = refused(["eval", "--datasets", "Set5", "--scales", "3", "--model", "srcnn_x3", "--device", device,
                   "--data-root", str(data_root), "--out", str(tmp_path / "eval")], capsys)
    assert f"--device {device} was asked for but PyTorch sees no CUDA GPU" in err


def test_model_metadata_with_a_field_of_the_wrong_type_is_an_error_naming_the_file(tmp_path, capsys):
    models = shutil.copytree(settings.MODELS_DIR, tmp_path / "models")
    meta = json.loads((models / "srcnn_x2.json").read_text())
    meta["scales"] = 3
    (models / "srcnn_x2.json").write_text(json.dumps(meta))
    err = refused(["models", "list", "--models-dir", str(models)], capsys)
    assert "srcnn_x2.json has a field of the wrong type" in err


@pytest.mark.parametrize("damage, message", [
    (lambda meta: "{not json", "cannot read model metadata"),
    (lambda meta: json.dumps(list(meta)), "is not a JSON object"),
    (lambda meta: json.dumps({k: v for k, v in meta.items() if k not in ("iterations", "sha256")}),
     "lacks iterations, sha256"),
    (lambda meta: json.dumps(dict(meta, set5_psnr=[36.0])), "has a field of the wrong type"),
    (lambda meta: json.dumps(dict(meta, net=7)), "has a field of the wrong type"),
])
def test_damaged_model_metadata_is_an_error_naming_the_file_and_the_damage(tmp_path, capsys, damage, message):
    models = shutil.copytree(settings.MODELS_DIR, tmp_path / "models")
    meta = json.loads((models / "srcnn_x2.json").read_text())
    (models / "srcnn_x2.json").write_text(damage(meta))
    err = refused(["models", "list", "--models-dir", str(models)], capsys)
    assert f"{models / 'srcnn_x2.json'}" in err and message in err and "glrl models release --force" in err


def test_a_released_models_missing_or_changed_weights_fail_its_verification(tmp_path):
    from glrl import model_zoo
    from glrl.errors import ModelError

    models = shutil.copytree(settings.MODELS_DIR, tmp_path / "models")
    weights = models / "srcnn_x2.caffemodel"
    data = weights.read_bytes()
    weights.write_bytes(data[:-1] + bytes([data[-1] ^ 1]))  # one bit of the last weight
    with pytest.raises(ModelError, match="srcnn_x2.caffemodel has SHA-256 .*, metadata says"):
        model_zoo.get_model("srcnn_x2", models).verify()
    weights.unlink()
    with pytest.raises(ModelError, match="missing file .*srcnn_x2.caffemodel"):
        model_zoo.get_model("srcnn_x2", models).verify()


def test_a_models_folder_that_does_not_exist_is_not_taken_for_an_empty_one(tmp_path, capsys):
    err = refused(["models", "verify", "--models-dir", str(tmp_path / "nowhere")], capsys)
    assert f"the models folder {tmp_path / 'nowhere'} does not exist" in err


def test_a_copy_of_the_models_folder_elsewhere_verifies_against_this_checkouts_prototxt(tmp_path, capsys):
    models = shutil.copytree(settings.MODELS_DIR, tmp_path / "models")
    assert main(["models", "verify", "--models-dir", str(models)]) == 0
    assert ", 0 problem(s)" in capsys.readouterr().out


def test_a_models_deploy_prototxt_is_looked_for_beside_the_folder_first_then_in_this_checkout(tmp_path):
    from glrl import model_zoo
    from glrl.errors import ModelError

    models = shutil.copytree(settings.MODELS_DIR, tmp_path / "models")
    deploy = json.loads((models / "srcnn_x2.json").read_text())["deploy"]
    assert model_zoo.get_model("srcnn_x2", models).deploy == settings.REPO_ROOT / deploy  # none beside: ours
    beside = tmp_path / deploy
    beside.parent.mkdir(parents=True)
    shutil.copy(settings.REPO_ROOT / deploy, beside)
    assert model_zoo.get_model("srcnn_x2", models).deploy == beside  # the folder's own checkout wins
    meta = json.loads((models / "srcnn_x2.json").read_text())
    (models / "srcnn_x2.json").write_text(json.dumps(dict(meta, deploy="prototxt/nowhere/deploy.prototxt")))
    lost = model_zoo.get_model("srcnn_x2", models)
    assert lost.deploy == tmp_path / "prototxt" / "nowhere" / "deploy.prototxt"  # named where it was looked for
    with pytest.raises(ModelError, match="missing file .*nowhere/deploy.prototxt"):
        lost.verify()


def test_an_eval_that_evaluates_nothing_fails_and_keeps_the_results_already_there(tmp_path, data_root, capsys):
    out = tmp_path / "eval"
    out.mkdir()
    (out / "results.md").write_text("an earlier run's table\n")
    err = refused(["eval", "--datasets", "Set5", "--scales", "3", "--model", "srcnn_x2",
                   "--data-root", str(data_root), "--out", str(out)], capsys)
    assert "nothing was evaluated at x3: srcnn_x2 is for x2 only" in err
    assert (out / "results.md").read_text() == "an earlier run's table\n"
    err = refused(["eval", "--datasets", "", "--scales", "3", "--method", "bicubic",
                   "--data-root", str(data_root), "--out", str(out)], capsys)
    assert "nothing to evaluate" in err


def test_a_train_test_prototxt_given_as_a_deploy_net_is_named_as_such(tmp_path, data_root, capsys):
    err = refused(["eval", "--datasets", "Set5", "--scales", "3", "--data-root", str(data_root),
                   "--prototxt", str(settings.PROTOTXT_DIR / "glrl" / "train_test.prototxt"),
                   "--weights", str(settings.MODELS_DIR / "glrl_x234.caffemodel"), "--out", str(tmp_path)], capsys)
    assert "a train/test net, not a deploy net" in err and "HDF5Data" in err


def test_training_refuses_an_unknown_optimizer_and_solver_changes_beside_a_solver_before_writing_anything(
        tmp_path, capsys):
    solver = tmp_path / "solver.prototxt"
    solver.write_text('net: "net.prototxt" base_lr: 0.01 max_iter: 2\n')
    err = refused(["train", "--solver", str(solver), "--optimizer", "adam", "--run-dir", str(tmp_path / "run")],
                  capsys)
    assert "--optimizer adam writes the solver of a generated net" in err
    assert not (tmp_path / "run").exists()
    err = refused(["train", "--solver", str(solver), "--solver-set", "base_lr=1e-3", "--run-dir",
                   str(tmp_path / "run")], capsys)
    assert "--solver-set changes the solver of a generated net" in err and not (tmp_path / "run").exists()
    err = refused(["train", "--optimizer", "nosuch", "--run-dir", str(tmp_path / "run")], capsys)
    assert "unknown optimizer 'nosuch'" in err



def test_a_file_where_an_output_folder_should_be_made_is_an_error_naming_it(tmp_path, capsys):
    blocker = tmp_path / "diagrams"
    blocker.write_text("a file, not a folder")
    err = refused(["nets", "show", "srcnn", "--diagram", str(blocker / "srcnn.dot")], capsys)
    assert f"error: {blocker}: File exists" in err and "a file stands where a folder is needed" in err
    assert blocker.read_text() == "a file, not a folder"


@pytest.mark.parametrize("error, message, hint", [
    (PermissionError(13, "Permission denied", "/srv/out"), "/srv/out: Permission denied",
     "choose a location you can write to (or read, for an input)"),
    (FileNotFoundError(2, "No such file or directory", "in.png"), "in.png: No such file or directory",
     "check the path"),
    (OSError(28, "No space left on device", "/srv/out/x.h5"), "/srv/out/x.h5: No space left on device",
     "check the path, the free space and the permissions"),
    (OSError("the device vanished"), "the device vanished", "check the path, the free space and the permissions"),
])
def test_each_kind_of_file_system_failure_gets_its_own_hint(error, message, hint):
    """(Failures root cannot provoke, such as a permission denied, built as the OS would raise them.)"""
    from glrl.errors import from_os_error

    converted = from_os_error(error)
    assert (converted.message, converted.hint) == (message, hint)


@pytest.mark.parametrize("argv, message", [
    (["--model", "srcnn_x3", "--prototxt", "prototxt/srcnn/deploy.prototxt", "--weights", "w/srcnn_x3.caffemodel"],
     "two methods would be named srcnn_x3"),
    (["--method", "bicubic,Bicubic"], "--method names Bicubic, bicubic more than once"),
    (["--model", "srcnn_x3", "--name", "mine"], "--name, --residual-outside and --transposed apply to"),
])
def test_eval_refuses_two_methods_of_one_name_and_a_name_for_no_external_model(tmp_path, data_root, argv, message,
                                                                               capsys):
    err = refused(["eval", *argv, "--datasets", "Set5", "--scales", "3", "--data-root", str(data_root), "--out",
                   str(tmp_path / "eval")], capsys)
    assert message in err and not (tmp_path / "eval").exists()


def test_output_into_a_pipe_whose_reader_stops_early_ends_quietly(tmp_path):
    import subprocess
    import sys

    command = f"{sys.executable} -m glrl caffe info {settings.MODELS_DIR / 'glrl_x3.caffemodel'} | head -1"
    done = subprocess.run(["bash", "-o", "pipefail", "-c", command], capture_output=True, text=True, timeout=120)
    assert done.stdout.endswith("glrl_x3.caffemodel: caffemodel\n") and done.stderr == ""
    assert done.returncode in (0, 141)  # 141: ended as a command killed by SIGPIPE is


def test_an_upgrade_written_onto_a_folder_or_under_a_file_says_which(tmp_path, capsys):
    (tmp_path / "a-file").write_text("")
    (tmp_path / "a-folder").mkdir()
    net = settings.PROTOTXT_DIR / "srcnn" / "deploy.prototxt"
    err = refused(["caffe", "upgrade", str(net), str(tmp_path / "a-file" / "net.prototxt")], capsys)
    assert "a file stands where a folder is needed" in err
    err = refused(["caffe", "upgrade", str(net), str(tmp_path / "a-folder")], capsys)
    assert "that is a folder: name a file" in err
