"""``glrl data build``: cut, augment, globally shuffle and write the HDF5 patch sets, streaming.

Design (see ``docs/training-data.md``):

1. **Plan.** Every source image is decoded once for its size; from sizes alone the patch count of every
   image (all transforms and scales) is known, so each patch gets a *global index* in a canonical order
   (image, down-scale, transform, scale, row-major position).
2. **Shuffle by position.** ``numpy.random.RandomState(seed).permutation(N)`` maps global index to output
   position (8 bytes per patch of memory, ~1000x less than the patches); output file ``k`` holds positions
   ``[k * P, (k + 1) * P)``. The result depends only on the settings, not on worker count or timing.
3. **Cut (pass 1).** Worker processes cut the patches of one image each; the main process appends each
   patch, tagged with its position, to the spill file of its output file. At most ``2 * workers`` images
   are in flight, so memory stays bounded.
4. **Write (pass 2).** Each spill file (one output file's worth) is read, ordered by position and written
   as an HDF5 file; the spill is deleted.

Everything is written into ``.<name>.partial-<pid>`` beside the output folder, manifest last, and renamed
into place only when complete: an interrupted or failed build leaves no folder that looks finished.
"""
from __future__ import annotations

import collections
import concurrent.futures
import contextlib
import dataclasses
import math
import multiprocessing
import os
import resource
import shutil
import signal
import sys
import time
from pathlib import Path
from typing import Any, Deque, Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np

from glrl import __version__
from glrl.data_prep import manifest as manifest_io
from glrl.data_prep.config import BuildConfig
from glrl.data_prep.h5file import write_patch_file
from glrl.data_prep.patches import cut_patches, interpolated_pair, patch_count
from glrl.data_prep.sources import SourceImage, augmented_luminances, list_sources, refuse_shrinking_packs
from glrl.errors import DataError
from glrl.fsutil import atomic_write_text, replace_folder
from glrl.matlab_compat import output_size
from glrl.signals import StopSignals

ORIGIN_COLUMNS = ("image", "downscale", "transform", "scale", "row", "col")


@dataclasses.dataclass(frozen=True)
class PartSpec:
    """How one part of the set (``train`` or ``val``) is cut and laid out."""

    name: str
    scales: Tuple[int, ...]
    transforms: Tuple[int, ...]
    factors: Tuple[float, ...]
    patch_size: int
    label_size: int
    stride: int
    shuffle: bool
    seed: int
    patches_per_file: int

    def record_dtype(self) -> np.dtype:
        p, q = self.patch_size, self.label_size
        return np.dtype([("position", "<i8"), ("data", "<f4", (1, p, p)), ("label", "<f4", (1, q, q)),
                         ("origin", "<i4", (len(ORIGIN_COLUMNS),))])


def part_specs(config: BuildConfig) -> List[PartSpec]:
    """The training part as configured and, when a validation set is named, its un-augmented, unshuffled
    counterpart."""
    common = dict(scales=config.scales, patch_size=config.patch_size, label_size=config.label_size,
                  stride=config.stride, seed=config.seed, patches_per_file=config.patches_per_file)
    specs = [PartSpec("train", transforms=config.transforms, factors=config.image_scales,
                      shuffle=config.shuffle, **common)]
    if config.val_set:
        specs.append(PartSpec("val", transforms=(0,), factors=(1.0,), shuffle=False, **common))
    return specs


@dataclasses.dataclass(frozen=True)
class Job:
    """The patches of one (possibly down-scaled) source image: global indices ``[first, first + count)``."""

    image_index: int
    path: Path
    factor_index: int
    factor: float
    height: int
    width: int
    first: int
    count: int


def image_patch_count(height: int, width: int, spec: PartSpec) -> int:
    """Patches of one image over all transforms (quarter turns swap height and width) and scales."""
    total = 0
    for transform in spec.transforms:
        rows, cols = (height, width) if transform % 2 == 0 else (width, height)
        total += sum(patch_count(rows, cols, s, spec.patch_size, spec.stride) for s in spec.scales)
    return total


def plan_jobs(sources: Sequence[SourceImage], spec: PartSpec) -> List[Job]:
    """Every image's job (one per down-scale factor), with its patches' global indices."""
    refuse_shrinking_packs(sources, spec.factors)
    jobs: List[Job] = []
    first = 0
    for image_index, source in enumerate(sources):
        for factor_index, factor in enumerate(spec.factors):
            height, width = output_size((source.height, source.width), factor)  # factor 1: the image's own
            count = image_patch_count(height, width, spec)
            jobs.append(Job(image_index, source.path, factor_index, factor, height, width, first, count))
            first += count
    return jobs


def cut_job(job: Job, spec: PartSpec) -> np.ndarray:
    """All patches of ``job`` as records in global-index order (``position`` not yet filled in)."""
    records = np.empty(job.count, dtype=spec.record_dtype())
    filled = 0
    turned_images = augmented_luminances(job.path, spec.transforms, job.factor)
    for transform, turned in zip(spec.transforms, turned_images):
        planned = (job.height, job.width) if transform % 2 == 0 else (job.width, job.height)
        if turned.shape != planned:
            raise DataError(f"{job.path} changed size while the patch set was being built",
                            hint="do not modify the data root during a build; run it again")
        for scale in spec.scales:
            inputs, labels, starts = cut_patches(*interpolated_pair(turned, scale), spec.patch_size,
                                                 spec.label_size, spec.stride)
            block = records[filled:filled + len(starts)]
            block["data"][:, 0] = inputs
            block["label"][:, 0] = labels
            block["origin"] = np.column_stack([
                np.full(len(starts), job.image_index), np.full(len(starts), job.factor_index),
                np.full(len(starts), transform), np.full(len(starts), scale), starts])
            filled += len(starts)
    if filled != job.count:
        raise AssertionError(f"{job.path}: cut {filled} patches, planned {job.count}")
    return records


def cut_all(jobs: Sequence[Job], spec: PartSpec, workers: int) -> Iterator[Tuple[Job, np.ndarray]]:
    """``(job, records)`` in job order, computed by ``workers`` processes (in-process when ``workers <= 1``
    or where processes cannot be started) with at most ``2 * workers`` jobs in flight.

    A job that fails (an unreadable image) raises here; the jobs still running finish and the rest are
    cancelled before the error goes on. (``multiprocessing.Pool``, used before, could hang for good in
    ``terminate()`` when an error left its ``with`` block with tasks in flight: about 1 build in 15.)"""
    method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
    try:
        executor = (concurrent.futures.ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context(method),
                                                           initializer=_leave_signals_to_the_main_process)
                    if workers > 1 else None)
    except OSError as exc:  # e.g. no /dev/shm for the pool's semaphores in a bare chroot
        print(f"warning: cannot start {workers} worker processes ({exc}); cutting in this process",
              file=sys.stderr)
        executor = None
    if executor is None:
        for job in jobs:
            yield job, cut_job(job, spec)
        return
    pending: Deque[Tuple[Job, "concurrent.futures.Future[np.ndarray]"]] = collections.deque()
    try:
        for job in jobs:
            pending.append((job, executor.submit(cut_job, job, spec)))
            if len(pending) >= 2 * workers:
                done, future = pending.popleft()
                yield done, future.result()
        while pending:
            done, future = pending.popleft()
            yield done, future.result()
    finally:
        executor.shutdown(wait=True, cancel_futures=True)


def _leave_signals_to_the_main_process() -> None:
    """A worker ignores Ctrl-C (which the terminal sends to the whole process group) and takes SIGTERM's
    default: the main process stops the build. A worker interrupted while it sent a result left the main
    process waiting on the pipe for good."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


def _progress(total: int, desc: str, enabled: bool):
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="patch", unit_scale=True, disable=not enabled, file=sys.stderr)


def write_part(
    sources: Sequence[SourceImage], spec: PartSpec, folder: Path, final_folder: Path, workers: int,
    progress: bool, stop: StopSignals,
) -> Dict[str, Any]:
    """Cut, shuffle and write one part into ``folder``; its list file names the files in ``final_folder``.
    Returns the part's manifest entry; raises KeyboardInterrupt after the image or file during which
    ``stop`` was requested."""
    jobs = plan_jobs(sources, spec)
    total = sum(job.count for job in jobs)
    if total == 0:
        raise DataError(f"the {spec.name} images yield no {spec.patch_size}x{spec.patch_size} patches",
                        hint="use larger images or a smaller --patch-size")
    per_file = spec.patches_per_file
    n_files = math.ceil(total / per_file)
    positions = np.random.RandomState(spec.seed).permutation(total) if spec.shuffle else np.arange(total)
    spill = folder / f".spill-{spec.name}"
    spill.mkdir()
    spill_paths = [spill / f"{k:05d}.bin" for k in range(n_files)]

    with _progress(total, f"{spec.name}: cutting", progress) as bar, \
            contextlib.closing(cut_all(jobs, spec, workers)) as cuts:  # the pool ends before the folder goes
        for job, records in cuts:
            stop.raise_if_received()
            records["position"] = positions[job.first:job.first + job.count]
            records = records[np.argsort(records["position"] // per_file, kind="stable")]
            buckets = records["position"] // per_file
            for chunk in np.split(records, np.flatnonzero(np.diff(buckets)) + 1):
                with open(spill_paths[int(chunk["position"][0] // per_file)], "ab") as handle:
                    handle.write(chunk.tobytes())
            bar.update(job.count)
    del positions

    files = []
    with _progress(total, f"{spec.name}: writing", progress) as bar:
        for k, spill_path in enumerate(spill_paths):
            records = np.fromfile(str(spill_path), dtype=spec.record_dtype())
            order = np.argsort(records["position"])
            expected = np.arange(k * per_file, min((k + 1) * per_file, total))
            if not np.array_equal(records["position"][order], expected):
                raise AssertionError(f"spill file {spill_path} does not hold exactly positions of file {k}")
            path = folder / f"{spec.name}_{k:03d}.h5"
            columns = (np.take(records[name], order, axis=0) for name in ("data", "label", "origin"))
            write_patch_file(path, *columns)
            files.append(manifest_io.file_record(path, len(records)))
            spill_path.unlink()
            bar.update(len(records))
            del records, order
            stop.raise_if_received()
    spill.rmdir()
    list_path = folder / f"{spec.name}.txt"
    atomic_write_text(list_path, "".join(f"{final_folder / f['name']}\n" for f in files))
    return {"patches": total, "files": files, "list": manifest_io.file_record(list_path, total),
            "images": len(sources), "transforms": list(spec.transforms), "downscales": list(spec.factors),
            "shuffled": spec.shuffle}


def _peak_rss_mib(workers: int) -> Dict[str, Optional[float]]:
    """Peak resident memory (MiB) of this process and, when there were workers, of the largest finished
    child process (a forked worker's count includes the pages it shares with this process)."""
    to_mib = 1 / 1024 if sys.platform != "darwin" else 1 / (1024 * 1024)
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * to_mib if workers > 1 else None
    return {"main": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * to_mib, 1),
            "workers": None if children is None else round(children, 1)}


def _remove_stale_partials(out: Path) -> None:
    """Delete ``.<name>.partial-<pid>`` folders left by builds whose process no longer exists."""
    for folder in out.parent.glob(f".{out.name}.partial-*"):
        pid = folder.name.rsplit("-", 1)[-1]
        if pid.isdigit() and not _process_alive(int(pid)):
            shutil.rmtree(folder, ignore_errors=True)


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


HDF5_FILE_OVERHEAD = 2048  # bytes of an h5py file with our three contiguous datasets, besides their data


def plan(config: BuildConfig, data_root: Path, check_sources: bool = True) -> Dict[str, Dict[str, int]]:
    """Per part: images, patches, files and bytes the set will have, from image sizes alone (cuts nothing)."""
    summary = {}
    for spec in part_specs(config):
        names = config.train_sets if spec.name == "train" else (config.val_set,)
        sources = list_sources(data_root, names, check_sources)
        patches = sum(job.count for job in plan_jobs(sources, spec))
        files = math.ceil(patches / spec.patches_per_file)
        summary[spec.name] = {"images": len(sources), "patches": patches, "files": files,
                              "bytes": patches * spec.record_dtype().itemsize - 8 * patches
                              + HDF5_FILE_OVERHEAD * files}
    return summary


@dataclasses.dataclass
class BuildResult:
    out: Path
    manifest: Dict[str, Any]
    skipped: bool  # the folder already held this exact set


def build(
    config: BuildConfig, data_root: Path, out: Path, workers: Optional[int] = None, force: bool = False,
    progress: bool = True, check_sources: bool = True,
) -> BuildResult:
    """Build the patch set of ``config`` from the images under ``data_root`` into the folder ``out``
    (registered image sets must match their published checksums unless ``check_sources`` is off)."""
    out = Path(out).resolve()
    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and manifest_io.load(out) is None)):
        raise DataError(f"{out} exists and is not a patch set built by glrl; refusing to replace it",
                        hint="choose another --out, or delete it yourself if it is an old, damaged set")
    workers = workers if workers is not None else len(os.sched_getaffinity(0))
    specs = part_specs(config)
    sources = {spec.name: list_sources(data_root, config.train_sets if spec.name == "train" else
                                       (config.val_set,), check_sources) for spec in specs}
    source_records = {name: [s.record() for s in images] for name, images in sources.items()}
    settings = config.to_dict()
    if not force and manifest_io.is_current(out, settings, source_records):
        return BuildResult(out, manifest_io.load(out) or {}, skipped=True)

    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        _remove_stale_partials(out)
        partial = out.parent / f".{out.name}.partial-{os.getpid()}"
        shutil.rmtree(partial, ignore_errors=True)
        partial.mkdir()
    except OSError as exc:
        raise DataError(f"cannot create the output folder {out}: {exc.strerror or exc}",
                        hint="choose a writable place with --out (or set GLRL_WORK)") from exc
    started = time.time()
    with StopSignals() as stop:
        try:
            manifest: Dict[str, Any] = {"format": manifest_io.FORMAT, "glrl_version": __version__,
                                        "settings": settings, "sources": source_records,
                                        "datasets": {"data": [1, config.patch_size, config.patch_size],
                                                     "label": [1, config.label_size, config.label_size],
                                                     "origin": list(ORIGIN_COLUMNS)}}
            for spec in specs:
                manifest[spec.name] = write_part(sources[spec.name], spec, partial, out, workers, progress,
                                                stop)
            manifest["build"] = {"seconds": round(time.time() - started, 1), "workers": workers,
                                 "peak_rss_mib": _peak_rss_mib(workers),
                                 "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
            manifest_io.save(partial, manifest)
            replace_folder(partial, out)
        except OSError as exc:
            shutil.rmtree(partial, ignore_errors=True)
            raise DataError(f"writing the patch set into {partial} failed: {exc.strerror or exc}",
                            hint="free disk space or choose another place with --out; nothing was kept") from exc
        except BaseException:
            shutil.rmtree(partial, ignore_errors=True)
            raise
    return BuildResult(out, manifest, skipped=False)
