"""Datasets: the registry against the carried checksums, verification, and the download step served by a
local HTTP server on 127.0.0.1 from archives built here out of the shared datasets."""
from __future__ import annotations

import functools
import http.server
import json
import shutil
import tarfile
import threading
import zipfile
from pathlib import Path

import h5py
import pytest

from glrl import settings
from glrl.cli import main
from glrl.datasets import DATASETS, STANDARD_DATASETS, checksums, get_dataset, require_datasets, verify_dataset
from glrl.datasets.download import ArchiveSource, default_source, download_datasets
from glrl.errors import DataError


def test_registry_lists_every_file_of_the_carried_checksums():
    assert {name: len(DATASETS[name].files()) for name in DATASETS} == {
        "Set5": 5, "Set14": 14, "BSD100": 100, "T91": 91, "BSD200": 200, "matlab_lr": 57,
    }
    assert sum(len(d.files()) for d in DATASETS.values()) == len(checksums())
    assert get_dataset("bsd100").folder == "test/BSD100"
    with pytest.raises(DataError, match="unknown dataset 'Set15'"):
        get_dataset("Set15")


def test_the_shared_datasets_verify(data_root):
    for name in STANDARD_DATASETS + ("matlab_lr",):
        assert verify_dataset(get_dataset(name), data_root).ok, name


def _copy(data_root: Path, root: Path, name: str) -> None:
    folder = get_dataset(name).folder
    shutil.copytree(data_root / folder, root / folder)


def test_a_data_root_that_is_a_file_is_an_error_naming_where_it_came_from(tmp_path, monkeypatch, capsys):
    (tmp_path / "bird.png").write_bytes(b"")
    assert main(["data", "verify", "--data-root", str(tmp_path / "bird.png")]) == 2
    assert f"the data root {tmp_path / 'bird.png'} (--data-root) is a file, not a folder" in capsys.readouterr().err
    monkeypatch.setenv("GLRL_DATA", str(tmp_path / "bird.png"))
    with pytest.raises(DataError, match=r"\(GLRL_DATA\) is a file"):
        settings.data_root()


def test_verify_names_every_missing_and_corrupt_file(data_root, tmp_path, capsys):
    _copy(data_root, tmp_path, "Set5")
    (tmp_path / "test/Set5/bird.png").unlink()
    with open(tmp_path / "test/Set5/head.png", "r+b") as handle:
        handle.seek(100)
        handle.write(b"\0")
    result = verify_dataset(get_dataset("Set5"), tmp_path)
    assert result.missing == ["test/Set5/bird.png"] and result.corrupt == ["test/Set5/head.png"]
    assert main(["data", "verify", "--dataset", "Set5", "--data-root", str(tmp_path)]) == 1
    out = capsys.readouterr().out
    assert "missing: test/Set5/bird.png" in out and "corrupt (checksum differs): test/Set5/head.png" in out
    with pytest.raises(DataError, match="1 missing, 1 corrupt"):
        require_datasets(["Set5"], tmp_path)


def test_verify_checks_a_set_held_as_a_luma_pack_by_its_recorded_checksums_and_pixels(data_root, tmp_path, capsys):
    assert main(["data", "pack", "--data-root", str(data_root), "--out", str(tmp_path), "--sets", "Set5",
                 "--copy", "none"]) == 0
    pack = tmp_path / "test" / "Set5.luma.h5"
    assert main(["data", "verify", "--dataset", "Set5", "--data-root", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert f"Set5: OK (5 files in the luma pack {pack}: recorded checksums match, pixels intact)" in out
    with pytest.raises(DataError, match="5 missing"):  # evaluation reads the colour images, not a pack
        require_datasets(["Set5"], tmp_path)

    with h5py.File(pack, "r+") as handle:
        handle["bird.png"].attrs["source_sha256"] = "0" * 64
        chunk = handle["head.png"].id.get_chunk_info(0)
        del handle["baby.png"]
        handle.attrs["names"] = json.dumps([n for n in json.loads(handle.attrs["names"]) if n != "baby.png"])
    with open(pack, "r+b") as handle:
        handle.seek(chunk.byte_offset + chunk.size // 2)
        byte = handle.read(1)
        handle.seek(-1, 1)
        handle.write(bytes([byte[0] ^ 0xFF]))
    result = verify_dataset(get_dataset("Set5"), tmp_path, accept_pack=True)
    assert result.missing == ["test/Set5/baby.png"]
    assert result.corrupt == ["test/Set5/bird.png", "test/Set5/head.png"]
    assert main(["data", "verify", "--dataset", "Set5", "--data-root", str(tmp_path)]) == 1
    out = capsys.readouterr().out
    assert "corrupt (recorded checksum differs or pixels fail to read): test/Set5/head.png" in out

    pack.write_bytes(b"not HDF5")
    result = verify_dataset(get_dataset("Set5"), tmp_path, accept_pack=True)
    assert len(result.corrupt) == 5 and f"5 corrupt of 5 files in the luma pack {pack}" in result.summary()


# --- download against a local server ------------------------------------------------------------------

@pytest.fixture()
def server(tmp_path):
    """An HTTP server on 127.0.0.1 serving ``tmp_path / "www"``; yields (folder, base URL)."""
    www = tmp_path / "www"
    www.mkdir()
    handler = functools.partial(QuietHandler, directory=str(www))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield www, f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass


def _origin_zip(path: Path, data_root: Path, name: str, extra=None, alter=None) -> None:
    """A GitHub-style archive (``<repo>-master/...``) laid out as the dataset's origin."""
    source = default_source(name)
    with zipfile.ZipFile(path, "w") as bundle:
        for member, relative in source.members.items():
            data = (data_root / relative).read_bytes()
            if alter and relative.endswith(alter):
                data = data[:-1] + bytes([data[-1] ^ 1])
            bundle.writestr(f"Origin-master/{member}", data)
        for member, data in (extra or {}).items():
            bundle.writestr(member, data)


def _sources(url: str, *names: str):
    return {name: ArchiveSource(url, default_source(name).members) for name in names}


def test_download_from_zip_and_tar_archives_installs_verified_files(data_root, tmp_path, server):
    www, base = server
    _origin_zip(www / "selfexsr.zip", data_root, "Set5")
    with tarfile.open(www / "dcscn.tar.gz", "w:gz") as bundle:
        for member, relative in default_source("T91").members.items():
            bundle.add(str(data_root / relative), arcname=f"dcscn-master/{member}")
    root = tmp_path / "data"
    sources = {**_sources(f"{base}/selfexsr.zip", "Set5"), **_sources(f"{base}/dcscn.tar.gz", "T91")}
    assert download_datasets(["Set5", "T91"], root, sources=sources, progress=False) == ["Set5", "T91"]
    assert verify_dataset(get_dataset("Set5"), root).ok and verify_dataset(get_dataset("T91"), root).ok
    assert sorted(p.name for p in root.iterdir()) == ["test", "train"]  # no temporary files left
    assert download_datasets(["Set5"], root, sources=sources, progress=False) == []  # already there


def test_glrl_data_download_command_with_a_mirror_url(data_root, tmp_path, server, capsys):
    www, base = server
    _origin_zip(www / "selfexsr.zip", data_root, "Set5")
    root = tmp_path / "data"
    args = ["data", "download", "--dataset", "set5", "--url", f"{base}/selfexsr.zip", "--quiet"]
    assert main(args + ["--data-root", str(root)]) == 0
    assert "Set5: downloaded and verified" in capsys.readouterr().out
    assert main(["data", "verify", "--dataset", "Set5", "--data-root", str(root)]) == 0
    assert main(["data", "download", "--dataset", "Set5,T91", "--url", f"{base}/x.zip", "--data-root", str(root)]) == 2
    assert "--url applies to datasets from one origin only" in capsys.readouterr().err


def test_archive_with_a_path_escaping_member_is_refused_and_nothing_is_written(data_root, tmp_path, server):
    www, base = server
    _origin_zip(www / "evil.zip", data_root, "Set5", extra={"Origin-master/../../escaped.txt": b"gotcha"})
    root = tmp_path / "deep" / "data"
    with pytest.raises(DataError, match=r"unsafe member '.*\.\./\.\./escaped\.txt'"):
        download_datasets(["Set5"], root, sources=_sources(f"{base}/evil.zip", "Set5"), progress=False)
    assert not list(tmp_path.rglob("escaped.txt"))
    assert list(root.iterdir()) == []


def test_tar_archive_whose_needed_member_is_a_link_is_refused(data_root, tmp_path, server):
    www, base = server
    members = default_source("Set5").members
    with tarfile.open(www / "links.tar", "w") as bundle:
        for index, (member, relative) in enumerate(members.items()):
            if index == 0:
                link = tarfile.TarInfo(f"Origin-master/{member}")
                link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
                bundle.addfile(link)
            else:
                bundle.add(str(data_root / relative), arcname=f"Origin-master/{member}")
    root = tmp_path / "data"
    with pytest.raises(DataError, match="is a link or special file"):
        download_datasets(["Set5"], root, sources=_sources(f"{base}/links.tar", "Set5"), progress=False)
    assert list(root.iterdir()) == []


def test_archive_with_a_changed_image_installs_nothing_and_names_the_file(data_root, tmp_path, server):
    www, base = server
    _origin_zip(www / "changed.zip", data_root, "Set5", alter="butterfly.png")
    root = tmp_path / "data"
    with pytest.raises(DataError, match="test/Set5/butterfly.png \\(checksum differs") as info:
        download_datasets(["Set5"], root, sources=_sources(f"{base}/changed.zip", "Set5"), progress=False)
    assert "nothing was installed" in info.value.hint
    assert list(root.iterdir()) == []
    assert verify_dataset(get_dataset("Set5"), root).missing == get_dataset("Set5").files()


def test_missing_archive_member_unreachable_url_and_non_archive_are_clear_errors(data_root, tmp_path, server):
    www, base = server
    _origin_zip(www / "partial.zip", data_root, "Set5")
    (www / "page.html").write_text("<html>not an archive</html>")
    root = tmp_path / "data"
    with pytest.raises(DataError, match="test/Set14/.*not in the archive"):
        download_datasets(["Set14"], root, sources=_sources(f"{base}/partial.zip", "Set14"), progress=False)
    with pytest.raises(DataError, match="cannot download .*absent.zip"):
        download_datasets(["Set5"], root, sources=_sources(f"{base}/absent.zip", "Set5"), progress=False)
    with pytest.raises(DataError, match=f"what {base}/page.html holds is neither a zip nor a tar"):
        download_datasets(["Set5"], root, sources=_sources(f"{base}/page.html", "Set5"), progress=False)
    assert list(root.iterdir()) == []


@pytest.mark.parametrize("command", ["verify", "download"])
def test_a_dataset_option_that_names_none_is_an_error_not_nothing_done(tmp_path, command, capsys):
    assert main(["data", command, "--dataset", " , ", "--data-root", str(tmp_path)]) == 2
    assert "--dataset ' , ' names no dataset" in capsys.readouterr().err


def test_reference_images_have_no_public_download():
    with pytest.raises(DataError, match="no public download"):
        default_source("matlab_lr")
