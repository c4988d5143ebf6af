"""The HDF5 patch sets (issue 4): what `glrl data build` writes, how the reader serves it, what inspect shows.

Everything runs on a tiny data root (three small T91 images, one BSD200 image, one Set5 image) copied from
the shared datasets, so the whole file takes seconds.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import errno
import json
import re
import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest
from glrl import cli
from glrl.data_prep import build as build_module
from glrl.data_prep.build import build, plan
from glrl.data_prep.config import BuildConfig
from glrl.data_prep.inspect import inspect
from glrl.data_prep.manifest import content_sha256
from glrl.data_prep.h5file import write_patch_file
from glrl.data_prep.patches import cut_patches, dihedral, interpolated_pair, patch_count
from glrl.data_prep.reader import CaffeHDF5Reader, GlibcRand, read_list_file
from glrl.errors import DataError
from glrl.imageio import read_image
from glrl.matlab_compat import imresize, modcrop, rgb2ycbcr

TINY = {"train/T91": ["t20.bmp", "t24.bmp", "t9.bmp"], "train/BSD200": None, "test/Set5": ["butterfly.png"]}


@pytest.fixture(scope="module")
def tiny_root(data_root: Path, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("tiny_data")
    for folder, names in TINY.items():
        source = data_root / folder
        names = names or sorted(p.name for p in source.iterdir())[:1]
        (root / folder).mkdir(parents=True)
        for name in names:
            shutil.copy(source / name, root / folder / name)
    return root


@pytest.fixture(scope="module")
def built(tiny_root: Path, tmp_path_factory):
    """The multi-scale set (x2, x3, x4) of the tiny root, 1000 patches per file."""
    out = tmp_path_factory.mktemp("sets") / "x234"
    return build(BuildConfig(scales=(2, 3, 4), patches_per_file=1000), tiny_root, out, workers=2,
                 progress=False, check_sources=False)


def rows_of(list_file: Path, name: str) -> np.ndarray:
    return np.concatenate([h5py.File(str(p), "r")[name][...] for p in read_list_file(list_file)])


def source_paths(tiny_root: Path, manifest: dict, part: str):
    folders = {"T91": "train/T91", "BSD200": "train/BSD200", "Set5": "test/Set5"}
    return [tiny_root / folders[s["set"]] / s["name"] for s in manifest["sources"][part]]


def luma(path: Path) -> np.ndarray:
    return rgb2ycbcr(read_image(path))[:, :, 0]


# --- geometry --------------------------------------------------------------------------------------------

def test_patch_grid_of_a_100x77_image_at_scale_3():
    # modcrop -> 99 x 75; rows start at 0, 21, 42, 63 (63 + 31 <= 99), cols at 0, 21, 42 (42 + 31 <= 75)
    assert patch_count(100, 77, 3, 31, 21) == 12
    image = np.arange(99 * 75, dtype=np.float64).reshape(99, 75)
    inputs, labels, starts = cut_patches(image, image, 31, 31, 21)
    assert starts.tolist() == [[r, c] for r in (0, 21, 42, 63) for c in (0, 21, 42)]
    assert np.array_equal(inputs[5], image[21:52, 42:73])
    assert patch_count(30, 200, 2, 31, 21) == 0


def test_a_window_that_ends_exactly_on_the_border_is_cut():
    # 73 = 42 + 31 and 52 = 21 + 31: the last row and column of windows touch the border
    image = np.zeros((73, 52))
    assert cut_patches(image, image, 31, 31, 21)[2].tolist() == [[r, c] for r in (0, 21, 42) for c in (0, 21)]
    assert patch_count(73, 52, 1, 31, 21) == 6
    assert patch_count(31, 31, 1, 31, 21) == 1
    assert len(cut_patches(image[:31, :31], image[:31, :31], 31, 31, 21)[2]) == 1


def test_srcnn_layout_label_is_the_centre_of_the_input_window():
    image = np.random.RandomState(0).rand(60, 60)
    inputs, labels, starts = cut_patches(image, image, 33, 21, 14)
    assert labels.shape[1:] == (21, 21) and starts.tolist()[:2] == [[0, 0], [0, 14]]
    assert np.array_equal(labels[1], image[6:27, 20:41]) and np.array_equal(inputs[1][6:27, 6:27], labels[1])


def test_augmentation_is_exactly_the_eight_symmetries_of_the_square():
    a = np.random.RandomState(1).rand(5, 7)
    expected = [a, a[::-1], a[:, ::-1], a[::-1, ::-1], a.T, a.T[::-1], a.T[:, ::-1], a.T[::-1, ::-1]]
    produced = [dihedral(a, k) for k in range(8)]
    for want in expected:
        assert sum(np.array_equal(want, got) for got in produced if got.shape == want.shape) == 1
    # index k < 4: k quarter turns counter-clockwise; k >= 4: a left-right flip first
    for k in range(8):
        assert np.array_equal(dihedral(a, k), np.rot90(a[:, ::-1] if k >= 4 else a, k % 4))


def test_the_bicubic_input_keeps_its_overshoot_past_0_and_1():
    step = np.zeros((24, 24), np.uint8)
    step[:, 12:] = 255
    image_in, label = interpolated_pair(step, 3)
    assert label.min() == 0.0 and label.max() == 1.0
    assert image_in.min() < 0.0 and image_in.max() > 1.0


def test_equal_patches_written_a_second_apart_are_equal_bytes(tmp_path):
    import time

    arrays = (np.ones((2, 1, 4, 4), np.float32), np.zeros((2, 1, 4, 4), np.float32), np.zeros((2, 6), np.int32))
    write_patch_file(tmp_path / "a.h5", *arrays)
    time.sleep(1.1)  # HDF5 stamps a dataset with the second it was made unless told not to
    write_patch_file(tmp_path / "b.h5", *arrays)
    assert (tmp_path / "a.h5").read_bytes() == (tmp_path / "b.h5").read_bytes()


def test_patch_counts_follow_the_formula(built, tiny_root):
    manifest = built.manifest
    expected = 0
    for path in source_paths(tiny_root, manifest, "train"):
        height, width = read_image(path).shape[:2]
        for turn in range(8):
            h, w = (height, width) if turn % 2 == 0 else (width, height)
            expected += sum(((h - h % s - 31) // 21 + 1) * ((w - w % s - 31) // 21 + 1) for s in (2, 3, 4))
    assert manifest["train"]["patches"] == expected
    assert rows_of(built.out / "train.txt", "label").shape == (expected, 1, 31, 31)
    files = manifest["train"]["files"]
    assert [f["patches"] for f in files[:-1]] == [1000] * (len(files) - 1)
    assert 0 < files[-1]["patches"] <= 1000


def test_dry_run_plan_predicts_counts_and_bytes_exactly(built, tiny_root):
    predicted = plan(BuildConfig(scales=(2, 3, 4), patches_per_file=1000), tiny_root, check_sources=False)
    for part in ("train", "val"):
        files = built.manifest[part]["files"]
        assert predicted[part]["patches"] == built.manifest[part]["patches"]
        assert predicted[part]["files"] == len(files)
        assert predicted[part]["bytes"] == sum(f["bytes"] for f in files)


def test_every_transform_and_scale_is_present_for_every_image(built):
    origin = rows_of(built.out / "train.txt", "origin")
    images = len(built.manifest["sources"]["train"])
    combos = {(i, t, s) for i, _, t, s, _, _ in origin.tolist()}
    assert combos == {(i, t, s) for i in range(images) for t in range(8) for s in (2, 3, 4)}


# --- content ---------------------------------------------------------------------------------------------

def test_label_is_the_modcropped_hr_luminance_and_input_its_bicubic_round_trip(built, tiny_root):
    data, label, origin = (rows_of(built.out / "train.txt", n) for n in ("data", "label", "origin"))
    paths = source_paths(tiny_root, built.manifest, "train")
    picks = np.random.RandomState(0).choice(len(origin), 60, replace=False)
    for k in picks:
        image, _, turn, scale, row, col = origin[k]
        hr = modcrop(dihedral(luma(paths[image]), turn), scale).astype(np.float64) / 255
        assert np.array_equal(label[k, 0], hr[row:row + 31, col:col + 31].astype(np.float32))
        bicubic = imresize(imresize(hr, 1 / scale), output_shape=hr.shape)
        assert np.array_equal(data[k, 0], bicubic[row:row + 31, col:col + 31].astype(np.float32))
    # input and label agree where they should: a bicubic round trip stays within ~0.2 of the truth on average
    assert float(np.mean(np.abs(data - label))) < 0.05
    assert data.dtype == label.dtype == np.float32 and 0 <= label.min() and label.max() <= 1


def test_downscaled_copies_are_matlab_bicubic_shrinks_of_the_turned_rgb_image(tiny_root, tmp_path):
    config = BuildConfig(train_sets=("T91",), val_set="", downscales=(0.7,), shuffle=False)
    result = build(config, tiny_root, tmp_path / "ds", workers=1, progress=False, check_sources=False)
    label, origin = rows_of(result.out / "train.txt", "label"), rows_of(result.out / "train.txt", "origin")
    paths = source_paths(tiny_root, result.manifest, "train")
    shrunk = [k for k in range(len(origin)) if origin[k, 1] == 1]
    assert shrunk and set(origin[:, 1].tolist()) == {0, 1} and not (result.out / "val.txt").exists()
    for k in shrunk[::41]:
        image, _, turn, scale, row, col = origin[k]
        small = rgb2ycbcr(imresize(dihedral(read_image(paths[image]), turn), 0.7))[:, :, 0]
        hr = modcrop(small, scale).astype(np.float64) / 255
        assert np.array_equal(label[k, 0], hr[row:row + 31, col:col + 31].astype(np.float32))


def test_validation_set_is_the_unaugmented_set5_patches_in_order(built, tiny_root):
    origin = rows_of(built.out / "val.txt", "origin")
    height, width = read_image(tiny_root / "test/Set5/butterfly.png").shape[:2]
    assert len(origin) == sum(patch_count(height, width, s, 31, 21) for s in (2, 3, 4))
    assert set(origin[:, 2].tolist()) == {0}
    assert origin[:, 3].tolist() == sorted(origin[:, 3].tolist())  # scale by scale, positions row-major


# --- shuffle and reproducibility -------------------------------------------------------------------------

def test_global_shuffle_is_a_seeded_permutation_independent_of_worker_count(built, tiny_root, tmp_path):
    config = BuildConfig(scales=(2, 3, 4), patches_per_file=1000)
    one_worker = build(config, tiny_root, tmp_path / "w1", workers=1, progress=False, check_sources=False)
    checksums = [f["sha256"] for f in built.manifest["train"]["files"]]
    assert [f["sha256"] for f in one_worker.manifest["train"]["files"]] == checksums
    # another folder, worker count and time: different manifests, the same content hash
    assert one_worker.manifest != built.manifest
    assert content_sha256(one_worker.manifest) == content_sha256(built.manifest)
    reseeded = build(BuildConfig(scales=(2, 3, 4), patches_per_file=1000, seed=7), tiny_root, tmp_path / "s7",
                     workers=2, progress=False, check_sources=False)
    ours, theirs = rows_of(built.out / "train.txt", "origin"), rows_of(reseeded.out / "train.txt", "origin")
    assert content_sha256(reseeded.manifest) != content_sha256(built.manifest)
    assert not np.array_equal(ours, theirs)
    assert sorted(map(tuple, ours.tolist())) == sorted(map(tuple, theirs.tolist()))  # same patches, once each
    assert len(set(map(tuple, ours.tolist()))) == len(ours)
    canonical = np.lexsort(ours[:, ::-1].T)  # unshuffled order would be sorted by origin columns
    assert not np.array_equal(canonical, np.arange(len(ours)))


def test_where_worker_processes_cannot_start_the_build_cuts_in_process(built, tiny_root, tmp_path, monkeypatch,
                                                                         capsys):
    def no_semaphores(*_, **__):
        raise OSError(errno.ENOSYS, "Function not implemented")

    monkeypatch.setattr(build_module.concurrent.futures, "ProcessPoolExecutor", no_semaphores)
    alone = build(BuildConfig(scales=(2, 3, 4), patches_per_file=1000), tiny_root, tmp_path / "x", workers=2,
                  progress=False, check_sources=False)
    assert "warning: cannot start 2 worker processes ([Errno 38] Function not implemented); cutting in this " \
           "process" in capsys.readouterr().err
    assert content_sha256(alone.manifest) == content_sha256(built.manifest)


def test_rebuilding_with_the_same_settings_is_a_no_op_and_damage_is_repaired(tiny_root, tmp_path):
    config = BuildConfig(train_sets=("T91",), patches_per_file=500)
    first = build(config, tiny_root, tmp_path / "x3", workers=1, progress=False, check_sources=False)
    stamps = {p.name: p.stat().st_mtime_ns for p in first.out.iterdir()}
    again = build(config, tiny_root, tmp_path / "x3", workers=1, progress=False, check_sources=False)
    assert again.skipped and {p.name: p.stat().st_mtime_ns for p in again.out.iterdir()} == stamps
    reseeded = BuildConfig(train_sets=("T91",), patches_per_file=500, seed=1)
    changed = build(reseeded, tiny_root, tmp_path / "x3", workers=1, progress=False, check_sources=False)
    assert not changed.skipped
    damaged = changed.out / changed.manifest["train"]["files"][0]["name"]
    with open(damaged, "r+b") as handle:
        handle.seek(4000)
        handle.write(b"\xff\xff")
    repaired = build(reseeded, tiny_root, tmp_path / "x3", workers=1, progress=False, check_sources=False)
    assert not repaired.skipped
    assert [f["sha256"] for f in repaired.manifest["train"]["files"]] == [
        f["sha256"] for f in changed.manifest["train"]["files"]]


# --- bad input -------------------------------------------------------------------------------------------

def test_an_unreadable_image_names_the_file_and_writes_nothing(tiny_root, tmp_path):
    root = tmp_path / "root"
    shutil.copytree(tiny_root, root)
    (root / "train/T91/t0.bmp").write_bytes(b"BM this is not a bitmap")
    with pytest.raises(DataError, match="t0.bmp"):
        build(BuildConfig(), root, tmp_path / "out", workers=1, progress=False, check_sources=False)
    assert not (tmp_path / "out").exists()


def test_a_partial_copy_of_a_published_set_is_refused_unless_asked(tiny_root, tmp_path):
    with pytest.raises(DataError, match="not the published T91: 88 missing") as partial:
        build(BuildConfig(), tiny_root, tmp_path / "out", progress=False)
    assert "--skip-checksums" in partial.value.hint and not (tmp_path / "out").exists()


def test_a_wrong_data_root_says_where_it_looked(tmp_path):
    with pytest.raises(DataError, match="does not exist") as missing:
        build(BuildConfig(), tmp_path / "nowhere", tmp_path / "out", progress=False, check_sources=False)
    assert "--data-root" in missing.value.hint
    (tmp_path / "empty" / "train").mkdir(parents=True)
    with pytest.raises(DataError, match="'T91' not found"):
        build(BuildConfig(), tmp_path / "empty", tmp_path / "out", progress=False, check_sources=False)


def test_a_full_disk_leaves_no_set_that_looks_complete(tiny_root, tmp_path, monkeypatch):
    config = BuildConfig(train_sets=("T91",), patches_per_file=100)
    old = build(config, tiny_root, tmp_path / "x3", workers=1, progress=False, check_sources=False)
    real_write = build_module.write_patch_file
    calls = []

    def write_then_fill_the_disk(path, *arrays):
        calls.append(path)
        if len(calls) >= 3:  # the disk fills up during the third file
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        real_write(path, *arrays)

    monkeypatch.setattr(build_module, "write_patch_file", write_then_fill_the_disk)
    with pytest.raises(DataError, match="No space left on device") as failure:
        build(config, tiny_root, tmp_path / "x3", workers=1, force=True, progress=False, check_sources=False)
    assert "free disk space" in failure.value.hint
    with pytest.raises(DataError, match="No space left"):
        build(config, tiny_root, tmp_path / "fresh", workers=1, progress=False, check_sources=False)
    assert not (tmp_path / "fresh").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x3"]  # no partial folders left behind
    monkeypatch.setattr(build_module, "write_patch_file", real_write)
    again = build(config, tiny_root, tmp_path / "x3", workers=1, progress=False, check_sources=False)
    assert again.skipped  # the old set is intact
    kept = json.loads((tmp_path / "x3/manifest.json").read_text())
    assert kept["train"]["files"] == old.manifest["train"]["files"]


def test_an_interrupted_build_leaves_nothing_that_looks_complete(tiny_root, tmp_path, monkeypatch):
    def interrupt(path, *arrays):
        raise KeyboardInterrupt

    monkeypatch.setattr(build_module, "write_patch_file", interrupt)
    with pytest.raises(KeyboardInterrupt):
        build(BuildConfig(train_sets=("T91",)), tiny_root, tmp_path / "x3", progress=False,
              check_sources=False)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("stage, first_output", [("cutting", ".spill-train/*.bin"), ("writing", "train_000.h5")])
@pytest.mark.parametrize("stop", ["ctrl-c", "sigterm"])
def test_a_build_stopped_by_ctrl_c_or_sigterm_ends_at_once_and_removes_its_partial_folder(data_root, tmp_path,
                                                                                       stop, stage, first_output):
    """Ctrl-C reaches the whole process group, the workers too; SIGTERM (``timeout``, ``kill``) the main
    process only. Either way, while cutting or while writing, the build stops with status 130 and leaves no
    gigabytes behind. A build that does not end is made to print every thread's stack (faulthandler), so
    that the failure says where it waits."""
    import os
    import signal
    import subprocess
    import sys
    import time

    command = [sys.executable, "-m", "glrl", "data", "build", "--data-root", str(data_root), "--out",
               str(tmp_path / "x3"), "--train-sets", "T91", "--patches-per-file", "2048", "--workers", "2",
               "--quiet", "--skip-checksums"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               start_new_session=True, env={**os.environ, "PYTHONFAULTHANDLER": "1"})
    deadline = time.monotonic() + 60
    while not any(tmp_path.glob(f".x3.partial-*/{first_output}")):
        assert time.monotonic() < deadline and process.poll() is None, f"the build never began {stage}"
        time.sleep(0.02)
    if stop == "ctrl-c":
        os.killpg(process.pid, signal.SIGINT)
    else:
        process.send_signal(signal.SIGTERM)
    try:
        output, _ = process.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        process.send_signal(signal.SIGABRT)  # faulthandler prints the stacks, then the process dies
        output, _ = process.communicate(timeout=30)
        os.killpg(process.pid, signal.SIGKILL)
        pytest.fail(f"the build did not end within 60 s of {stop}:\n{output}")
    assert process.returncode == 130 and "interrupted" in output, output
    assert os.listdir(tmp_path) == []


def test_an_output_folder_that_is_not_a_patch_set_is_never_replaced(tiny_root, tmp_path):
    (tmp_path / "thesis").mkdir()
    (tmp_path / "thesis" / "chapter1.tex").write_text("precious")
    with pytest.raises(DataError, match="not a patch set built by glrl"):
        build(BuildConfig(train_sets=("T91",)), tiny_root, tmp_path / "thesis", progress=False,
              check_sources=False)
    assert (tmp_path / "thesis" / "chapter1.tex").read_text() == "precious"


def test_bad_settings_are_refused():
    with pytest.raises(DataError, match="label size"):
        BuildConfig(patch_size=21, label_size=31)
    with pytest.raises(DataError, match="scales"):
        BuildConfig(scales=(5,))
    with pytest.raises(DataError, match=r"the seed must lie in 0 \.\. 2\*\*32 - 1, not -1"):
        BuildConfig(seed=-1)


# --- the reader ------------------------------------------------------------------------------------------

def test_reader_serves_rows_in_list_order_across_files_with_wrap_around(built):
    stream = rows_of(built.out / "train.txt", "data")
    reader = CaffeHDF5Reader(built.out / "train.txt", batch_size=32)
    batches_per_two_epochs = 2 * len(stream) // 32 + 1
    for k in range(batches_per_two_epochs):
        data, label = next(reader)
        assert data.shape == (32, 1, 31, 31)
        assert np.array_equal(data, stream[(32 * k + np.arange(32)) % len(stream)])


def test_reader_ranks_split_rows_as_caffe_skip_does(built):
    stream = rows_of(built.out / "train.txt", "label")
    readers = [CaffeHDF5Reader(built.out / "train.txt", 32, rank=r, world_size=3) for r in range(3)]
    for k in range(150):
        for rank, reader in enumerate(readers):
            _, label = next(reader)
            rows = 3 * (32 * k + np.arange(32)) + rank
            assert np.array_equal(label, stream[rows % len(stream)])
    # a rank's position resumes: which of the rows left are its own depends on the rows passed so far
    saved = json.loads(json.dumps(readers[1].state()))
    resumed = CaffeHDF5Reader(built.out / "train.txt", 32, rank=1, world_size=3)
    resumed.set_state(saved)
    for _ in range(3):
        assert np.array_equal(next(resumed)[1], next(readers[1])[1])


def test_reader_shuffle_visits_every_row_of_each_file_once_per_pass(built):
    files = read_list_file(built.out / "train.txt")
    sizes = [h5py.File(str(p), "r")["origin"].shape[0] for p in files]
    reader = CaffeHDF5Reader(built.out / "train.txt", batch_size=1, tops=("origin",), shuffle=True)
    seen = np.concatenate([next(reader)[0] for _ in range(sum(sizes))])
    in_order = rows_of(built.out / "train.txt", "origin")
    assert sorted(map(tuple, seen.tolist())) == sorted(map(tuple, in_order.tolist()))
    assert not np.array_equal(seen, in_order)


@pytest.mark.skipif(ctypes.util.find_library("c") is None, reason="needs the C library")
def test_shuffle_random_stream_is_glibc_rand():
    libc = ctypes.CDLL(ctypes.util.find_library("c"))
    if not hasattr(libc, "gnu_get_libc_version"):
        pytest.skip("not glibc")
    for seed in (1, 0, 12345):
        libc.srand(seed)
        ours = GlibcRand(seed)
        assert [ours() for _ in range(2000)] == [libc.rand() for _ in range(2000)]


def test_shuffle_is_libstdcxx_random_shuffle_on_that_stream():
    """Caffe's HDF5Data shuffles with std::random_shuffle; after srand(1), g++'s gives these two orders."""
    stream = GlibcRand(1)
    first, second = np.arange(10), np.arange(10)
    stream.random_shuffle(first)
    stream.random_shuffle(second)
    assert (first.tolist(), second.tolist()) == ([4, 3, 7, 8, 0, 5, 2, 1, 6, 9], [4, 5, 2, 3, 0, 1, 9, 6, 7, 8])


def test_torch_batches_match_the_numpy_batches(built):
    torch = pytest.importorskip("torch")
    from glrl.data_prep.reader import torch_batches

    plain = CaffeHDF5Reader(built.out / "train.txt", batch_size=32)
    tensors = torch_batches(CaffeHDF5Reader(built.out / "train.txt", batch_size=32), device="cpu")
    for _ in range(40):
        data, label = next(tensors)
        want_data, want_label = next(plain)
        assert isinstance(data, torch.Tensor) and torch.equal(data, torch.from_numpy(want_data))
        assert torch.equal(label, torch.from_numpy(want_label))
    tensors.close()


CAFFE_BATCHES = """
import numpy, caffe
caffe.set_mode_cpu()
LAYER = ('layer { name: "d" type: "HDF5Data" top: "data" top: "label" include { phase: TRAIN } '
         'hdf5_data_param { source: "SOURCE" batch_size: 32 shuffle: %s } }')
for shuffle in ("false", "true"):
    with open("net.prototxt", "w") as net_file:
        net_file.write(LAYER % shuffle)
    net = caffe.Net("net.prototxt", caffe.TRAIN)
    batches = []
    for _ in range(40):
        net.forward()
        batches.append([net.blobs["data"].data.copy(), net.blobs["label"].data.copy()])
    numpy.save("caffe_%s.npy" % shuffle, numpy.array(batches))
"""


@pytest.mark.oracle
def test_real_caffe_hdf5data_returns_the_readers_batches_in_order_and_shuffled(tiny_root, tmp_path, caffe_root):
    from glrl import oracle

    with oracle.RootSession() as session:
        # 360 patches in 4 files (100, 100, 100, 60): 40 batches of 32 wrap around three times
        result = build(BuildConfig(train_sets=("T91",), val_set="", patches_per_file=100), tiny_root,
                       session.path / "set", workers=1, progress=False, check_sources=False)
        names = [f["name"] for f in result.manifest["train"]["files"]]
        (session.path / "inside.txt").write_text("".join(f"{session.inside}/set/{n}\n" for n in names))
        session.run_python(CAFFE_BATCHES.replace("SOURCE", f"{session.inside}/inside.txt"))
        for shuffle in (False, True):
            caffe = np.load(str(session.path / f"caffe_{str(shuffle).lower()}.npy"))
            reader = CaffeHDF5Reader(result.out / "train.txt", batch_size=32, shuffle=shuffle)
            ours = np.array([list(next(reader)) for _ in range(40)])
            assert np.array_equal(ours, caffe), f"shuffle={shuffle}"


def test_reader_explains_a_missing_list_file(tmp_path):
    with pytest.raises(DataError, match="list file"):
        CaffeHDF5Reader(tmp_path / "train.txt", batch_size=32)


def test_reader_finds_relative_paths_and_names_each_bad_file(tmp_path, monkeypatch):
    def write(name, data_rows, label_rows, width=2):
        with h5py.File(str(tmp_path / "set" / name), "w") as h5:
            h5["data"] = np.arange(data_rows * width, dtype=np.float32).reshape(data_rows, 1, width)
            if label_rows:
                h5["label"] = np.zeros((label_rows, 2), np.float32)

    def reader_of(*names):
        (tmp_path / "set" / "list.txt").write_text("\n".join(names))
        return CaffeHDF5Reader("list.txt", 2, search_dirs=[tmp_path / "set"])

    (tmp_path / "set").mkdir()
    monkeypatch.chdir(tmp_path)  # the list is found in search_dirs, its entries beside it
    write("a.h5", 3, 3)
    assert next(reader_of("a.h5"))[0].tolist() == [[[0, 1]], [[2, 3]]]
    with pytest.raises(DataError, match="gone.h5 named in .*list.txt was not found"):
        reader_of("a.h5", "gone.h5")
    write("wide.h5", 3, 3, width=3)
    with pytest.raises(DataError, match="wide.h5 have shapes"):
        reader_of("a.h5", "wide.h5")
    write("uneven.h5", 3, 2)
    with pytest.raises(DataError, match="uneven.h5: datasets data, label have unequal"):
        reader_of("uneven.h5")
    write("nolabel.h5", 3, 0)
    with pytest.raises(DataError, match="nolabel.h5 has no dataset 'label'"):
        reader_of("a.h5", "nolabel.h5")
    with h5py.File(str(tmp_path / "set" / "empty.h5"), "w") as h5:  # a reader of it would wait for rows forever
        h5["data"], h5["label"] = np.zeros((0, 1, 2), np.float32), np.zeros((0, 2), np.float32)
    with pytest.raises(DataError, match="empty.h5: datasets data, label have unequal or zero row counts"):
        reader_of("a.h5", "empty.h5")


# --- inspect and the command line ------------------------------------------------------------------------

def test_inspect_reports_counts_shapes_ranges_and_draws_pairs(built, tmp_path):
    report = inspect(built.out, tmp_path / "m.png", samples=8, verify=True)
    assert not report.problems
    report = report.text
    patches = built.manifest["train"]["patches"]
    assert re.search(rf"label +{patches} x 1x31x31 +float32 +min +0\.\d+ +max +0\.\d+", report)
    assert "manifest: sizes and SHA-256 match" in report
    assert f"content SHA-256 (a released model's data_manifest_sha256): {content_sha256(built.manifest)}" in report
    from PIL import Image

    mosaic = np.asarray(Image.open(tmp_path / "m.png"))
    assert mosaic.ndim == 2 and mosaic.shape[0] > 31 * 4 and mosaic.shape[1] > 8 * 31 * 4 / 2


def test_command_line_build_then_up_to_date_then_bad_root(tiny_root, tmp_path, capsys):
    args = ["data", "build", "--data-root", str(tiny_root), "--out", str(tmp_path / "x3"),
            "--train-sets", "T91", "--workers", "1", "--quiet", "--skip-checksums"]
    assert cli.main(args) == 0
    assert "train:" in capsys.readouterr().out
    assert cli.main(args) == 0
    assert "up to date" in capsys.readouterr().out
    assert cli.main(["data", "build", "--data-root", str(tmp_path / "nowhere"), "--quiet"]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert cli.main(["data", "inspect", str(tmp_path / "x3" / "train.txt"), "--no-mosaic"]) == 0
    assert "train.txt: " in capsys.readouterr().out


@pytest.fixture(scope="module")
def packed_root(tiny_root: Path, tmp_path_factory) -> Path:
    """The tiny root as `glrl data pack` writes it: T91 and BSD200 as luma packs, Set5 copied."""
    root = tmp_path_factory.mktemp("packed")
    assert cli.main(["data", "pack", "--data-root", str(tiny_root), "--out", str(root), "--skip-checksums"]) == 0
    return root


def test_a_patch_set_built_from_luma_packs_is_the_one_built_from_the_images(built, packed_root, tmp_path):
    assert sorted(p.name for p in (packed_root / "train").iterdir()) == ["BSD200.luma.h5", "T91.luma.h5"]
    assert [p.name for p in (packed_root / "test" / "Set5").iterdir()] == ["butterfly.png"]
    from_packs = build(BuildConfig(scales=(2, 3, 4), patches_per_file=1000), packed_root, tmp_path / "x234",
                       workers=2, progress=False, check_sources=False)
    assert from_packs.manifest["sources"] == built.manifest["sources"]
    assert content_sha256(from_packs.manifest) == content_sha256(built.manifest)


def test_a_luma_pack_is_checked_against_the_published_checksums_of_its_files(data_root, tmp_path):
    assert cli.main(["data", "pack", "--data-root", str(data_root), "--out", str(tmp_path), "--sets", "Set5",
                     "--copy", "none"]) == 0
    pack = tmp_path / "test" / "Set5.luma.h5"
    config = BuildConfig(train_sets=("Set5",), val_set="", augment=False)
    assert plan(config, tmp_path)["train"]["images"] == 5
    with h5py.File(pack, "r+") as handle:
        handle["baby.png"].attrs["source_sha256"] = "0" * 64
    with pytest.raises(DataError, match="not the published Set5: 1 altered"):
        plan(config, tmp_path)


def test_a_damaged_luma_pack_fails_naming_the_pack_and_the_image(packed_root, tmp_path):
    damaged = tmp_path / "train" / "T91.luma.h5"
    damaged.parent.mkdir()
    shutil.copy(packed_root / "train" / "T91.luma.h5", damaged)
    with h5py.File(damaged, "r") as handle:
        chunk = handle["t20.bmp"].id.get_chunk_info(0)
    with open(damaged, "r+b") as handle:
        handle.seek(chunk.byte_offset + chunk.size // 2)
        byte = handle.read(1)
        handle.seek(-1, 1)
        handle.write(bytes([byte[0] ^ 0xFF]))
    config = BuildConfig(train_sets=("T91",), val_set="", augment=False)
    with pytest.raises(DataError, match=r"t20\.bmp from the luma pack .*T91\.luma\.h5"):
        build(config, tmp_path, tmp_path / "x3", workers=2, progress=False, check_sources=False)
    assert not (tmp_path / "x3").exists()


def test_packing_into_a_place_that_cannot_be_written_says_so(tiny_root, tmp_path, capsys):
    (tmp_path / "file").write_text("")
    assert cli.main(["data", "pack", "--data-root", str(tiny_root), "--out", str(tmp_path / "file" / "root"),
                     "--skip-checksums"]) == 2
    assert "cannot write the luma pack" in capsys.readouterr().err


def test_packing_finds_every_set_before_it_writes_anything_and_refuses_to_pack_nothing(tiny_root, tmp_path,
                                                                                        capsys):
    common = ["data", "pack", "--data-root", str(tiny_root), "--out", str(tmp_path / "out"), "--skip-checksums"]
    assert cli.main([*common, "--sets", "T91", "--copy", "Set55"]) == 2
    assert "image set 'Set55' not found" in capsys.readouterr().err and not (tmp_path / "out").exists()
    assert cli.main([*common, "--sets", ",", "--copy", "none"]) == 2
    assert "nothing to pack" in capsys.readouterr().err


def test_down_scaled_copies_need_the_colour_images_not_a_luma_pack(packed_root, tmp_path):
    """Refused when planned: the build cuts nothing, and a dry run does not promise a set it cannot build."""
    from glrl.data_prep.build import plan

    config = BuildConfig(train_sets=("T91",), val_set="", downscales=(0.7,))
    with pytest.raises(DataError, match="luma pack holds no colour"):
        plan(config, packed_root, check_sources=False)
    with pytest.raises(DataError, match="luma pack holds no colour"):
        build(config, packed_root, tmp_path / "ds", workers=1, progress=False, check_sources=False)
    assert list(tmp_path.iterdir()) == []


# --- bad input, continued ----------------------------------------------------------------------------------

def write_h5(path: Path, rows: int, width: int = 2) -> Path:
    with h5py.File(str(path), "w") as h5:
        h5["data"] = np.arange(rows * width, dtype=np.float32).reshape(rows, 1, width)
        h5["label"] = np.zeros((rows, 1, width), np.float32)
    return path


@pytest.mark.parametrize("settings, problem", [
    (dict(scales=(3, 3)), "scales repeat: (3, 3)"),
    (dict(layout="espcn"), "layout must be one of ('vdsr', 'srcnn'), not 'espcn'"),
    (dict(patch_size=33, label_size=20), "patch size minus label size must be even"),
    (dict(stride=0), "stride must be positive, not 0"),
    (dict(downscales=(0.9, 1.2)), "down-scale factors must lie in (0, 1), not (0.9, 1.2)"),
    (dict(patches_per_file=0), "patches per file must be positive, not 0"),
    (dict(train_sets=()), "no training sets named"),
], ids=["repeated_scales", "layout", "odd_margin", "stride", "downscales", "patches_per_file",
        "train_sets"])
def test_each_bad_setting_is_refused_naming_the_setting(settings, problem):
    with pytest.raises(DataError) as refused:
        BuildConfig(**settings)
    assert problem in refused.value.message and "glrl data build --help" in refused.value.hint


def test_every_bad_setting_is_named_at_once_and_an_unknown_scale_says_which_exist():
    from glrl.data_prep.config import parse_scales

    with pytest.raises(DataError, match="stride must be positive, not -1; no training sets named"):
        BuildConfig(stride=-1, train_sets=())
    assert parse_scales("2,3,4") == (2, 3, 4)
    with pytest.raises(DataError, match="unknown scale '5'") as unknown:
        parse_scales("5")
    assert "234" in unknown.value.hint


def test_images_too_small_for_one_patch_are_refused_and_nothing_is_written(tiny_root, tmp_path):
    with pytest.raises(DataError, match="the train images yield no 301x301 patches") as refused:
        build(BuildConfig(train_sets=("T91",), patch_size=301, label_size=301), tiny_root, tmp_path / "x3",
              workers=1, progress=False, check_sources=False)
    assert "smaller --patch-size" in refused.value.hint
    assert list(tmp_path.iterdir()) == []


def test_an_output_folder_that_cannot_be_made_is_named(tiny_root, tmp_path):
    (tmp_path / "a-file").write_text("")
    with pytest.raises(DataError, match=f"cannot create the output folder {tmp_path / 'a-file' / 'x3'}") as refused:
        build(BuildConfig(train_sets=("T91",)), tiny_root, tmp_path / "a-file" / "x3", workers=1, progress=False,
              check_sources=False)
    assert "--out" in refused.value.hint


def test_a_build_removes_what_dead_builds_left_and_keeps_what_a_running_one_writes(tiny_root, tmp_path):
    dead = tmp_path / ".x3.partial-999999999"  # above any pid_max: no such process
    running = tmp_path / ".x3.partial-1"  # init: alive
    for folder in (dead, running):
        folder.mkdir()
        (folder / "train_000.h5").write_bytes(b"half written")
    build(BuildConfig(train_sets=("T91",), val_set=""), tiny_root, tmp_path / "x3", workers=1, progress=False,
          check_sources=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == [".x3.partial-1", "x3"]


def test_an_image_that_changes_size_during_the_build_is_named_and_nothing_is_written(tiny_root, tmp_path,
                                                                                     monkeypatch):
    from PIL import Image

    root = tmp_path / "root"
    shutil.copytree(tiny_root, root)
    real_list_sources = build_module.list_sources

    def list_then_crop(data_root, names, check):
        sources = real_list_sources(data_root, names, check)
        image = root / "train/T91/t20.bmp"  # replaced by a smaller picture once its size was taken
        with Image.open(image) as picture:
            cropped = picture.crop((0, 0, picture.width - 3, picture.height))
        cropped.save(image)
        return sources

    monkeypatch.setattr(build_module, "list_sources", list_then_crop)
    with pytest.raises(DataError, match="t20.bmp changed size while the patch set was being built"):
        build(BuildConfig(train_sets=("T91",), val_set=""), root, tmp_path / "x3", workers=1, progress=False,
              check_sources=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["root"]


def test_a_write_error_h5py_reports_as_runtimeerror_fails_the_build_like_a_full_disk(tiny_root, tmp_path,
                                                                                    monkeypatch):
    def failing_write(self, name, **kwargs):
        raise RuntimeError("Can't write data (file write failed)")

    monkeypatch.setattr(h5py.Group, "create_dataset", failing_write)
    with pytest.raises(DataError, match=r"failed: train_000.h5: Can't write data") as refused:
        build(BuildConfig(train_sets=("T91",), val_set=""), tiny_root, tmp_path / "x3", workers=1,
              progress=False, check_sources=False)
    assert "free disk space" in refused.value.hint
    assert list(tmp_path.iterdir()) == []


def test_a_patch_file_that_cannot_be_written_leaves_no_temporary_file(tmp_path):
    with pytest.raises(TypeError):
        write_patch_file(tmp_path / "a.h5", np.array([object()]), np.zeros(1), np.zeros(1))
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("content, message", [
    (b"", "names no files"),
    (b"\x89HDF\r\n\x1a\n\x00\x00", "is not text: an HDF5Data source names a list file"),
], ids=["empty", "hdf5_file"])
def test_a_list_file_that_is_empty_or_not_text_is_refused_naming_it(tmp_path, content, message):
    (tmp_path / "train.txt").write_bytes(content)
    with pytest.raises(DataError, match=message) as refused:
        read_list_file(tmp_path / "train.txt")
    assert str(tmp_path / "train.txt") in refused.value.message


def test_reader_names_a_damaged_or_non_numeric_patch_file(tmp_path):
    write_h5(tmp_path / "a.h5", 4)
    (tmp_path / "junk.h5").write_bytes(b"not an HDF5 file")
    with h5py.File(str(tmp_path / "words.h5"), "w") as h5:
        h5["data"], h5["label"] = np.array([b"x", b"y"]), np.zeros((2, 1), np.float32)
    with pytest.raises(DataError, match=f"cannot read the HDF5 patch file {tmp_path / 'junk.h5'}") as damaged:
        CaffeHDF5Reader([tmp_path / "a.h5", tmp_path / "junk.h5"], 2)
    assert "glrl data build --force" in damaged.value.hint
    with pytest.raises(DataError, match="dataset 'data' of .*words.h5 must be a numeric array"):
        CaffeHDF5Reader([tmp_path / "words.h5"], 2)


def test_a_patch_file_damaged_after_the_reader_started_is_named_when_its_rows_are_needed(tmp_path):
    torch = pytest.importorskip("torch")
    from glrl.data_prep.reader import torch_batches

    files = [write_h5(tmp_path / "a.h5", 4), write_h5(tmp_path / "b.h5", 4)]
    reader, behind_a_thread = CaffeHDF5Reader(files, 4), CaffeHDF5Reader(files, 4)
    files[1].write_bytes(b"overwritten")
    assert next(reader)[0].shape == (4, 1, 2)
    with pytest.raises(DataError, match=f"cannot read the HDF5 patch file {files[1]}") as damaged:
        next(reader)
    assert "changed or damaged since the reader started" in damaged.value.hint
    tensors = torch_batches(behind_a_thread)
    assert isinstance(next(tensors)[0], torch.Tensor)
    with pytest.raises(DataError, match="b.h5"):  # raised in the consumer, not lost in the thread
        next(tensors)
    tensors.close()


@pytest.mark.parametrize("settings, message", [
    (dict(batch_size=0), "batch size must be positive, not 0"),
    (dict(batch_size=32, world_size=3, split="slice"), "the batch of 32 rows does not split evenly over 3"),
    (dict(batch_size=2, rank=2, world_size=2), "rank 2 is not in 0..1"),
    (dict(batch_size=2, split="random"), "unknown split 'random'"),
], ids=["batch_size", "uneven_slices", "rank", "split"])
def test_reader_settings_that_cannot_be_served_are_refused(tmp_path, settings, message):
    with pytest.raises(DataError, match=message):
        CaffeHDF5Reader([write_h5(tmp_path / "a.h5", 4)], **settings)


def test_reader_refuses_no_files_and_a_position_saved_on_other_data(tmp_path):
    with pytest.raises(DataError, match="no HDF5 files given"):
        CaffeHDF5Reader([], 2)
    before = CaffeHDF5Reader([write_h5(tmp_path / "a.h5", 4)], 2)
    saved = before.state()
    rebuilt = CaffeHDF5Reader([write_h5(tmp_path / "a.h5", 6)], 2)
    with pytest.raises(DataError, match=r"changed since the reading position was saved \(4 rows then, 6 now\)"):
        rebuilt.set_state(saved)


def test_inspect_refuses_what_is_no_patch_file_and_fails_on_a_set_unfit_to_train_on(built, tmp_path, capsys):
    import shutil

    def h5(name: str, **datasets) -> Path:
        with h5py.File(str(tmp_path / name), "w") as handle:
            for key, value in datasets.items():
                handle[key] = value
        return tmp_path / name

    other = h5("other.h5", foo=np.zeros((2, 1, 3, 3), np.float32))
    empty = h5("empty.h5", data=np.zeros((0, 1, 3, 3), np.float32), label=np.zeros((0, 1, 3, 3), np.float32))
    for path, message in ((other, "has no dataset 'data'"), (empty, "unequal or zero row counts")):
        assert cli.main(["data", "inspect", str(path), "--no-mosaic"]) == 2
        assert message in capsys.readouterr().err
    nan = np.full((2, 1, 3, 3), 0.5, np.float32)
    nan[1, 0, 1, 1] = np.nan
    assert cli.main(["data", "inspect", str(h5("nan.h5", data=nan, label=nan)), "--no-mosaic"]) == 1
    assert "1 NaN/Inf values" in capsys.readouterr().out
    copy = tmp_path / "copy"
    shutil.copytree(built.out, copy)  # its lists name the original's files
    assert cli.main(["data", "inspect", str(copy), "--no-mosaic"]) == 1
    assert f"names {built.out}" in capsys.readouterr().out
    assert cli.main(["data", "inspect", str(built.out), "--no-mosaic", "--verify"]) == 0
    assert cli.main(["data", "inspect", str(built.out), "--mosaic", str(tmp_path / "m.jpg")]) == 2
    assert "the mosaic is a PNG" in capsys.readouterr().err
