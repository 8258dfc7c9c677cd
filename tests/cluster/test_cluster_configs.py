"""The shipped cluster files: launcher YAMLs through Ray's own validator, KubeRay manifests, the image,
the runtime env (excludes + a dry packaging with Ray's own zipper) and the Grafana dashboard."""

from __future__ import annotations

import copy
import json
import re
import shlex
import zipfile
from pathlib import Path

import pytest
import ray
import yaml
from ray._private import ray_constants
from ray._private.runtime_env.packaging import create_package
from ray.autoscaler._private.providers import _NODE_PROVIDERS
from ray.autoscaler._private.util import prepare_config, validate_config

from longctx_core.config import load_config
from longctx_core.infra.metrics import _gauge_name

REPO = Path(__file__).resolve().parents[2]
CLUSTER = REPO / "cluster"
IMAGE_DIR = "/home/ray/longctx"  # WORKDIR of cluster/Dockerfile


def _pins(path: Path) -> dict[str, str]:
    """name -> version of every `name==version` line of a pip constraints file."""
    pins = {}
    for line in path.read_text().splitlines():
        m = re.match(r"^([A-Za-z0-9_.\-]+)==([^\s#]+)", line.strip())
        if m:
            pins[m.group(1).lower()] = m.group(2)
    return pins


def _launch_config(name: str) -> tuple[dict, dict]:
    """The raw YAML and what `ray up` validates: Ray's prepare_config (defaults merged) of it."""
    raw = yaml.safe_load((CLUSTER / name).read_text())
    return raw, prepare_config(copy.deepcopy(raw))


# ---------------------------------------------------------------- cluster launcher (ray up)


@pytest.mark.parametrize("name", ["aws.yaml", "gcp.yaml"])
def test_launcher_yaml_validates_with_rays_schema(name):
    raw, cfg = _launch_config(name)
    validate_config(cfg)  # Ray's own check (ray-schema.json + cross-field rules), as in `ray up`
    assert raw["provider"]["type"] in _NODE_PROVIDERS
    types = cfg["available_node_types"]
    head = types[cfg["head_node_type"]]
    assert head["resources"].get("CPU") == 0 and "GPU" not in head["resources"]  # small head, no tasks
    cpu = [t for k, t in types.items() if k != cfg["head_node_type"] and "GPU" not in t["resources"]]
    gpu = [t for t in types.values() if t["resources"].get("GPU", 0) >= 8]
    assert len(cpu) == 1 and len(gpu) == 1, (
        "one autoscaling CPU pool (synthesis) and one 8-GPU pool (training)"
    )
    for pool in cpu + gpu:
        assert pool["min_workers"] == 0 and pool["max_workers"] >= 1  # autoscaling from zero
    assert cfg["max_workers"] >= cpu[0]["max_workers"] + gpu[0]["max_workers"]
    image = raw["docker"]["image"]
    assert "ray-ml" not in image
    assert "-v /mnt/shared:/mnt/shared" in raw["docker"]["run_options"]  # shared storage for run.storage_path
    assert any("/mnt/shared" in c and "mount" in c for c in raw["initialization_commands"])
    # token auth everywhere, the token only from the laptop's file, the dashboard on loopback only
    assert raw["file_mounts"] == {"~/.ray/auth_token": "~/.ray/auth_token"}
    assert "-e RAY_AUTH_MODE=token" in raw["docker"]["run_options"]
    starts = " ".join(raw["head_start_ray_commands"] + raw["worker_start_ray_commands"])
    assert starts.count("RAY_AUTH_MODE=token ray start") == 2
    assert "--dashboard-host=127.0.0.1" in starts and "0.0.0.0" not in starts


def test_rays_validator_is_not_a_rubber_stamp():
    _, cfg = _launch_config("gcp.yaml")
    bad = copy.deepcopy(cfg)
    del bad["available_node_types"]["ray_worker_gpu"]["resources"]
    with pytest.raises(Exception, match="resources"):
        validate_config(bad)
    bad = copy.deepcopy(cfg)
    bad["docker"]["imagee"] = "typo"
    with pytest.raises(Exception, match="imagee"):
        validate_config(bad)


@pytest.mark.parametrize("name", ["aws.yaml", "gcp.yaml", "runtime_env.yaml"])
def test_no_secrets_in_cluster_files(name):
    text = (CLUSTER / name).read_text()
    for pattern in (
        r"hf_[A-Za-z0-9]{20,}",
        r"AKIA[0-9A-Z]{16}",
        r"[0-9a-f]{64}",
        r"BEGIN [A-Z ]*PRIVATE KEY",
    ):
        assert not re.search(pattern, text), f"{name} looks like it holds a secret ({pattern})"


# ---------------------------------------------------------------- KubeRay


def _ray_manifest(name: str) -> dict:
    docs = [d for d in yaml.safe_load_all((CLUSTER / "kuberay" / name).read_text()) if d]
    assert len(docs) == 1
    return docs[0]


def _check_cluster_spec(spec: dict) -> None:
    assert spec["rayVersion"] == ray.__version__
    assert spec["enableInTreeAutoscaling"] is True
    assert spec["authOptions"]["mode"] == "token"
    head = spec["headGroupSpec"]
    assert head["rayStartParams"]["num-cpus"] == "0"
    assert head.get("serviceType", "ClusterIP") == "ClusterIP"  # reached by port-forward, never exposed
    groups = {g["groupName"]: g for g in spec["workerGroupSpecs"]}
    assert set(groups) == {"cpu", "gpu"}
    for g in groups.values():
        assert g["minReplicas"] == 0 and g["replicas"] == 0 and g["maxReplicas"] >= 1
    gpu_limits = groups["gpu"]["template"]["spec"]["containers"][0]["resources"]["limits"]
    assert gpu_limits["nvidia.com/gpu"] == "8"
    containers = [head["template"]["spec"]["containers"][0]]
    containers += [g["template"]["spec"]["containers"][0] for g in groups.values()]
    for c in containers:
        assert "ray-ml" not in c["image"]
        assert {"name": "shared", "mountPath": "/mnt/shared"} in c["volumeMounts"]
        hf = [e for e in c.get("env", []) if e["name"] == "HF_TOKEN"]
        assert hf and "value" not in hf[0] and hf[0]["valueFrom"]["secretKeyRef"]["optional"] is True


def test_kuberay_raycluster_manifest():
    doc = _ray_manifest("raycluster.yaml")
    assert doc["apiVersion"] == "ray.io/v1" and doc["kind"] == "RayCluster" and doc["metadata"]["name"]
    _check_cluster_spec(doc["spec"])
    claim = doc["spec"]["headGroupSpec"]["template"]["spec"]["volumes"][0]["persistentVolumeClaim"][
        "claimName"
    ]
    pvc = _ray_manifest("storage.yaml")
    assert pvc["kind"] == "PersistentVolumeClaim" and pvc["metadata"]["name"] == claim
    assert pvc["spec"]["accessModes"] == ["ReadWriteMany"]


def test_kuberay_rayjob_runs_the_pipeline():
    job = _ray_manifest("rayjob.yaml")
    assert job["apiVersion"] == "ray.io/v1" and job["kind"] == "RayJob"
    assert job["spec"]["shutdownAfterJobFinishes"] is True
    # the same cluster as raycluster.yaml, so the two manifests cannot drift apart
    assert job["spec"]["rayClusterSpec"] == _ray_manifest("raycluster.yaml")["spec"]
    _check_cluster_spec(job["spec"]["rayClusterSpec"])
    argv = shlex.split(job["spec"]["entrypoint"])
    assert argv[:3] == ["python", "-m", "ray_jobs.pipeline"] and argv[3] == "--config"
    config_in_image = argv[4]
    assert config_in_image.startswith(IMAGE_DIR + "/ray_jobs/configs/")
    cfg = load_config(REPO / config_in_image.removeprefix(IMAGE_DIR + "/"), argv[5:])  # the preset validates
    assert cfg.run.storage_path.startswith("/mnt/shared/")
    yaml.safe_load(job["spec"]["runtimeEnvYAML"])


# ---------------------------------------------------------------- the image


def test_dockerfile_builds_on_the_official_ray_image_of_the_pinned_version():
    text = (CLUSTER / "Dockerfile").read_text()
    froms = re.findall(r"^FROM\s+(\S+)", text, flags=re.M)
    assert len(froms) == 1
    m = re.fullmatch(r"rayproject/ray:(\d+\.\d+\.\d+)-py311-cu12\d", froms[0])
    assert m, f"expected rayproject/ray:<version>-py311-cu12x, got {froms[0]}"
    code = "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#"))
    assert "ray-ml" not in code  # the retired images
    cpu_pins = _pins(REPO / "constraints-cpu.txt")
    assert m.group(1) == ray.__version__ == cpu_pins["ray"]  # laptop and cluster must speak the same Ray


def test_image_pins_match_the_tested_stack():
    gpu_pins = _pins(CLUSTER / "constraints-gpu.txt")
    cpu_pins = _pins(REPO / "constraints-cpu.txt")
    for name in ("deepspeed", "bitsandbytes", "flash-attn", "peft", "transformers", "torch", "ray"):
        assert name in gpu_pins, f"{name} is not pinned for the GPU image"
    for name in set(gpu_pins) & set(cpu_pins):
        assert gpu_pins[name] == cpu_pins[name], (
            f"{name}: GPU image {gpu_pins[name]} vs tested {cpu_pins[name]}"
        )
    text = (CLUSTER / "Dockerfile").read_text()
    assert f'"torch=={gpu_pins["torch"]}"' in text
    runs = [" ".join(block.split()) for block in re.findall(r"^RUN\s+(.+?)(?<!\\)$", text, flags=re.M | re.S)]
    assert runs and not any("constraints-cpu" in r for r in runs)  # that file pins the CPU torch build
    assert any("-c cluster/constraints-gpu.txt -e" in r for r in runs)  # the project, editable
    for src in re.findall(r"^COPY\s+(?:--\S+\s+)*(.+)\s+\S+$", text, flags=re.M):
        for path in src.split():
            assert (REPO / path).exists(), f"COPY source {path} is missing"


# ---------------------------------------------------------------- runtime env and the job upload


def _runtime_env() -> dict:
    return yaml.safe_load((CLUSTER / "runtime_env.yaml").read_text())


def test_runtime_env_excludes_heavy_folders_and_keeps_the_code(tmp_path):
    env = _runtime_env()
    assert set(env) <= {"excludes", "env_vars"}  # dependencies come from the node, not the runtime env
    assert "working_dir" not in env  # given by --working-dir
    tree = {
        "longctx_core/x.py": True,
        "ray_jobs/configs/tiny_cpu.yaml": True,
        "data/my_source.jsonl": True,
        "tests/data/runs_fixture.json": True,
        ".venv/lib/site.py": False,
        "venv/bin/python": False,
        ".git/HEAD": False,
        ".cache/longctx/tiny/model.safetensors": False,
        "runs/demo/train/adapter/adapter_model.safetensors": False,
        "longctx_core/__pycache__/x.cpython-311.pyc": False,
        "longctx.egg-info/PKG-INFO": False,
        ".pytest_cache/v": False,
        "weights/model.safetensors": False,
    }
    for rel in tree:
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text("x")
    out = tmp_path.parent / f"{tmp_path.name}.zip"
    # include_gitignore=False: the excludes alone must hold (RAY_RUNTIME_ENV_IGNORE_GITIGNORE=1, no .gitignore)
    create_package(str(tmp_path), out, include_gitignore=False, excludes=env["excludes"])
    packed = {n for n in zipfile.ZipFile(out).namelist() if not n.endswith("/")}
    assert packed == {rel for rel, keep in tree.items() if keep}


def test_working_dir_packs_well_under_the_upload_limit(tmp_path):
    out = tmp_path / "pkg.zip"
    create_package(str(REPO), out, include_gitignore=False, excludes=_runtime_env()["excludes"])
    limit = ray_constants.DASHBOARD_CLIENT_MAX_SIZE  # the job server's upload limit (100 MiB)
    assert limit == 100 * 1024 * 1024
    assert out.stat().st_size < limit / 10
    top = {n.split("/")[0] for n in zipfile.ZipFile(out).namelist()}
    assert {"longctx_core", "ray_jobs", "data_gen", "pyproject.toml"} <= top
    assert not top & {".venv", ".git", ".cache", "runs"}


# ---------------------------------------------------------------- Grafana


def test_grafana_dashboard_charts_every_project_gauge():
    dash = json.loads((CLUSTER / "grafana" / "longctx.json").read_text())
    assert dash["uid"] == "longctx" and dash["title"]
    exprs = " ".join(
        t["expr"] for p in dash["panels"] if p["type"] == "timeseries" for t in p["targets"] if "expr" in t
    )
    wanted = {
        "train": ["loss", "lr", "tokens_per_s", "mfu", "packing_efficiency", "step_time_s", "peak_mem_gb"],
        "synthesize": ["samples_per_second"],
        "evaluate": ["accuracy"],
    }
    for stage, keys in wanted.items():
        for key in keys:
            # Ray exports a ray.util.metrics Gauge to Prometheus with a `ray_` prefix (measured in the head test)
            assert f"ray_{_gauge_name(stage, key)}{{" in exprs, f"no panel for {stage}.{key}"
    names = {v["name"] for v in dash["templating"]["list"]}
    assert {"datasource", "run", "SessionName"} <= names
    for p in dash["panels"]:
        if p["type"] == "timeseries":
            assert p["datasource"]["uid"] == "${datasource}"
