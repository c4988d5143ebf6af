"""The manifest (``manifest.json``) written last into a patch-set folder: settings, source-image checksums,
every output file with its patch count, size and SHA-256, and how the build went.

Why: a rebuild with the same settings and the same source images is skipped only when every file the
manifest lists is still there with its recorded checksum (re-hashed only for files whose size or
modification time differs from the record, so the check takes seconds, not a pass over gigabytes); a
folder without a manifest (an interrupted build) is never trusted.

:func:`content_sha256` names the patches themselves: two builds of the same settings from the same images
have the same one wherever and whenever they ran, so a released model's ``data_manifest_sha256`` can be
matched against a user's own build (``glrl data inspect`` prints it). A training run keeps a copy of its set's
manifest (:data:`RUN_COPY_NAME`), so the hash travels with the run folder to machines that never had the set.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Dict, List, Optional

from glrl.fsutil import atomic_write_text, sha256_file

MANIFEST_NAME = "manifest.json"
RUN_COPY_NAME = "data-manifest.json"  # the copy a run folder keeps of its patch set's manifest
FORMAT = "glrl-caffe-hdf5-patches/1"
PARTS = ("train", "val")  # the parts a set may hold, each an entry of its manifest


def load(folder: Path, name: str = MANIFEST_NAME) -> Optional[Dict[str, Any]]:
    """The manifest ``name`` in ``folder``, or ``None`` when there is none (or an unreadable or foreign one)."""
    try:
        manifest = json.loads((folder / name).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return manifest if isinstance(manifest, dict) and manifest.get("format") == FORMAT else None


def save(folder: Path, manifest: Dict[str, Any], name: str = MANIFEST_NAME) -> None:
    atomic_write_text(folder / name, json.dumps(manifest, indent=1, sort_keys=True) + "\n")


def file_record(path: Path, patches: int) -> Dict[str, Any]:
    """What the manifest says about one output file."""
    stat = path.stat()
    return {"name": path.name, "patches": int(patches), "bytes": stat.st_size, "mtime_ns": stat.st_mtime_ns,
            "sha256": sha256_file(path)}


def output_files(manifest: Dict[str, Any]) -> List[Dict[str, Any]]:
    """Every file record of the manifest (patch files and list files)."""
    records: List[Dict[str, Any]] = []
    for part in PARTS:
        if manifest.get(part):
            records.extend(manifest[part]["files"])
            records.append(manifest[part]["list"])
    return records


def content_sha256(manifest: Dict[str, Any]) -> str:
    """SHA-256 of what the manifest says about the set's content: settings, source images, dataset shapes and,
    per part, its counts and the SHA-256 of every patch file. Left out, since they differ between identical
    builds: the build record (time, memory), the glrl version, file modification times, and the list files'
    checksums (they hold the folder's absolute path)."""
    content: Dict[str, Any] = {key: manifest.get(key) for key in ("format", "settings", "sources", "datasets")}
    for part in PARTS:
        entry = manifest.get(part)
        if entry:
            content[part] = {key: value for key, value in entry.items() if key not in ("files", "list")}
            content[part]["files"] = [{key: record[key] for key in ("name", "patches", "bytes", "sha256")}
                                      for record in entry["files"]]
    canonical = json.dumps(content, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def problems(folder: Path, manifest: Dict[str, Any], rehash_all: bool = False) -> List[str]:
    """What no longer matches the manifest in ``folder`` (empty when everything does). SHA-256 is checked
    for every file when ``rehash_all``, else for files whose modification time differs from the record."""
    found = _foreign_list_entries(folder, manifest)
    for record in output_files(manifest):
        path = folder / record["name"]
        if not path.is_file():
            found.append(f"{record['name']} is missing")
            continue
        stat = path.stat()
        if stat.st_size != record["bytes"]:
            found.append(f"{record['name']} has {stat.st_size} bytes, not {record['bytes']}")
        elif rehash_all or stat.st_mtime_ns != record.get("mtime_ns"):
            if sha256_file(path) != record["sha256"]:
                found.append(f"{record['name']} does not match its SHA-256")
    return found


def _foreign_list_entries(folder: Path, manifest: Dict[str, Any]) -> List[str]:
    """List files name their patch files by absolute path (as Caffe, which reads them from its working
    directory, needs): a copied or moved set's lists still name the original's files, which a trainer would
    read instead of the set's own."""
    found = []
    for part in PARTS:
        listed = folder / manifest[part]["list"]["name"] if manifest.get(part) else None
        if listed is None or not listed.is_file():
            continue
        for line in listed.read_text().split():
            if Path(line).parent.resolve() != folder.resolve():
                found.append(f"{listed.name} names {line}, outside {folder} (a copied or moved set?)")
                break
    return found


def is_current(folder: Path, settings: Dict[str, Any], sources: Dict[str, Any]) -> bool:
    """Whether ``folder`` already holds the complete, intact result of these settings and source images."""
    manifest = load(folder)
    return (
        manifest is not None
        and manifest.get("settings") == settings
        and manifest.get("sources") == sources
        and not problems(folder, manifest)
    )
