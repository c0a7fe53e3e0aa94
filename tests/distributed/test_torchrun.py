"""Two processes under torchrun (gloo on CPU) give the results of one process; rank 0 alone reports."""
import json
import os
import socket
import subprocess
import sys

import pytest

ARGS = ("-p", "no:cacheprovider", "--mm-model=random:tiny-clip", "--mm-samples=24", "--mm-batch-size=5",
        "--mm-no-cache", "--mm-bootstrap=20", "-q", "-k", "cone or gap_norm or gap_l2i or rankme or share")


def _run(tmp_path, name, launcher, extra=()):
    work = tmp_path / name
    work.mkdir()
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([*launcher, "-m", "pytest", *ARGS, f"--mm-report-dir={work / 'r'}", *extra],
                          cwd=work, env=env, capture_output=True, text=True, timeout=300)
    return proc, work / "r"


def _free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _values(path):
    doc = json.loads((path / "results.json").read_text())
    return doc, {(r["check"], json.dumps(r["params"], sort_keys=True)): r for r in doc["results"]}


@pytest.mark.skipif(sys.platform == "win32", reason="torchrun's rendezvous needs a POSIX host")
def test_two_ranks_equal_one_process_and_only_rank_0_reports(tmp_path):
    single, single_dir = _run(tmp_path, "single", [sys.executable])
    launcher = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node=2",
                "--master-addr=127.0.0.1", f"--master-port={_free_port()}"]
    sharded, sharded_dir = _run(tmp_path, "sharded", launcher)
    assert (single_dir / "results.json").exists(), single.stdout[-3000:] + single.stderr[-3000:]
    assert (sharded_dir / "results.json").exists(), sharded.stdout[-3000:] + sharded.stderr[-3000:]
    one, by_key_one = _values(single_dir)
    two, by_key_two = _values(sharded_dir)
    assert one["run"]["world_size"] == 1 and two["run"]["world_size"] == 2
    assert two["data"]["n"] == 24 and two["data"]["fingerprint"] == one["data"]["fingerprint"]
    assert by_key_one.keys() == by_key_two.keys() and len(by_key_one) > 20
    for key, r in by_key_one.items():
        other = by_key_two[key]
        assert other["status"] == r["status"], (key, other["message"])
        if r["value"] is not None:
            assert other["value"] == pytest.approx(r["value"], rel=1e-5, abs=1e-6), key
    # rank 1 ran no check and printed nothing: pytest's summary line appears once, from rank 0
    assert sharded.stdout.count("mmdiag summary") == 1
    assert "no tests ran" not in sharded.stdout
    log = (sharded_dir / "ranks" / "rank-1.log").read_text()
    assert "rank 1 of 2 recorded samples 12..23" in log


def test_a_bad_image_in_rank_1s_shard_fails_every_rank_without_a_hang(tmp_path):
    from PIL import Image

    data = tmp_path / "data"
    data.mkdir()
    lines = []
    for i in range(8):
        name = f"img{i}.png"
        if i == 7:  # in rank 1's half
            (data / name).write_bytes(b"this is not a PNG")
        else:
            Image.new("RGB", (16, 16), (30 * i, 0, 0)).save(data / name)
        lines.append(json.dumps({"image": name, "caption": f"a red square number {i}"}))
    (data / "captions.jsonl").write_text("\n".join(lines) + "\n")
    launcher = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node=2",
                "--master-addr=127.0.0.1", f"--master-port={_free_port()}"]
    proc, reports = _run(tmp_path, "bad", launcher, extra=(f"--mm-data={data}", "--mm-samples=8"))
    assert proc.returncode != 0
    doc, by_key = _values(reports)  # rank 0 still writes the report of what ran
    messages = [r["message"] for r in doc["results"] if r["status"] == "error"]
    assert messages and all("rank 1: " in m and "img7.png" in m for m in messages), messages[:3]
