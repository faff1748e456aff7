"""Jobs on the user's own data: every file format against the arrays written, the per-host grain loader,
bad input as one-line errors, mid-epoch resume, and 2 processes equal to 1."""

import json
from pathlib import Path

import numpy as np
import pytest

from jaxbayes import cli, datasets, parallel
from jaxbayes.jobs import HostBatches, JobConfigError, job_kinds, load_job, open_job_data, open_source, run_job
from jaxbayes.jobs._sources import ArraySource
from tests.multiprocess.launcher import run_processes

RNG = np.random.default_rng(0)
IMAGES = RNG.integers(0, 256, size=(12, 5, 4, 3), dtype=np.uint8)
LABELS = np.arange(12, dtype=np.int64) % 3


def all_rows(source):
    return source.rows(np.arange(len(source)))


def test_npy_and_uncompressed_npz_are_memory_mapped(tmp_path):
    np.save(tmp_path / "x.npy", IMAGES)
    np.savez(tmp_path / "d.npz", images=IMAGES, labels=LABELS)
    npy = open_source(tmp_path / "x.npy")
    npz = open_source(tmp_path / "d.npz", x="images", y="labels")
    assert isinstance(npy.x, np.memmap) and isinstance(npz.x, np.memmap) and isinstance(npz.y, np.memmap)
    np.testing.assert_array_equal(all_rows(npy)["x"], IMAGES)
    rows = npz.rows(np.array([7, 0, 11]))
    np.testing.assert_array_equal(rows["x"], IMAGES[[7, 0, 11]])
    np.testing.assert_array_equal(rows["y"], LABELS[[7, 0, 11]])


def test_compressed_npz_and_a_folder_of_shards(tmp_path):
    np.savez_compressed(tmp_path / "c.npz", images=IMAGES, labels=LABELS)
    np.testing.assert_array_equal(all_rows(open_source(tmp_path / "c.npz", x="images", y="labels"))["y"], LABELS)
    shards = tmp_path / "shards"
    shards.mkdir()
    for i, (lo, hi) in enumerate([(0, 5), (5, 5), (5, 12)]):  # an empty shard in the middle
        np.savez(shards / f"part-{i}.npz", images=IMAGES[lo:hi], labels=LABELS[lo:hi])
    source = open_source(shards, x="images", y="labels")
    assert len(source) == 12
    order = np.array([11, 0, 6, 4, 5])
    np.testing.assert_array_equal(source.rows(order)["x"], IMAGES[order])
    np.testing.assert_array_equal(source.targets(order), LABELS[order])


def test_image_folder_with_labels_from_subfolders(tmp_path):
    from PIL import Image

    for i, (image, label) in enumerate(zip(IMAGES, LABELS, strict=True)):
        folder = tmp_path / "imgs" / f"class{label}"
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(folder / f"{i:02d}.png")
    source = open_source(tmp_path / "imgs", y="folder")
    assert source.x_shape == (5, 4, 3) and len(source) == 12
    rows = all_rows(source)
    # files are read in path order: class0/00, 03, 06, 09, class1/01, ...
    order = np.argsort(LABELS, kind="stable")
    np.testing.assert_array_equal(rows["x"], IMAGES[order])  # PNG is lossless
    np.testing.assert_array_equal(rows["y"], LABELS[order])


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_tables_by_column_name(tmp_path, suffix):
    import pyarrow as pa
    import pyarrow.csv
    import pyarrow.parquet

    x = RNG.normal(size=(9, 3))
    table = pa.table({"a": x[:, 0], "b": x[:, 1], "c": x[:, 2], "target": np.arange(9)})
    path = tmp_path / f"t{suffix}"
    (pyarrow.parquet.write_table if suffix == ".parquet" else pyarrow.csv.write_csv)(table, path)
    everything = all_rows(open_source(path, y="target"))
    np.testing.assert_allclose(everything["x"], x, rtol=1e-15)
    np.testing.assert_array_equal(everything["y"], np.arange(9))
    picked = all_rows(open_source(path, x=["c", "a"]))
    np.testing.assert_allclose(picked["x"], x[:, [2, 0]], rtol=1e-15)


def test_split_scaling_and_bundled_mnist(tmp_path):
    np.savez(tmp_path / "d.npz", images=IMAGES, labels=LABELS)
    data = open_job_data({"path": "d.npz", "x": "images", "y": "labels", "test_fraction": 0.25}, tmp_path)
    train, test = data.split("train"), data.split("test")
    assert len(train["x"]) == 9 and len(test["x"]) == 3 and data.num_classes == 3
    # the two splits partition the rows; uint8 inputs are scaled to [0, 1]
    together = np.sort(np.concatenate([train["x"], test["x"]]).reshape(12, -1), axis=0)
    np.testing.assert_array_equal(together, np.sort(IMAGES.reshape(12, -1) / np.float32(255), axis=0))
    standardized = open_job_data({"path": "d.npz", "x": "images", "test_fraction": 0.0, "standardize": True},
                                 tmp_path).split("train")["x"]
    np.testing.assert_allclose(standardized.mean(0), 0, atol=1e-5)
    mnist = open_job_data({"name": "mnist", "test_fraction": 0.1})
    assert mnist.x_shape == (28, 28, 1) and len(mnist.train) == 4500 and mnist.num_classes == 10
    x, y = datasets.mnist_images()
    assert x.dtype == np.uint8 and x.max() == 255 and np.bincount(y).tolist() == [500] * 10
    flat = datasets.load("mnist", test_fraction=0.2)
    assert flat.x_train.shape == (4000, 784) and 0 <= flat.x_train.min() and flat.x_train.max() == 1


def test_batches_are_a_seeded_per_epoch_shuffle_and_resume_exactly():
    source = ArraySource(np.arange(30.0)[:, None], np.arange(30))
    mesh = parallel.data_mesh()
    first = HostBatches(source, mesh, batch_size=8, seed=3)
    taken = [np.asarray(next(first)["y"]) for _ in range(7)]
    epochs = [np.concatenate(taken[e * 3:(e + 1) * 3]) for e in range(2)]
    for epoch in epochs:  # 3 batches per epoch, 6 rows of each epoch's order dropped, no row twice
        assert len(set(epoch.tolist())) == 24
    assert not np.array_equal(epochs[0], epochs[1])
    again = HostBatches(source, mesh, batch_size=8, seed=3)
    again.iterator.set_state({"next_index": 5})
    np.testing.assert_array_equal(np.asarray(next(again)["y"]), taken[5])
    other = HostBatches(source, mesh, batch_size=8, seed=4)
    assert not np.array_equal(np.asarray(next(other)["y"]), taken[0])


def bnn_job(folder: Path, name: str, *, num_units: int = 3, extra: str = "") -> Path:
    if not (folder / "d.npz").exists():
        rng = np.random.default_rng(1)
        x = rng.normal(size=(200, 6)).astype(np.float32)
        y = (x[:, 0] + 0.5 * x[:, 1] > 0).astype(np.int32)
        np.savez(folder / "d.npz", x=x, y=y)
    path = folder / f"{name}.toml"
    path.write_text(f'kind = "vi.bnn"\noutput_dir = "{folder / name}"\ncheckpoint_every = 1\n{extra}\n'
                    '[data]\npath = "d.npz"\nx = "x"\ny = "y"\ntest_fraction = 0.2\n'
                    f"[params]\nhidden = [16]\nnum_units = {num_units}\nsteps_per_unit = 10\nbatch_size = 24\n"
                    "learning_rate = 0.03\npredict_samples = 16\n")
    return path


def run_file(path: Path, resume: bool = False) -> dict:
    spec = load_job(path, job_kinds())
    return run_job(spec, job_kinds()[spec.kind], resume=resume)


def test_bnn_learns_and_resumes_mid_epoch_exactly(tmp_path):
    full = run_file(bnn_job(tmp_path, "full", num_units=4))
    m = full["metrics"]
    assert m["vi_steps"] == 40 and m["train_rows"] == 160 and m["test_rows"] == 40
    # a noiseless linear rule: chance is about 0.5, and 0.85 is 4.4 binomial SE below it at n = 40
    assert m["test_accuracy"] >= 0.85
    assert (tmp_path / "full" / "reliability.png").is_file()
    # 160 rows in batches of 24: 6 batches per epoch, so step 20 (unit 2) is a third into epoch 4
    run_file(bnn_job(tmp_path, "part", num_units=2))
    position = json.loads((tmp_path / "part" / "checkpoints" / "2" / "data0" / "process_0-of-1.json").read_text())
    assert position == {"next_index": 20}
    resumed = run_file(bnn_job(tmp_path, "part", num_units=4), resume=True)
    assert resumed["resumed_from"] == 2
    assert resumed["metrics"] == full["metrics"]


@pytest.mark.parametrize("data,params,message", [
    ('path = "missing.npz"\nx = "x"', "", "data.path: .*missing.npz does not exist"),
    ('path = "d.npz"\nx = "x"\ny = "labels"', "", "error: data.y: no array 'labels' in .*; it holds x, y"),
    ('path = "d.npz"\nx = "pixels"\ny = "y"', "", "error: data.x: no array 'pixels' in .*; it holds x, y"),
    ('path = "short.npz"\nx = "x"\ny = "y"', "", "data.y: 3 rows, but x has 4"),
    ('path = "mixed"', "", "data.path: images of mixed sizes"),
    ('path = "t.csv"\ny = "label"', "", "data.x: column 'name' of .* is not numeric"),
    ('path = "d.npz"\nx = "x"', "", "data.y: vi.bnn is a classifier"),
    ('path = "d.npz"\nx = "x"\ny = "y"', "conv_channels = [4]", "params.conv_channels: convolutions need image"),
    ('path = "d.npz"\nname = "mnist"', "", "data.path: give exactly one of"),
])
def test_bad_data_is_one_line_exit_2_and_nothing_written(tmp_path, capsys, data, params, message):
    from PIL import Image

    np.savez(tmp_path / "d.npz", x=np.zeros((8, 2), np.float32), y=np.zeros(8, np.int32))
    np.savez(tmp_path / "short.npz", x=np.zeros((4, 2)), y=np.zeros(3))
    (tmp_path / "mixed").mkdir()
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(tmp_path / "mixed" / "a.png")
    Image.fromarray(np.zeros((4, 5), np.uint8)).save(tmp_path / "mixed" / "b.png")
    (tmp_path / "t.csv").write_text("name,v,label\na,1.0,0\nb,2.0,1\n")
    job = tmp_path / "job.toml"
    job.write_text(f'kind = "vi.bnn"\noutput_dir = "{tmp_path / "out"}"\n[data]\n{data}\n'
                   f"[params]\nnum_units = 1\nbatch_size = 2\n{params}\n")
    for command in ("validate", "run"):
        assert cli.main([command, str(job)]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith("jaxbayes: error: "), err
        assert __import__("re").search(message, err), err
    assert not (tmp_path / "out").exists()


def test_validate_overrides_and_a_different_job_in_the_output_dir(tmp_path, capsys):
    path = bnn_job(tmp_path, "job", num_units=1)
    assert cli.main(["validate", str(path), "--set", "params.batch_size=40", "--set", "params.hidden=[8, 8]"]) == 0
    out = capsys.readouterr().out
    assert "valid vi.bnn job" in out and "160 training rows" in out and "of 40 rows" in out and "[8, 8]" in out
    assert not (tmp_path / "job").exists()  # validate writes nothing
    assert cli.main(["run", str(path)]) == 0
    capsys.readouterr()
    assert cli.main(["run", str(path), "--resume", "--set", "params.learning_rate=0.5"]) == 2
    err = capsys.readouterr().err
    assert "params.learning_rate:" in err and "different job" in err and err.count("\n") == 1
    assert cli.main(["run", str(path), "--resume", "--set", "params.num_units=2"]) == 0  # a longer run


def two_process_bnn(folder: str) -> dict:
    """Worker (each of 2 processes, 4 devices each): the bnn job, and the global batches it reads."""
    path = Path(folder) / "two.toml"
    result = run_file(path)
    spec = load_job(path, job_kinds())
    batches = spec.data.batches(parallel.data_mesh(), 24, spec.seed)
    from jax.experimental import multihost_utils

    first = [multihost_utils.process_allgather(next(batches)["y"], tiled=True) for _ in range(4)]
    return {"nll": np.asarray(result["metrics"]["test_nll"]), "batches": np.stack(first),
            "processes": np.asarray(result["processes"])}


def test_two_processes_read_their_own_rows_and_equal_one(tmp_path):
    one = run_file(bnn_job(tmp_path, "one"))
    bnn_job(tmp_path, "two")
    spec = load_job(tmp_path / "one.toml", job_kinds())
    batches = spec.data.batches(parallel.data_mesh(), 24, spec.seed)
    single = np.stack([np.asarray(next(batches)["y"]) for _ in range(4)])
    for r in run_processes("tests.jobs.test_data:two_process_bnn", folder=str(tmp_path)):
        assert int(r["processes"]) == 2
        np.testing.assert_array_equal(r["batches"], single)  # the same global batches
        # the same program on the same batches; only the collectives' summation order differs (float32)
        np.testing.assert_allclose(r["nll"], one["metrics"]["test_nll"], rtol=1e-4)


def test_bad_batch_size_names_the_key(tmp_path):
    data = open_job_data({"path": "d.npz", "x": "x", "y": "y"}, bnn_job(tmp_path, "j").parent)
    with pytest.raises(JobConfigError, match="params.batch_size: 161 is larger than the 160 training rows"):
        data.batches(parallel.data_mesh(1), 161, 0)
    with pytest.raises(JobConfigError, match="params.batch_size: 20 is not a multiple of the 8 devices"):
        data.batches(parallel.data_mesh(), 20, 0)


def test_nngp_regression_on_a_user_table_equals_the_bundled_set(tmp_path):
    ds = datasets.load("diabetes", test_fraction=0.2, seed=0)
    y_train = ds.y_train * ds.info["y_std"] + ds.info["y_mean"]  # the raw targets the user has
    y_test = ds.y_test * ds.info["y_std"] + ds.info["y_mean"]
    np.savez(tmp_path / "train.npz", x=ds.x_train, y=y_train)
    np.savez(tmp_path / "test.npz", x=ds.x_test, y=y_test)
    params = "depth = 2\nnum_units = 1\nsteps_per_unit = 30\n"
    results = []
    for name, data in [("bundled", ""), ("user", '[data]\npath = "train.npz"\ntest_path = "test.npz"\nx = "x"\n'
                                                 'y = "y"\n')]:
        path = tmp_path / f"{name}.toml"
        path.write_text(f'kind = "kernels.nngp_regression"\noutput_dir = "{tmp_path / name}"\n{data}'
                        f"[params]\n{params}")
        results.append(run_file(path)["metrics"])
    for key in ("kernel_scale", "noise_variance", "test_rmse", "test_nll_standardised"):
        np.testing.assert_allclose(results[1][key], results[0][key], rtol=2e-5, err_msg=key)
