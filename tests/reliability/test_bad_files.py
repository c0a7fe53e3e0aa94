"""Files that are not what they claim (issue "Reliability II", class 4).

An image path of a captions file that resolves outside the data directory is refused unless
``--mm-allow-outside-data``; a FIFO or a device given as an image or as an input option is never opened
(it would hang the run): a usage error naming the file (and line), or a skipped, counted sample.
"""
import json
import os
import signal
from contextlib import contextmanager

import numpy as np
import pytest
from PIL import Image

from mmdiag.data.captions import read_coco, read_jsonl
from mmdiag.data.files import open_regular, read_regular_bytes, regular_file_problem
from mmdiag.data.images import open_image
from mmdiag.data.load import data_fingerprint, file_samples_checked, load_samples
from mmdiag.data.types import Sample
from mmdiag.errors import DataError, SpecError

needs_fifo = pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs os.mkfifo")
FAST = ("--mm-model=random:tiny-clip", "--mm-samples=8", "--mm-batch-size=4", "-p", "no:cacheprovider",
        "--color=no", "-k", "gap_norm")


@contextmanager
def no_hang(seconds=20):
    """Fail (instead of hanging the suite) if the block blocks on a FIFO."""
    def alarm(signum, frame):
        raise AssertionError(f"blocked for {seconds} s")

    old = signal.signal(signal.SIGALRM, alarm)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def _folder(path, rows_extra=(), n=4):
    path.mkdir(exist_ok=True)
    rng = np.random.default_rng(0)
    rows = []
    for i in range(n):
        Image.fromarray(rng.integers(0, 256, (24, 24, 3), dtype=np.uint8)).save(path / f"img{i}.png")
        rows.append({"image": f"img{i}.png", "caption": f"a red ball number {i}"})
    rows.extend(rows_extra)
    (path / "captions.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n", encoding="utf-8")
    return path


@pytest.fixture
def secret(tmp_path):
    path = tmp_path / "secret.png"
    Image.fromarray(np.zeros((24, 24, 3), np.uint8)).save(path)
    return path


# -- outside the data directory ------------------------------------------------------------------------------------

@pytest.mark.parametrize("how", ["dotdot", "absolute", "symlink", "dotdot-inside-out"])
def test_jsonl_image_outside_the_data_directory_is_refused_naming_file_and_line(tmp_path, secret, how):
    data = tmp_path / "data"
    data.mkdir()
    name = {"dotdot": "../secret.png", "absolute": str(secret), "symlink": "link.png",
            "dotdot-inside-out": "sub/../../secret.png"}[how]
    if how == "symlink":
        os.symlink(secret, data / "link.png")
    _folder(data, [{"image": name, "caption": "the secret"}])
    with pytest.raises(DataError, match="outside the data directory") as info:
        read_jsonl(data / "captions.jsonl")
    assert str(info.value).startswith(f"{data / 'captions.jsonl'}:5: ")
    assert "--mm-allow-outside-data" in str(info.value) and "\n" not in str(info.value)
    samples = read_jsonl(data / "captions.jsonl", allow_outside=True)  # the explicit opt-in reads it
    assert len(samples) == 5 and os.path.realpath(samples[-1].image) == os.path.realpath(secret)


def test_paths_inside_the_data_directory_stay_accepted(tmp_path):
    data = _folder(tmp_path / "data")
    (data / "sub").mkdir()
    os.symlink(data / "img0.png", data / "sub" / "inner.png")  # a symlink that stays inside
    rows = [{"image": "sub/../img1.png", "caption": "dotdot back in"}, {"image": "sub/inner.png", "caption": "link"},
            {"image": str(data / "img2.png"), "caption": "absolute but inside"}]
    _folder(data, rows)
    assert len(read_jsonl(data / "captions.jsonl")) == 7


def test_coco_file_name_outside_the_image_folder_is_refused(tmp_path, secret):
    doc = {"images": [{"id": 1, "file_name": "a.jpg"}, {"id": 2, "file_name": "../../secret.png"}],
           "annotations": [{"image_id": 1, "caption": "ok"}, {"image_id": 2, "caption": "the secret"}]}
    folder = tmp_path / "coco"
    folder.mkdir()
    (folder / "captions.json").write_text(json.dumps(doc))
    with pytest.raises(DataError, match="outside the data directory") as info:
        read_coco(folder / "captions.json")
    assert info.value.path == str(folder / "captions.json") and "../../secret.png" in str(info.value)
    assert len(read_coco(folder / "captions.json", allow_outside=True)) == 2


def test_outside_image_is_a_usage_error_and_the_opt_in_runs(pytester, tmp_path, secret, usage_line):
    data = _folder(tmp_path / "data", [{"image": "../secret.png", "caption": "the secret"}])
    result = pytester.runpytest(*FAST, f"--mm-data={data}")
    line = usage_line(result)
    assert f"{data / 'captions.jsonl'}:5: image '../secret.png' resolves outside the data directory" in line
    assert "--mm-allow-outside-data" in line
    pytester.makeini("[pytest]\nmm_allow_outside_data = true\n")  # the ini twin opts in too
    result = pytester.runpytest(*FAST, f"--mm-data={data}", "--mm-json=out.json")
    assert result.ret == pytest.ExitCode.OK, result.stdout.str()
    assert json.loads((pytester.path / "out.json").read_text())["data"]["n"] == 5


# -- FIFOs and devices -------------------------------------------------------------------------------------------

@needs_fifo
def test_fifo_and_device_are_not_regular_files_and_are_never_opened(tmp_path):
    fifo = tmp_path / "pipe.png"
    os.mkfifo(fifo)
    with no_hang():
        assert "FIFO" in regular_file_problem(fifo)
        assert "character device" in regular_file_problem("/dev/zero")
        assert regular_file_problem(tmp_path / "nothing") == "no such file"
        assert "directory" in regular_file_problem(tmp_path)
        for path, kind in ((fifo, "FIFO"), ("/dev/zero", "character device")):
            with pytest.raises(DataError, match=f"{kind}.*not a regular file.*expected an image"):
                open_image(path)
            with pytest.raises(DataError, match=kind):
                read_regular_bytes(path, "captions file")
            with pytest.raises(DataError, match=kind):
                open_regular(path)
        # the data fingerprint (cache key) hashes image files: it must not read a FIFO or /dev/zero either
        samples = [Sample(uid="a", image=fifo, caption="x"), Sample(uid="b", image="/dev/zero", caption="y")]
        assert len(data_fingerprint(samples)) == 16
        fifo_jsonl = tmp_path / "c.jsonl"
        os.mkfifo(fifo_jsonl)
        with pytest.raises(SpecError, match="FIFO"):
            load_samples(str(fifo_jsonl), 4)
        with pytest.raises(DataError, match="FIFO"):
            read_jsonl(fifo_jsonl)


@needs_fifo
def test_fifo_image_is_named_by_file_and_line_before_the_run_unless_skipped(tmp_path):
    data = _folder(tmp_path / "data", [{"image": "pipe.png", "caption": "a pipe"}])
    os.mkfifo(data / "pipe.png")
    with no_hang():
        with pytest.raises(DataError, match=r"captions.jsonl:5: image .*pipe.png' is a FIFO") as info:
            file_samples_checked(str(data), 8)
        assert "--mm-skip-bad-samples" in str(info.value)
        assert len(file_samples_checked(str(data), 8, skip_bad=True)) == 5  # left for the forward pass to skip


@needs_fifo
def test_fifo_image_with_skip_bad_samples_finishes_and_counts_it(pytester, tmp_path, usage_line):
    data = _folder(tmp_path / "data", [{"image": "pipe.png", "caption": "a pipe"},
                                       {"image": "zero.png", "caption": "endless zeros"}])
    os.mkfifo(data / "pipe.png")
    os.symlink("/dev/zero", data / "zero.png")  # a device behind a symlink (also outside: opted in)
    result = pytester.runpytest_subprocess(*FAST, f"--mm-data={data}", "--mm-skip-bad-samples",
                                           "--mm-allow-outside-data", "--mm-json=out.json", timeout=120)
    assert result.ret == pytest.ExitCode.OK, result.stdout.str() + result.stderr.str()
    doc = json.loads((pytester.path / "out.json").read_text())
    assert doc["data"]["n"] == 4 and doc["data"]["skipped_samples"] == 2
    result = pytester.runpytest_subprocess(*FAST, f"--mm-data={data}", "--mm-allow-outside-data", timeout=120)
    line = usage_line(result)
    assert f"{data / 'captions.jsonl'}:5: image" in line and "is a FIFO (named pipe), not a regular file" in line


@needs_fifo
@pytest.mark.parametrize("option, name", [("--mm-data", "data.jsonl"), ("--mm-treebank", "tb.conllu"),
                                          ("--mm-baseline", "base.json"), ("--mm-region-features", "rf.npz")])
def test_fifo_as_an_input_option_is_a_usage_error(pytester, option, name, usage_line):
    os.mkfifo(pytester.path / name)
    if option == "--mm-data":  # the one a hang was seen with: in a subprocess under a timeout
        result = pytester.runpytest_subprocess(*FAST, f"{option}={name}", timeout=120)
    else:
        with no_hang(60):
            result = pytester.runpytest(*FAST, f"{option}={name}")
    line = usage_line(result)
    assert f"{option}='{name}': is a FIFO (named pipe), not a regular file" in line


def test_device_as_data_is_a_usage_error(pytester, usage_line):
    with no_hang(60):
        line = usage_line(pytester.runpytest(*FAST, "--mm-treebank=/dev/zero"))
    assert "--mm-treebank='/dev/zero': is a character device, not a regular file" in line


def test_symlink_loop_and_directory_images_are_named_by_line(tmp_path):
    data = _folder(tmp_path / "data", [{"image": "loop.png", "caption": "a loop"}])
    os.symlink("loop.png", data / "loop.png")
    with pytest.raises(DataError, match=r"captions.jsonl:5: image .*loop.png' cannot be stat-ed"):
        file_samples_checked(str(data), 8)
    (data / "loop.png").unlink()
    (data / "loop.png").mkdir()
    with pytest.raises(DataError, match=r"captions.jsonl:5: image .*loop.png' is a directory, not a regular file"):
        file_samples_checked(str(data), 8)
