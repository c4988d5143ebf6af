"""The released models in ``models/`` and the published results in ``docs/results``, as committed.

Every released model: its weights match the recorded SHA-256, its metadata is complete, its deploy prototxt
exists, and run on Set5 at each of its scales (benchmark protocol, PyTorch backend, fp32) it scores the
PSNR its metadata records, to 0.01 dB — so a broken loader, backend or evaluation is caught. No weights may
sit in ``models/`` without metadata. The README's results block is the one ``make eval`` published: it is
regenerated here from ``docs/results/results.json`` and must be identical, as must ``table.md``'s table.
Every resumable run in ``checkpoints/`` is the run behind a released model, at the iteration released.
"""
from __future__ import annotations

import hashlib
import tarfile
from pathlib import Path

import pytest
from glrl import model_zoo, release, settings
from glrl.eval import table
from glrl.errors import ModelError

RESULTS = settings.REPO_ROOT / "docs" / "results"
README = settings.REPO_ROOT / "README.md"
CHECKPOINTS = settings.REPO_ROOT / "checkpoints"


def test_models_folder_holds_only_complete_releases():
    models = model_zoo.released_models()  # raises ModelError on unreadable or incomplete metadata
    assert release.orphans() == []
    names = {m.name for m in models}
    for path in settings.MODELS_DIR.glob("*"):
        assert path.name in ("README.md", ".gitkeep") or (
            path.suffix in (".json", ".caffemodel") and path.stem in names), f"stray file {path}"
    for model in models:
        assert release.problems(model) == []
        assert model.deploy.is_file() and model.deploy.is_relative_to(settings.PROTOTXT_DIR)
        for key in ("batch_size", "data_manifest_sha256", "hardware", "wall_time_s"):
            assert key in model.metadata, f"{model.name}: metadata lacks {key}"


@pytest.mark.slow
def test_every_released_model_scores_its_recorded_set5_psnr(data_root):
    for model in model_zoo.released_models():
        figures = release.measure_set5(model.deploy, model.weights, model.scales, data_root, device="cpu")
        for scale in model.scales:
            recorded = model.set5_psnr[scale]
            assert figures[scale]["psnr"] == pytest.approx(recorded, abs=release.PSNR_TOLERANCE_DB), (
                f"{model.name} x{scale}")


def test_each_scale_takes_its_nets_single_scale_model_where_there_is_one():
    chosen = {(net, scale): model_zoo.model_for_scale(scale, net=net).name
              for net in ("glrl", "glrl-2lrb", "srcnn") for scale in (2, 3, 4)}
    assert chosen == {("glrl", 2): "glrl_x2", ("glrl", 3): "glrl_x3", ("glrl", 4): "glrl_x4",
                      ("glrl-2lrb", 2): "glrl-2lrb_x234", ("glrl-2lrb", 3): "glrl-2lrb_x3",
                      ("glrl-2lrb", 4): "glrl-2lrb_x234",
                      ("srcnn", 2): "srcnn_x2", ("srcnn", 3): "srcnn_x3", ("srcnn", 4): "srcnn_x4"}


def test_a_net_without_released_models_or_a_scale_without_one_is_an_error_naming_what_there_is():
    with pytest.raises(ModelError, match="no released model of a net called 'glrl-3lrb'") as raised:
        model_zoo.model_for_scale(3, net="glrl-3lrb")
    assert raised.value.hint == "nets with released models: glrl, glrl-2lrb, srcnn (glrl models list)"
    with pytest.raises(ModelError, match="no released srcnn model for scale x8") as raised:
        model_zoo.model_for_scale(8, net="srcnn")
    assert raised.value.hint == "scales with a srcnn model: x2, x3, x4"


def test_the_readme_shows_the_table_make_eval_published():
    records = table.load_records(RESULTS / "results.json")
    assert table.markdown_from_records(records) in (RESULTS / "table.md").read_text(encoding="utf-8")
    images = [(alt, f"docs/results/{name}") for alt, name in table.PUBLISHED_FIGURES
              if (RESULTS / name).is_file()]
    assert table.readme_block(README) == table.readme_block_text(records, images)


def test_the_published_results_cover_every_cell_of_table_1_and_table_2():
    from glrl.published import published_figures

    records = table.load_records(RESULTS / "results.json")
    cells = {(r["table"], r["dataset"], r["scale"], r["method"]) for r in records}
    for figure in published_figures():
        assert (figure.table, figure.dataset, figure.scale, figure.method) in cells
    for record in records:
        assert record["psnr"] is not None or record["note"], record


@pytest.mark.parametrize("archive", sorted(CHECKPOINTS.glob("*.run.tar")), ids=lambda path: path.name)
def test_each_checkpointed_run_is_the_run_behind_a_released_model(archive: Path, tmp_path: Path):
    run_dir = tmp_path / archive.name[: -len(".run.tar")]  # the run folder's name carries its schedule
    with tarfile.open(archive) as tar:
        safe = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}  # Python 3.9 before 3.9.17
        tar.extractall(run_dir, **safe)
    record = release.read_run(run_dir)
    digest = hashlib.sha256(record.weights.read_bytes()).hexdigest()
    models = [m for m in model_zoo.released_models() if m.metadata["sha256"] == digest]
    assert models, f"{archive.name}: its newest snapshot ({record.weights.name}) is no released model's weights"
    metadata = models[0].metadata
    assert (record.iterations, record.schedule) == (metadata["iterations"], metadata["schedule"])
    assert record.data_manifest_sha256 == metadata["data_manifest_sha256"] is not None
    assert record.segments == metadata["training_segments"]
    assert record.solver == metadata["solver"]
    assert record.data_scales == [2, 3, 4]
    for model in models:  # each released for scales it was trained on
        assert set(model.scales) <= set(record.data_scales), model.name


@pytest.mark.parametrize("offset", [-0.02, 0.02, 0.005])
def test_models_verify_measure_reports_a_model_that_scores_off_its_metadata_either_way(monkeypatch, offset):
    model = model_zoo.model_for_scale(3, net="srcnn")
    recorded = model.set5_psnr[3]
    monkeypatch.setattr(release, "measure_set5", lambda *args, **kwargs: {3: {"psnr": recorded + offset}})
    assert len(release.remeasure(model, Path("unused"))) == (1 if abs(offset) >= release.PSNR_TOLERANCE_DB else 0)
