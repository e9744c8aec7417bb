"""Dataset runs on Ray Data (`onnxplain.dataset`, `onnxplain explain-dataset`, `onnxplain evaluate --ray`).

One local Ray (2 CPUs) for the module; a few dozen generated shapes images and the shipped demo model.
The references are a plain `Explainer` loop and `onnxplain.evaluation.runner.evaluate` in this process,
on images decoded here with PIL (not by the code under test).
"""

import logging
import os
from pathlib import Path

import numpy as np
import pytest

ray = pytest.importorskip("ray", reason='the dataset runs need the optional extra: pip install "onnxplain[ray]"')
pytest.importorskip("ray.data", reason='the dataset runs need the optional extra: pip install "onnxplain[ray]"')
pq = pytest.importorskip(
    "pyarrow.parquet", reason='the dataset runs need the optional extra: pip install "onnxplain[ray]"'
)

from PIL import Image  # noqa: E402
from typer.testing import CliRunner  # noqa: E402

from onnxplain.cli import app  # noqa: E402
from onnxplain.dataset import evaluate_dataset, explain_dataset, read_errors, read_maps  # noqa: E402
from onnxplain.dataset.run import threads_per_actor  # noqa: E402
from onnxplain.dataset.sources import default_shard_size, plan, read_shard, stacked, to_items  # noqa: E402
from onnxplain.dataset.worker import Job, Worker  # noqa: E402
from onnxplain.errors import OnnxplainError  # noqa: E402
from onnxplain.evaluation import runner as E  # noqa: E402
from onnxplain.io.resources import demo_model  # noqa: E402
from onnxplain.io.shapes_data import make_shapes  # noqa: E402
from onnxplain.runtime.explainer import Explainer  # noqa: E402
from onnxplain.runtime.session import set_default_threads  # noqa: E402

N = 20
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:ray.data.context")


@pytest.fixture(scope="module")
def local_ray():
    os.environ.pop("RAY_ADDRESS", None)
    ray.init(num_cpus=2, include_dashboard=False, logging_level=logging.ERROR, log_to_driver=False)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """N PNG images in two sub-folders, and one file that is not a PNG; returns (folder, {id: tensor})."""
    root = tmp_path_factory.mktemp("images")
    images, _, _ = make_shapes(N, seed=5)
    expected = {}
    for i, im in enumerate(images):
        rel = f"{'a' if i % 2 else 'b'}/img{i:02d}.png"
        (root / rel).parent.mkdir(exist_ok=True)
        Image.fromarray(np.round(im.transpose(1, 2, 0) * 255).astype(np.uint8)).save(root / rel)
        # decoded here, independently: uint8 / 255, NCHW
        expected[rel] = (np.asarray(Image.open(root / rel).convert("RGB"), np.float32) / 255).transpose(2, 0, 1)
    (root / "a" / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    return root, expected


@pytest.fixture(scope="module")
def explained(local_ray, folder, tmp_path_factory):
    out = tmp_path_factory.mktemp("run") / "out"
    summary = explain_dataset(
        str(demo_model()),
        folder[0],
        methods=["gradient", "gradcam", "occlusion"],
        output=out,
        shard_size=8,
        actors=2,
        method_options={"window": 16, "stride": 8},
    )
    return out, summary


def test_maps_equal_a_plain_explainer_loop(folder, explained):
    out, summary = explained
    ids = sorted(folder[1])
    x = np.stack([folder[1][i] for i in ids])
    ex = Explainer(str(demo_model()))
    maps = read_maps(out)
    assert summary["items"] == N + 1 and summary["errors"] == 1 and summary["shards"] == 3
    assert len(maps) == 3 * N
    for m, opts in (("gradient", {}), ("gradcam", {}), ("occlusion", {"window": 16, "stride": 8})):
        res = ex.run(x, m, **opts)
        got = np.stack([maps[(i, m)] for i in ids])
        assert got.shape == res.attribution.shape, m
        np.testing.assert_allclose(
            got, res.attribution, rtol=1e-5, atol=1e-6 * np.abs(res.attribution).max(), err_msg=m
        )
    # prediction, target and score: the model's own logits
    logits = ex.run(x, "gradient").outputs
    logits = next(v for v in logits.values() if v.ndim == 2)
    t = pq.read_table(out / "maps").to_pydict()
    rows = {(i, m): k for k, (i, m) in enumerate(zip(t["id"], t["method"]))}
    for j, i in enumerate(ids):
        k = rows[(i, "gradient")]
        assert t["prediction"][k] == int(np.argmax(logits[j])) == t["target"][k]
        assert t["score"][k] == pytest.approx(float(logits[j].max()), rel=1e-5)


def test_a_corrupt_image_is_one_error_row(explained):
    out, _ = explained
    errors = read_errors(out)
    assert [(e["id"], e["stage"]) for e in errors] == [("a/corrupt.png", "reading")]
    assert "cannot read image" in errors[0]["reason"] and "\n" not in errors[0]["reason"]
    assert (out / "errors.csv").read_text().splitlines()[1].startswith("a/corrupt.png,reading,")
    assert not list(out.rglob(".*tmp*")), "temporary files left behind"


class FakeRay:
    """The two calls ``threads_per_actor`` makes, for a cluster of nodes with the given CPU counts."""

    def __init__(self, *cpus):
        self.cpus = cpus

    def nodes(self):
        return [{"Alive": True, "Resources": {"CPU": c} if c else {"GPU": 1}} for c in self.cpus]

    def cluster_resources(self):
        return {"CPU": sum(self.cpus)}


def test_threads_per_actor_share_a_nodes_cores():
    # max(1, cpus_per_node // actors per node), at least the actor's own CPUs; an explicit number wins
    assert threads_per_actor(FakeRay(2), None, 1) == 2
    assert threads_per_actor(FakeRay(2), None, 2) == 1
    assert threads_per_actor(FakeRay(2), None, 3) == 1
    assert threads_per_actor(FakeRay(2), 1, 1) == 1
    assert threads_per_actor(FakeRay(2), 0, 2) == 0  # onnxruntime's own choice
    assert threads_per_actor(FakeRay(8, 8, 0), None, 4) == 4  # 2 actors on each 8-core node; the GPU-only node has none
    assert threads_per_actor(FakeRay(16, 8), None, 4) == 4  # the smaller node decides
    assert threads_per_actor(FakeRay(2), None, 2, cpus_per_actor=2) == 2


def test_the_default_shard_holds_about_four_million_input_values(tmp_path):
    assert default_shard_size(3 * 64 * 64) == (1 << 22) // (3 * 64 * 64) == 341
    assert default_shard_size(3 * 224 * 224) == 27
    assert default_shard_size(3 * 64 * 64, total=256) == 32  # at least 8 shards
    assert default_shard_size(3 * 64 * 64, total=20) == 16  # never fewer than 16 items a shard
    assert default_shard_size(10) == 1024 and default_shard_size(3 * 1024 * 1024) == 16
    assert default_shard_size(None) == 64  # the item's size is unknown
    images, _, _ = make_shapes(40, seed=1)
    np.save(tmp_path / "a.npy", images[:30])
    np.save(tmp_path / "b.npy", images[30:])
    seen = []
    shards, _ = plan([tmp_path / "a.npy", tmp_path / "b.npy"], lambda total: seen.append(total) or 16)
    assert seen == [40]  # the size is chosen once, from every file's rows
    assert [(Path(s.paths[0]).name, s.start, s.stop) for s in shards] == [
        ("a.npy", 0, 16),
        ("a.npy", 16, 30),
        ("b.npy", 0, 10),
    ]


def test_an_array_shard_reads_as_its_items_one_by_one(tmp_path):
    images, labels, masks = make_shapes(12, seed=4)
    np.savez(tmp_path / "d.npz", images=images.astype(np.float64), labels=labels, masks=masks)
    (shard,) = [s for s in plan([tmp_path / "d.npz"], 8)[0] if s.start == 8]
    got = read_shard(shard, None, [None, 3, 64, 64], np.float32)  # rows 8..11, read as one array
    assert stacked({"image": images[8:], "label": labels[8:], "mask": masks[8:]}, got.ids, np.float32) is not None
    rows = [{"id": f"d.npz:{i}", "image": images[i], "label": labels[i], "mask": masks[i]} for i in range(8, 12)]
    ref = to_items(rows, None, [None, 3, 64, 64], np.float32)  # item by item
    assert got.ids == ref.ids == [f"d.npz:{i}" for i in range(8, 12)] and got.errors == []
    assert got.images.dtype == np.float32 and got.images.flags.c_contiguous
    np.testing.assert_array_equal(got.images, ref.images)
    np.testing.assert_array_equal(got.labels, ref.labels)
    np.testing.assert_array_equal(got.labels, labels[8:])
    np.testing.assert_array_equal(got.masks, ref.masks)


def test_the_threads_reach_the_actors_sessions(tmp_path):
    job = Job(kind="explain", output=str(tmp_path), methods=["gradient", "gradcam"], threads=3)
    try:
        w = Worker([demo_model().read_bytes()], job)
    finally:
        set_default_threads(0)  # the actor sets its process's default; this process is not an actor
    sessions = list(w.ex._sessions.values())
    assert len(sessions) == 2
    assert [s.get_session_options().intra_op_num_threads for s in sessions] == [3, 3]
    assert w.threads() == 3


def test_a_model_error_on_one_item_leaves_the_rest(local_ray, tmp_path):
    images, labels, masks = make_shapes(10, seed=2)
    bad = images.copy()
    bad[3, 0, 5, 5] = np.nan  # the explainer refuses NaN inputs: an error for this item only
    np.savez(tmp_path / "part.npz", images=bad, labels=labels)
    summary = explain_dataset(
        str(demo_model()),
        [tmp_path / "part.npz"],
        methods=["gradient"],
        output=tmp_path / "out",
        shard_size=16,
        actors=1,
        target="label",
    )
    assert summary["items"] == 10 and summary["errors"] == 1
    assert summary["threads_per_actor"] == 2  # one actor on 2 CPUs, no threads given: both cores
    (err,) = read_errors(tmp_path / "out")
    assert err["id"] == "part.npz:3" and err["stage"] == "gradient" and "NaN" in err["reason"]
    maps = read_maps(tmp_path / "out")
    keep = [i for i in range(10) if i != 3]
    assert sorted(maps) == sorted((f"part.npz:{i}", "gradient") for i in keep)
    ref = Explainer(str(demo_model())).explain(images[keep], "gradient", target=labels[keep])
    np.testing.assert_allclose(
        np.stack([maps[(f"part.npz:{i}", "gradient")] for i in keep]), ref, rtol=1e-5, atol=1e-6 * np.abs(ref).max()
    )
    t = pq.read_table(tmp_path / "out" / "maps").to_pydict()
    assert sorted(t["target"]) == sorted(int(labels[i]) for i in keep)


def test_resume_skips_written_shards(local_ray, folder, tmp_path):
    out = tmp_path / "out"
    first = explain_dataset(str(demo_model()), folder[0], methods=["gradient"], output=out, shard_size=8, actors=2)
    shards = sorted((out / "maps").glob("*.parquet"))
    assert first["shards"] == len(shards) == 3
    assert first["threads_per_actor"] == 1  # two actors on 2 CPUs: one core each
    shards[1].unlink()  # as if the run had been killed before this shard
    data = shards[0].read_bytes()  # as if the machine had lost power before this shard reached the disk
    shards[0].write_bytes(data[: len(data) // 2])
    kept = {shards[2]: shards[2].stat().st_mtime_ns}
    again = explain_dataset(str(demo_model()), folder[0], methods=["gradient"], output=out, shard_size=8, actors=2)
    assert again["shards"] == 2 and again["shards_skipped"] == 1 and again["items"] == 16
    assert shards[1].exists() and shards[0].read_bytes()[-4:] == b"PAR1"
    assert {p: p.stat().st_mtime_ns for p in kept} == kept
    assert len(read_maps(out)) == N
    with pytest.raises(OnnxplainError, match="other settings"):
        explain_dataset(str(demo_model()), folder[0], methods=["saliency"], output=out, shard_size=8)
    with pytest.raises(OnnxplainError, match="inside the input folder"):
        explain_dataset(str(demo_model()), folder[0], output=folder[0] / "out")


def test_a_ray_dataset_source(local_ray, tmp_path):
    images, labels, _ = make_shapes(6, seed=9)
    rows = [{"id": f"item{i}", "image": images[i], "label": int(labels[i])} for i in range(6)]
    first = explain_dataset(
        str(demo_model()),
        ray.data.from_items(rows[:4]),
        methods=["gradient"],
        output=tmp_path / "out",
        shard_size=4,
        actors=1,
    )
    assert first["items"] == 4
    # resumed with two more rows: only those are explained
    again = explain_dataset(
        str(demo_model()),
        ray.data.from_items(rows),
        methods=["gradient"],
        output=tmp_path / "out",
        shard_size=4,
        actors=1,
        threads=1,
    )
    assert again["items"] == 2
    assert first["threads_per_actor"] == 2 and again["threads_per_actor"] == 1  # an explicit number wins
    maps = read_maps(tmp_path / "out")
    assert len(maps) == 6
    ref = Explainer(str(demo_model())).explain(images, "gradient")
    np.testing.assert_allclose(
        np.stack([maps[(f"item{i}", "gradient")] for i in range(6)]), ref, rtol=1e-5, atol=1e-6 * np.abs(ref).max()
    )
    with pytest.raises(OnnxplainError, match="needs an 'image' column"):
        explain_dataset(str(demo_model()), ray.data.from_items([{"x": 1}]), output=tmp_path / "o2")


def test_evaluate_dataset_matches_the_runner(local_ray, tmp_path):
    images, labels, masks = make_shapes(12, seed=4)
    np.savez(tmp_path / "val.npz", images=images, labels=labels, masks=masks)
    settings = E.Settings(steps=8, n_sanity=2)
    metrics = ["deletion", "pointing_game", "relevance_mass", "cascading"]
    ev = evaluate_dataset(
        str(demo_model()),
        tmp_path / "val.npz",
        methods=["gradient", "gradcam"],
        metrics=metrics,
        output=tmp_path / "out",
        settings=settings,
        shard_size=5,
        actors=2,
    )
    ref = E.evaluate(
        str(demo_model()), images, labels, masks, methods=["gradient", "gradcam"], metrics=metrics, settings=settings
    )
    assert ev.ids == [f"val.npz:{i}" for i in range(12)] and ev.n == 12 and ev.n_sanity == 2
    for key in ("deletion", "pointing_game", "relevance_mass", "cascading", "cascading_last"):
        for m in ("gradient", "gradcam"):
            np.testing.assert_allclose(ev.values[key][m], ref.values[key][m], rtol=1e-6, atol=1e-9, err_msg=key)
    assert (tmp_path / "out" / "evaluation.md").read_text().splitlines()[0] == ref.markdown().splitlines()[0]
    assert (tmp_path / "out" / "evaluation.csv").read_text() == ref.to_csv().replace(
        *_seconds_rows(ref, tmp_path / "out" / "evaluation.csv")
    )


def _seconds_rows(ref, csv_path):
    """The timing rows differ between runs: (reference's, run's) text of the s/img rows, to swap in."""
    ours = [ln for ln in csv_path.read_text().splitlines() if ",seconds," in ln]
    theirs = [ln for ln in ref.to_csv().splitlines() if ",seconds," in ln]
    return "\n".join(theirs), "\n".join(ours)


def test_cli_end_to_end(local_ray, folder, tmp_path):
    runner = CliRunner()
    out = tmp_path / "cli"
    res = runner.invoke(
        app,
        [
            "explain-dataset",
            "demo",
            str(folder[0]),
            "-m",
            "gradient,saliency",
            "-d",
            str(out),
            "--shard-size",
            "16",
            "--actors",
            "2",
        ],
    )
    assert res.exit_code == 0, res.output
    assert f"explained {N + 1} items in 2 shards" in res.stdout and "1 items failed" in res.stdout
    assert len(read_maps(out)) == 2 * N
    # no --shard-size: the default for 21 images of 3 x 64 x 64 is 16 (at least 16 items a shard), the same
    # shards and the same run.json, so the run resumes
    res = runner.invoke(app, ["explain-dataset", "demo", str(folder[0]), "-m", "gradient,saliency", "-d", str(out)])
    assert res.exit_code == 0 and "2 shards already written, skipped" in res.stdout, res.output
    res = runner.invoke(app, ["explain-dataset", "demo", str(folder[0]), "-d", str(tmp_path / "t"), "--target", "x"])
    assert res.exit_code == 2 and res.stderr.startswith("error: --target takes"), res.output
    res = runner.invoke(
        app,
        [
            "evaluate",
            "demo",
            "shapes",
            "--ray",
            "--actors",
            "2",
            "--n",
            "6",
            "-m",
            "gradient",
            "--metrics",
            "deletion,pointing_game",
            "--steps",
            "8",
            "-d",
            str(tmp_path / "ev"),
        ],
    )
    assert res.exit_code == 0, res.output
    assert "del AUC" in res.stdout and (tmp_path / "ev" / "evaluation.csv").is_file()


def test_parquet_sources(local_ray, tmp_path):
    """Parquet written by Ray (a tensor column of model-ready arrays) and by pyarrow (PNG bytes, labels)."""
    import io

    import pyarrow as pa

    images, labels, _ = make_shapes(7, seed=11)
    ray.data.from_items([{"id": f"t{i}", "image": images[i]} for i in range(7)]).write_parquet(tmp_path / "tensors")
    explain_dataset(
        str(demo_model()), tmp_path / "tensors", methods=["gradient"], output=tmp_path / "o1", shard_size=4, actors=1
    )
    ref = Explainer(str(demo_model())).explain(images, "gradient")
    maps = read_maps(tmp_path / "o1")
    np.testing.assert_allclose(
        np.stack([maps[(f"t{i}", "gradient")] for i in range(7)]), ref, rtol=1e-5, atol=1e-6 * np.abs(ref).max()
    )

    pngs, decoded = [], []
    for im in images:
        buf = io.BytesIO()
        Image.fromarray(np.round(im.transpose(1, 2, 0) * 255).astype(np.uint8)).save(buf, format="PNG")
        pngs.append(buf.getvalue())
        decoded.append(np.asarray(Image.open(io.BytesIO(pngs[-1])).convert("RGB"), np.float32).transpose(2, 0, 1) / 255)
    pngs[2] = b"garbage"
    pq.write_table(pa.table({"image": pa.array(pngs, pa.binary()), "label": pa.array(labels)}), tmp_path / "p.parquet")
    explain_dataset(
        str(demo_model()),
        tmp_path / "p.parquet",
        methods=["gradient"],
        output=tmp_path / "o2",
        shard_size=4,
        actors=1,
        target="label",
    )
    maps = read_maps(tmp_path / "o2")
    keep = [0, 1, 3, 4, 5, 6]
    ref = Explainer(str(demo_model())).explain(np.stack([decoded[i] for i in keep]), "gradient", target=labels[keep])
    np.testing.assert_allclose(
        np.stack([maps[(f"p.parquet:{i}", "gradient")] for i in keep]), ref, rtol=1e-5, atol=1e-6 * np.abs(ref).max()
    )
    assert [(e["id"], e["stage"]) for e in read_errors(tmp_path / "o2")] == [("p.parquet:2", "reading")]
