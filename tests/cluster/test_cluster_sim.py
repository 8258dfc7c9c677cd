"""Many nodes on one machine: `make cluster-sim` (cluster/sim/) on a clean copy of the tree, the one-line
refusals of a config the cluster cannot run (longctx_core/runner/cluster_checks.py through submit.py --cluster-yaml
and the sim), and a node lost mid-training.

The simulated cluster is Ray's fake multi-node provider: every node is a real raylet on this machine, started
and stopped by the real autoscaler. Node types come from cluster/aws.yaml, scaled down (1 CPU each; the GPU
pool offers a custom resource instead of GPUs). Each test's cluster has its own temp dir, token and free
ports, and is stopped by its own tag (never `ray stop`).
"""

from __future__ import annotations

import http.server
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import psutil
import pytest
import yaml

from longctx_core.config import ConfigError, load_config, run_dir
from longctx_core.errors import LongctxError
from longctx_core.infra.runtime import sync_auth_config
from longctx_core.runner.cluster_checks import ClusterSpec, check_cluster, resource_requests
from longctx_core.runner.markers import CHAIN

REPO = Path(__file__).resolve().parents[2]
SIM = REPO / "cluster" / "sim"
DEMO = "ray_jobs/configs/tiny_cpu.yaml"
AWS = REPO / "cluster" / "aws.yaml"
sys.path[:0] = [str(SIM), str(REPO / "cluster" / "local")]

import fakecluster  # noqa: E402
import sim  # noqa: E402
import watch  # noqa: E402

GAUGES = (
    "ray_longctx_train_loss",
    "ray_longctx_train_tokens_per_s",
    "ray_longctx_train_packing_efficiency",
    "ray_longctx_synthesize_samples_per_second",
)


def _submit(args: list[str], tmp_path: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "LONGCTX_RAY_TEMP_DIR": str(tmp_path / "ray")}
    env.pop("RAY_API_SERVER_ADDRESS", None)
    return subprocess.run(
        ["bash", str(REPO / "cluster/local/submit.sh"), *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def _one_line_error(res: subprocess.CompletedProcess) -> str:
    assert res.returncode == 2, res.stdout[-2000:] + res.stderr[-2000:]
    lines = [line for line in res.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, res.stderr
    return lines[0]


# ---------------------------------------------------------------- node types and the checks, no cluster


def test_sim_node_types_mirror_the_launcher_yaml(tmp_path):
    raw = yaml.safe_load(AWS.read_text())
    types = fakecluster.sim_node_types(AWS)
    launcher_workers = {k: v for k, v in raw["available_node_types"].items() if k != raw["head_node_type"]}
    assert set(types["workers"]) == set(launcher_workers)
    for name, spec in types["workers"].items():
        real = launcher_workers[name]
        assert spec["min_workers"] == real["min_workers"] == 0  # both pools scale from zero
        assert 2 <= spec["max_workers"] <= real["max_workers"]
        assert spec["resources"]["CPU"] == 1
        assert (fakecluster.SIM_ACCELERATOR in spec["resources"]) == ("GPU" in real["resources"])
        assert "GPU" not in spec["resources"]  # no GPU on this machine: a custom resource stands in
    config = fakecluster.fake_cluster_config(types, "127.0.0.1:1234", idle_timeout_s=30)
    assert config["available_node_types"][fakecluster.FAKE_HEAD_TYPE]["resources"] == {"CPU": 0}
    assert config["idle_timeout_minutes"] == 0.5 and config["provider"]["gcs_address"] == "127.0.0.1:1234"
    # what the submit-side checks read from it: several nodes, a head that takes no task
    (tmp_path / "sim.yaml").write_text(yaml.safe_dump(config))
    spec = ClusterSpec.from_launcher_yaml(tmp_path / "sim.yaml")
    assert spec.multi_node and [t.resources for t in spec.node_types if t.head] == [{"CPU": 0.0}]


def test_requests_and_checks_against_the_real_launcher_yaml():
    aws = ClusterSpec.from_launcher_yaml(AWS)
    assert aws.multi_node and aws.shared_mounts == ["/mnt/shared"]
    gpu = load_config(DEMO, ["train.use_gpu=true", "eval.use_gpu=true", "run.storage_path=/mnt/shared/runs"])
    check_cluster(gpu, aws)  # the GPU pool holds 8 GPU workers and the CPU pool the actors
    reqs = {r.what: r for r in resource_requests(gpu, "pipeline")}
    assert reqs["training worker"].resources == {"CPU": 8.0, "GPU": 1.0}
    assert reqs["synthesis actor"].resources == {"CPU": 1.0}
    assert set(r.what for r in resource_requests(gpu, "synthesize")) == {"synthesis actor"}
    with pytest.raises(ConfigError, match=r"train.num_workers.*need more than the cluster can hold"):
        check_cluster(
            load_config(DEMO, ["train.use_gpu=true", "train.num_workers=17", "run.storage_path=s3://b/r"]),
            aws,
        )


def _aws_dry_run(stage: str, override: str, tmp_path) -> str:
    """The one-line error of `submit.sh <stage> <demo> <override>` checked against cluster/aws.yaml."""
    args = [stage, DEMO, "run.storage_path=/mnt/shared/runs", override, "--cluster-yaml", str(AWS)]
    return _one_line_error(_submit([*args, "--address", "http://127.0.0.1:9", "--dry-run"], tmp_path))


def test_submit_refuses_a_request_no_node_type_offers(tmp_path):
    line = _aws_dry_run("pipeline", "train.cpus_per_worker=500", tmp_path)
    assert "train.cpus_per_worker" in line and "CPU: 500" in line
    assert "ray.worker.cpu {CPU: 32}" in line and "ray.worker.gpu {CPU: 192, GPU: 8}" in line
    # the simulated GPU pool's resource does not exist on AWS: named with the node types
    line = _aws_dry_run("train", f"train.accelerator_resource={fakecluster.SIM_ACCELERATOR}", tmp_path)
    assert (
        fakecluster.SIM_ACCELERATOR in line
        and "train.accelerator_resource" in line
        and "ray.worker.gpu" in line
    )


@pytest.mark.parametrize(
    "storage, ok",
    [
        ("runs", False),  # relative: each node would write its own copy
        ("/home/me/runs", False),  # absolute, but a node's own disk
        ("/mnt/shared/runs", True),  # under the YAML's bind-mounted shared file system
        ("s3://bucket/runs", True),
    ],
)
def test_submit_refuses_node_local_storage_on_a_multi_node_cluster(tmp_path, storage, ok):
    args = ["pipeline", DEMO, f"run.storage_path={storage}", "--cluster-yaml", str(AWS)]
    res = _submit([*args, "--address", "http://127.0.0.1:9", "--dry-run"], tmp_path)
    if ok:
        assert res.returncode == 0, res.stderr
        assert f"run.storage_path={storage}" in res.stdout + res.stderr  # not rewritten to this laptop's disk
    else:
        line = _one_line_error(res)
        assert line.startswith("longctx submit: error: run.storage_path:") and "/mnt/shared" in line


def test_declared_shared_storage_and_single_node_heads():
    aws = ClusterSpec.from_launcher_yaml(AWS)
    cfg = load_config(DEMO, ["run.storage_path=/data/runs", "run.shared_storage=[/data]"])
    check_cluster(cfg, aws)  # declared by the user
    with pytest.raises(ConfigError, match=r"train.storage_path: /tmp/ckpt is on a node's own disk"):
        check_cluster(
            load_config(
                DEMO,
                ["run.storage_path=/data/runs", "run.shared_storage=[/data]", "train.storage_path=/tmp/ckpt"],
            ),
            aws,
        )
    with pytest.raises(ConfigError, match="run.shared_storage"):
        load_config(DEMO, ["run.shared_storage=[data]"])  # a mount is an absolute folder
    single = ClusterSpec([c for c in aws.node_types if c.head], [], "one node")
    check_storage_ok = load_config(DEMO, ["run.storage_path=runs"])
    with pytest.raises(ConfigError, match="no node type"):
        check_cluster(check_storage_ok, single)  # a CPU-0 head alone runs nothing...
    assert not single.multi_node  # ...but its storage is never refused: one node, one disk


def test_custom_accelerator_means_cpu_workers():
    with pytest.raises(ConfigError, match="train.accelerator_resource.*use_gpu=false"):
        load_config(DEMO, ["train.use_gpu=true", "train.accelerator_resource=longctx_sim_gpu"])
    cfg = load_config(DEMO, ["train.accelerator_resource=longctx_sim_gpu"])
    worker = next(r for r in resource_requests(cfg, "train") if r.what == "training worker")
    assert worker.resources["longctx_sim_gpu"] == 1.0 and "GPU" not in worker.resources


# What a started cluster would show among the sim's descendants: Ray's servers and CLI, cluster/local/up.sh.
CLUSTER_MARKS = ("raylet", "gcs_server", "ray start", "ray/_private", "ray/dashboard", "ray::", "up.sh")


def _run_watching_descendants(cmd: list[str], env: dict, out: Path, timeout: float = 120):
    """Run `cmd` with stdout/stderr in files under `out`, listing every process it descends into while it
    runs (every 50 ms); returns (CompletedProcess, {pid: "name cmdline"} of all descendants seen)."""
    seen: dict[int, str] = {}
    with (out / "stdout").open("w") as so, (out / "stderr").open("w") as se:
        proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=so, stderr=se, text=True)
        end = time.monotonic() + timeout
        while proc.poll() is None and time.monotonic() < end:
            try:
                kids = psutil.Process(proc.pid).children(recursive=True)
            except psutil.Error:  # it exited between poll and listing
                kids = []
            for kid in kids:
                try:
                    seen.setdefault(kid.pid, f"{kid.name()} {' '.join(kid.cmdline())}")
                except psutil.Error:  # gone before it could be read
                    continue
            time.sleep(0.05)
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=30)
    res = subprocess.CompletedProcess(
        cmd, proc.returncode, (out / "stdout").read_text(), (out / "stderr").read_text()
    )
    return res, seen


def test_sim_refuses_before_starting_any_cluster(tmp_path):
    """A request no simulated node type can hold: exit 2 with the one line naming the key, the request and
    the node types, and nothing started or written: no process of a cluster among the sim's descendants, no
    temp folder (head, token, Ray's sockets), no run folder, no artifacts."""
    sim_tmp = Path(tempfile.mkdtemp(prefix="lcx-t-", dir="/tmp"))  # short, like the sim's own default
    (tmp_path / "out").mkdir()
    env = {**os.environ, "LONGCTX_SIM_TMPDIR": str(sim_tmp)}
    env.pop("RAY_ADDRESS", None)
    cmd = [sys.executable, str(SIM / "sim.py"), "train.cpus_per_worker=2", "--no-browser"]
    cmd += ["--storage", str(tmp_path / "runs"), "--artifacts", str(tmp_path / "art")]
    try:
        res, seen = _run_watching_descendants(cmd, env, tmp_path / "out")
        line = _one_line_error(res)
        assert line.startswith("longctx cluster-sim: error: train.num_workers")
        assert "train.cpus_per_worker" in line and "CPU: 2" in line
        assert "ray.worker.cpu {CPU: 1" in line and "ray.worker.gpu {CPU: 1" in line  # the simulated types
        started = {pid: p for pid, p in seen.items() if any(mark in p for mark in CLUSTER_MARKS)}
        assert not started, started
        assert list(sim_tmp.iterdir()) == []  # no lcx-sim-* folder: no head, token or Ray session
        assert not (tmp_path / "runs").exists() and not (tmp_path / "art").exists()
    finally:
        shutil.rmtree(sim_tmp, ignore_errors=True)


# ---------------------------------------------------------------- a run folder that is already complete


def _mark_done(cfg, stages) -> None:
    """Put `stages`' final outputs and markers in cfg's run folder, as the pipeline leaves them."""
    from longctx_core.runner.markers import mark_stage_done, stage_output

    root = run_dir(cfg)
    for stage in stages:
        out = stage_output(root, stage)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text("{}")
        mark_stage_done(cfg, root, stage, {"steps": cfg.train.max_steps} if stage == "train" else {})


def test_sim_knows_what_the_job_would_run(tmp_path):
    """`pending_stages` asks the pipeline's own stage_is_done: all three in an empty folder, only what is
    missing in a partial one, none in a complete one, all with run.force=true; another config's outputs are
    refused (the job would refuse them too)."""
    ns = sim.parse_args(["--storage", str(tmp_path / "runs"), "--run-name", "done"])
    plan = sim.plan_run(ns)
    cfg = load_config(DEMO, plan.overrides)
    assert plan.run_dir == run_dir(cfg) == (tmp_path / "runs" / "done").resolve()
    assert sim.pending_stages(cfg) == ["synthesize", "train", "evaluate"]
    _mark_done(cfg, ["synthesize", "train"])
    assert sim.pending_stages(cfg) == ["evaluate"]
    _mark_done(cfg, ["evaluate"])
    assert sim.pending_stages(cfg) == []
    forced = load_config(DEMO, [*plan.overrides, "run.force=true"])
    assert sim.pending_stages(forced) == ["synthesize", "train", "evaluate"]
    # more steps than the finished train stage took: it trains on, and evaluation follows
    longer = load_config(DEMO, [*plan.overrides, f"train.max_steps={cfg.train.max_steps + 2}"])
    assert sim.pending_stages(longer) == ["train", "evaluate"]
    other = load_config(DEMO, [*plan.overrides, "data.num_samples=7"])
    with pytest.raises(LongctxError, match="different config"):
        sim.pending_stages(other)


def test_sim_over_a_complete_run_folder_says_nothing_ran(tmp_path, monkeypatch, capsys):
    """The second `make cluster-sim` on the same run folder: no cluster, no job, no timeline, exit 0, and
    one plain line saying nothing ran and how to run it again (not a SUCCEEDED job that scaled nothing)."""
    argv = ["--storage", str(tmp_path / "runs"), "--run-name", "done", "--no-browser"]
    _mark_done(load_config(DEMO, sim.plan_run(sim.parse_args(argv)).overrides), CHAIN)
    token_path = os.environ.get("RAY_AUTH_TOKEN_PATH")
    sim_tmp = tmp_path / "simtmp"
    sim_tmp.mkdir()
    monkeypatch.setenv("LONGCTX_SIM_TMPDIR", str(sim_tmp))
    assert sim.main(argv) == 0
    out = capsys.readouterr().out
    assert out.startswith("longctx cluster-sim: nothing ran:") and out.count("\n") == 1, out
    assert str((tmp_path / "runs" / "done").resolve()) in out and "already complete" in out
    assert "run.force=true" in out and "SUCCEEDED" not in out and "back to zero" not in out
    assert list(sim_tmp.iterdir()) == []  # no cluster was started
    assert not (tmp_path / "runs" / "done" / "cluster_sim").exists()  # no timeline, no artifacts folder
    assert os.environ.get("RAY_AUTH_TOKEN_PATH") == token_path  # this process never became a head's client


def test_timeline_of_a_run_that_scaled_nothing_says_so():
    """Should a job end without any worker node (the pipeline skipped everything after all), the timeline
    must not claim a scaled run: "back to zero" only after something scaled up."""
    summary = {
        "job": {"id": "lcx-sim-x", "status": "SUCCEEDED", "seconds": 6.0},
        "types": ["ray.worker.cpu"],
        "samples": [{"t": 0.0, "counts": {"head": 1, "ray.worker.cpu": 0}}],
        "max_alive": {"ray.worker.cpu": 0},
        "nodes": [],
        "placement": {},
        "gauges": {},
        "sockets_seen": 0,
        "exposed_sockets": [],
        "scaled_to_zero": True,
        "zero_at_s": 6.0,
    }
    first = watch.render(summary).splitlines()[0]
    assert "no worker node was started" in first and "back to zero" not in first
    summary["max_alive"] = {"ray.worker.cpu": 2}
    assert "worker nodes back to zero: True at t=6.0 s" in watch.render(summary).splitlines()[0]


# ---------------------------------------------------------------- the whole of make cluster-sim


def _clean_copy(dest: Path) -> Path:
    """The working tree as a fresh clone has it (tracked + untracked-but-not-ignored files; no runs/, caches
    or Ray temp dirs), sharing this checkout's .venv. Timestamps are kept so make does not reinstall."""
    files = (
        subprocess.run(
            ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
            cwd=REPO,
            capture_output=True,
            check=True,
        )
        .stdout.decode()
        .split("\0")
    )
    for rel in filter(None, files):
        src = REPO / rel
        if src.is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)
    (dest / ".venv").symlink_to(REPO / ".venv")
    return dest


@pytest.mark.timeout(1500)
def test_a_socket_read_before_its_owner_is_filed_by_the_later_reading(tmp_path):
    """The CI failure: the training worker's TCPStore was first seen while its command line could not be read
    ("?") and counted as an exposed Ray server; a later reading names Ray Train's worker and refiles it. A
    socket whose owner is never read stays exposed (the cautious side)."""
    w = watch.Watcher(tmp_path, "http://127.0.0.1:1", {})
    store, other = ("::", 44463, 18432), ("0.0.0.0", 8000, 99)
    w.classify(store, "?")
    w.classify(other, "?")
    assert {e[:3] for e in w.exposed} == {store, other}
    w.classify(store, "ray::RayTrainWorker.__init__")
    w.classify(store, "?")  # read again while the worker exits: stays filed as the rendezvous store
    assert {e[:3] for e in w.exposed} == {other}
    assert w.rendezvous == {(*store, "ray::RayTrainWorker.__init__")}
    assert "python" in watch.socket_owner(os.getpid())  # this test's own command line
    assert watch.socket_owner(2**22 + 12345) == "?"  # no such process


@pytest.fixture(scope="module")
def clean_clone_sim() -> dict:
    """`make cluster-sim` on a clean copy of the tree, run once for the tests below: {res, summary, runs,
    name, wall, artifacts}."""
    base = Path(tempfile.mkdtemp(prefix="lcx-simt-", dir="/tmp"))
    clone = _clean_copy(base / "clone")
    runs, art, name = base / "runs", base / "artifacts", f"sim-{uuid.uuid4().hex[:6]}"
    args = f"--storage {runs} --artifacts {art} --run-name {name}"
    t0 = time.monotonic()
    res = subprocess.run(
        ["make", "-o", ".venv/.longctx-installed", "cluster-sim", f"ARGS={args}"],
        cwd=clone,
        capture_output=True,
        text=True,
        timeout=1400,
    )
    wall = time.monotonic() - t0
    print(f"make cluster-sim: exit {res.returncode} after {wall:.0f} s\n{res.stdout[-6000:]}")
    summary = json.loads((art / "timeline.json").read_text())
    return {"res": res, "summary": summary, "runs": runs, "name": name, "wall": wall, "artifacts": art}


@pytest.mark.e2e
@pytest.mark.timeout(1500)
def test_make_cluster_sim_on_a_clean_clone(clean_clone_sim):
    res, summary, wall = clean_clone_sim["res"], clean_clone_sim["summary"], clean_clone_sim["wall"]
    runs, name = clean_clone_sim["runs"], clean_clone_sim["name"]
    out = res.stdout[-8000:] + res.stderr[-4000:]
    assert res.returncode == 0, out

    # ≥ 2 worker nodes started from zero, and back to zero at the end
    first, last = summary["samples"][0]["counts"], summary["samples"][-1]["counts"]
    types = summary["types"]
    assert sum(first[t] for t in types) == 0, summary["samples"][:3]
    assert sum(summary["max_alive"].values()) >= 2, summary["max_alive"]
    assert summary["scaled_to_zero"] and sum(last[t] for t in types) == 0, summary["samples"][-3:]
    gpu_type = next(
        t
        for t, s in summary["node_types"]["workers"].items()
        if fakecluster.SIM_ACCELERATOR in s["resources"]
    )
    cpu_type = next(t for t in types if t != gpu_type)
    workers = [n for n in summary["nodes"] if n["type"] in types]
    assert len(workers) >= 2 and all(n["state"] == "DEAD" for n in workers)

    # synthesis on > 1 CPU-pool node, training on > 1 GPU-pool node
    place = summary["placement"]
    synth, train = place["synthesis actor"], place["training worker"]
    assert len(synth["nodes"]) >= 2 and set(synth["types"]) == {cpu_type}, synth
    assert len(train["nodes"]) >= 2 and set(train["types"]) == {gpu_type}, train

    # the job and its run folder
    assert summary["job"]["status"] == "SUCCEEDED"
    run = runs / name
    assert summary["run_missing"] == [] and (run / "train" / "adapter" / "adapter_config.json").is_file()
    assert list((run / "data" / "train").glob("*.parquet")) and (run / "eval" / "report.md").is_file()
    assert (run / "report.md").is_file()

    # nothing listened beyond loopback (every process of the head and of each simulated node)
    assert summary["sockets_seen"] > 5 and summary["exposed_sockets"] == []

    # the project's gauges, scraped from the running cluster, carry this run's values
    gauges = summary["gauges"]
    for gauge in GAUGES:
        assert gauge in gauges, sorted(gauges)
        assert f'run="{name}"' in gauges[gauge]["labels"] and math.isfinite(gauges[gauge]["value"])
    losses = [
        r["loss"]
        for r in map(json.loads, (run / "train" / "metrics.jsonl").read_text().splitlines())
        if "loss" in r
    ]
    assert any(abs(gauges["ray_longctx_train_loss"]["value"] - x) < 1e-4 * max(1, abs(x)) for x in losses)

    print(f"cluster-sim test: {wall:.0f} s, peak workers {summary['max_alive']}")

    # a second make cluster-sim over the now complete run folder: nothing runs, and it says so
    timeline = clean_clone_sim["artifacts"] / "timeline.json"
    written = timeline.stat().st_mtime_ns
    again = subprocess.run(
        [sys.executable, str(SIM / "sim.py"), "--storage", str(runs), "--run-name", name, "--no-browser"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert again.returncode == 0, again.stderr[-3000:]
    assert again.stdout.startswith("longctx cluster-sim: nothing ran:") and "run.force=true" in again.stdout
    assert "SUCCEEDED" not in again.stdout and timeline.stat().st_mtime_ns == written


def _require_chromium() -> None:
    """Chromium is needed for the dashboard checks: without it they fail, loudly, unless the run says it
    may go without (LONGCTX_ALLOW_NO_BROWSER=1, e.g. a laptop without make setup-browser): then they skip."""
    from browser import find_chromium

    if find_chromium():
        return
    if os.environ.get("LONGCTX_ALLOW_NO_BROWSER") == "1":
        pytest.skip("no chromium on PATH and LONGCTX_ALLOW_NO_BROWSER=1: dashboard screenshots not checked")
    pytest.fail(
        "no chromium on PATH: the dashboard screenshots cannot be checked. Install it (make setup-browser), "
        "or set LONGCTX_ALLOW_NO_BROWSER=1 to skip these checks on purpose",
        pytrace=False,
    )


def test_missing_chromium_fails_loudly_unless_allowed(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))  # no chromium here
    monkeypatch.delenv("LONGCTX_ALLOW_NO_BROWSER", raising=False)
    with pytest.raises(pytest.fail.Exception, match="no chromium on PATH.*make setup-browser"):
        _require_chromium()
    monkeypatch.setenv("LONGCTX_ALLOW_NO_BROWSER", "1")
    with pytest.raises(pytest.skip.Exception, match="LONGCTX_ALLOW_NO_BROWSER=1"):
        _require_chromium()


@pytest.mark.e2e
@pytest.mark.timeout(1500)
def test_cluster_sim_dashboard_screenshots(request, png_facts):
    """The dashboard as a person sees it, during make cluster-sim: the nodes page while scaled up and the
    Jobs page once the job SUCCEEDED, each a real screenshot (the viewport's width, many colours, text)."""
    _require_chromium()  # before the (long) simulated run
    sim_run = request.getfixturevalue("clean_clone_sim")
    summary = sim_run["summary"]
    shots = {s["page"]: s for s in summary["screenshots"]}
    assert set(shots) == {"jobs", "cluster_nodes"}, summary["screenshot_errors"]
    for shot in shots.values():
        assert shot["ok"], shot
        png = png_facts(shot["png"])
        assert png.width == 1440 and 600 <= png.height <= 1000, (png.width, png.height)
        png.assert_drawn(png.width, png.height, min_colours=50)
    assert summary["job"]["id"] in Path(shots["jobs"]["html"]).read_text()
    nodes_html = Path(shots["cluster_nodes"]["html"]).read_text()
    assert nodes_html.count("ALIVE") >= 3  # the head and at least two workers while scaled up


class _StaticDashboard(http.server.BaseHTTPRequestHandler):
    """A page that fills in from script after a moment (as the dashboard's React app does), and the
    dashboard's token login: POST /api/authenticate answers 200 for `Bearer secret`, 401 otherwise."""

    PAGE = (
        b"<!doctype html><html><body style='font-family:sans-serif;margin:0'>"
        b"<div style='background:#1f77b4;color:white;padding:24px'>Ray dashboard</div><div id='app'></div>"
        b"<script>setTimeout(() => { document.getElementById('app').innerHTML = '<h2>Jobs</h2><table>"
        b'<tr><td>lcx-sim-1</td><td style="color:#2ca02c">SUCCEEDED</td></tr></table>\'; }, 500);</script>'
        b"</body></html>"
    )

    def do_GET(self):
        self._reply(200, self.PAGE)

    def do_POST(self):
        self._reply(200 if self.headers.get("Authorization") == "Bearer secret" else 401, b"")

    def _reply(self, status: int, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args) -> None:
        pass


@pytest.mark.e2e
@pytest.mark.timeout(300)
def test_screenshots_are_real_pictures_of_the_page(tmp_path, png_facts):
    """browser.shoot (headless Chromium over DevTools, the sim's screenshots) on a page served here: it logs
    in with the token, waits for the page's text, and saves a PNG showing it; a refused login is an error."""
    import browser

    _require_chromium()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _StaticDashboard)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}"
    page = browser.Page("jobs", "#/jobs", ["lcx-sim-1", "SUCCEEDED"])
    try:
        (shot,) = browser.shoot(url, "secret", [page], tmp_path, wait_s=30)
        assert shot["ok"] and shot["shows"] == {"lcx-sim-1": True, "SUCCEEDED": True}, shot
        assert "SUCCEEDED" in Path(shot["html"]).read_text()
        png = png_facts(shot["png"])
        assert png.width == 1440 and 600 <= png.height <= 1000, (png.width, png.height)
        png.assert_drawn(png.width, png.height, min_colours=50)
        assert png.near("#1f77b4") > 1440 * 40  # the header band, as wide as the page
        assert png.near("#2ca02c", tol=40) > 20  # the status text, rendered
        with pytest.raises(RuntimeError, match="dashboard login returned HTTP 401"):
            browser.shoot(url, "wrong", [page], tmp_path / "refused", wait_s=5)
    finally:
        server.shutdown()


# ---------------------------------------------------------------- a node lost mid-training


def _gpu_pool_raylets(temp_dir: Path) -> list[psutil.Process]:
    """Raylets of this cluster's GPU-pool nodes (their resource list names the simulated accelerator)."""
    import headctl

    out = []
    for proc in headctl.head_processes(str(temp_dir)):
        try:
            if proc.name() == "raylet" and fakecluster.SIM_ACCELERATOR in " ".join(proc.cmdline()):
                out.append(proc)
        except psutil.Error:
            continue
    return out


def _registered_checkpoints(ray_train: Path) -> list[str]:
    """The checkpoints Ray Train's controller has registered (its snapshot in the run's storage): a worker
    group it restarts resumes from the latest of these. It collects the workers' reports every 2 s."""
    try:
        snapshot = json.loads((ray_train / "checkpoint_manager_snapshot.json").read_text())
        return [c["checkpoint_dir_name"] for c in snapshot["checkpoint_results"]]
    except (OSError, ValueError, KeyError):  # not written yet, or read while being rewritten
        return []


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_a_node_lost_mid_training_is_survived(monkeypatch):
    from submit import _ray_cli, build_submission, submit

    from longctx_core.infra.layout import RunLayout
    from longctx_core.infra.metrics import read_jsonl
    from longctx_core.train.state import RAY_RUN_NAME

    base = Path(tempfile.mkdtemp(prefix="lcx-loss-", dir="/tmp"))
    # enough steps that the kill lands mid-run. 64 samples pack into about 14 steps per epoch: each epoch
    # re-runs the packing stream (new tokenising actors), which on a loaded machine costs more than the steps
    # themselves (24 samples meant one every 5 steps)
    runs, name, steps = base / "runs", "node-loss", 24
    head = fakecluster.start_head(AWS, base / "ray", idle_timeout_s=20, environ=dict(os.environ))
    monkeypatch.setenv("RAY_AUTH_MODE", "token")  # the State API and `ray job submit` of this head
    monkeypatch.setenv("RAY_AUTH_TOKEN_PATH", str(head.token_path))
    sync_auth_config()  # this process's Ray read the settings at import (longctx_core.infra.runtime)
    job_id = f"lcx-loss-{uuid.uuid4().hex[:6]}"
    try:
        overrides = [
            f"run.name={name}",
            f"run.storage_path={runs}",
            f"run.shared_storage=[{runs}]",
            f"train.accelerator_resource={fakecluster.SIM_ACCELERATOR}",
            "train.cpus_per_worker=0.5",
            "data.num_samples=64",
            "data.target_tokens={min: 600, max: 1000}",
            f"train.max_steps={steps}",
            "train.checkpoint_every=2",
            "train.max_failures=3",
        ]
        sub = build_submission(
            "pipeline",
            DEMO,
            overrides,
            head.dashboard,
            dict(os.environ),
            ClusterSpec.from_launcher_yaml(head.config_path),
        )
        sub.runtime_env.setdefault("env_vars", {})["RAY_ADDRESS"] = head.gcs_address  # as sim.py does
        # data first, then training alone: the test is about training
        sub.entrypoint[2] = "ray_jobs.synthesize"
        assert submit(sub, _ray_cli(), job_id + "-data", no_wait=False, working_dir=sim.WORKING_DIR) == 0
        sub.entrypoint[2] = "ray_jobs.train"
        assert submit(sub, _ray_cli(), job_id, no_wait=True, working_dir=sim.WORKING_DIR) == 0
        metrics = runs / name / "train" / "metrics.jsonl"
        ray_train = RunLayout(runs / name).train.storage / RAY_RUN_NAME
        w = watch.Watcher(head.temp_dir, head.dashboard, fakecluster.sim_node_types(AWS)["workers"])
        killed_at, killed_nodes, end = None, [], time.time() + 1500
        info, polled = {}, 0.0
        while time.time() < end:
            due = time.time() - polled >= 2  # the cluster and the job every 2 s
            if due:
                polled = time.time()
                w.poll()
            # the run every 0.25 s until the kill: steps can take a fraction of a second, the kill must land
            # mid-run, and right after Ray Train registered a checkpoint (one written but not yet collected
            # from the workers would be lost with them)
            if killed_at is None:
                rows = read_jsonl(metrics)
                step = max((r.get("step", 0) for r in rows if "loss" in r), default=0)
                if step >= 3 and _registered_checkpoints(ray_train):  # kill one training node's raylet
                    victims = _gpu_pool_raylets(head.temp_dir)
                    assert len(victims) == 2, victims
                    killed_nodes = [
                        n for n, t in w.node_type.items() if t != "head" and w.nodes[n]["state"] == "ALIVE"
                    ]
                    victims[0].kill()
                    killed_at = time.time()
            if due:
                info = sim.job_info(head.dashboard, head.token, job_id)
                if info.get("status") in ("SUCCEEDED", "FAILED", "STOPPED"):
                    break
            time.sleep(0.25)
        w.finish()
    finally:
        fakecluster.stop_head(head)
        monkeypatch.undo()
        sync_auth_config()  # back to this session's settings: later tests start local runtimes
    assert killed_at is not None, "training never reached step 3 with a registered checkpoint"
    assert info.get("status") == "SUCCEEDED", info
    rows = read_jsonl(metrics)
    starts = [r for r in rows if r.get("event") == "start"]
    assert len(starts) >= 2 and starts[-1]["resumed_from_step"] >= 2, starts  # restarted from a checkpoint
    assert max(r["step"] for r in rows if "loss" in r) == steps
    # the restarted workers ran on a node started after the kill
    train_nodes = {a["node_id"] for a in w.actors if a["kind"] == "training worker"}
    new_nodes = {n["node_id"] for n in w.node_records() if n["up_s"] and n["up_s"] + w.t0 > killed_at}
    assert train_nodes & new_nodes, (train_nodes, new_nodes, killed_nodes)
