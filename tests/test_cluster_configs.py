"""Offline checks of the deployment files in cluster/ (no Kubernetes, no cloud, no Docker).

Whatever can be checked without a cluster is checked against the project itself or against
Ray's and MLflow's own code: the Kubernetes objects' required fields, GPU resource names,
autoscaling bounds, the entry commands and spaces, the image pins against pyproject.toml and
./dev, the launcher config against Ray's cluster schema, the upload filters against Ray's
packaging, and the MLflow Host check against the tracking URI the Ray pods use.
"""

from __future__ import annotations

import copy
import importlib.metadata
import importlib.util
import json
import re
import shlex
import sys
from pathlib import Path
from urllib.parse import urlparse
from zipfile import ZipFile

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet

from cluster import CLUSTER_DIR, KUBERAY_DIR, LAUNCHER_DIR, REPO_ROOT, load_runtime_env

tomllib = pytest.importorskip("tomllib")

GPU_RESOURCE = "nvidia.com/gpu"
GPUS_PER_NODE = 8
SHARED_MOUNT = "/mnt/shared"
README = CLUSTER_DIR / "README.md"
DOCKERFILE = CLUSTER_DIR / "Dockerfile"
MLFLOW_DOCKERFILE = CLUSTER_DIR / "mlflow.Dockerfile"
LAUNCHER = LAUNCHER_DIR / "aws.yaml"
CLUSTER_SCOPED = {"Namespace", "PersistentVolume", "ClusterRole", "ClusterRoleBinding"}
# Top-level runtime-env fields Ray knows; Ray passes unknown keys to plugins silently, so a typo
# such as `exclude:` would otherwise go unnoticed.
RUNTIME_ENV_FIELDS = {"working_dir", "excludes", "env_vars", "py_modules", "pip", "uv", "conda"}


# --------------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------------
def yaml_documents(path: Path) -> list[dict]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]


def kube_objects() -> list[dict]:
    return [doc for path in sorted(KUBERAY_DIR.glob("*.yaml")) for doc in yaml_documents(path)]


def objects_of(kind: str) -> list[dict]:
    return [obj for obj in kube_objects() if obj["kind"] == kind]


def the(kind: str) -> dict:
    found = objects_of(kind)
    assert len(found) == 1, f"expected one {kind}, found {len(found)}"
    return found[0]


def ray_pod_specs(cluster_spec: dict) -> list[tuple[str, dict]]:
    head = [("head", cluster_spec["headGroupSpec"]["template"]["spec"])]
    workers = [
        (group["groupName"], group["template"]["spec"])
        for group in cluster_spec["workerGroupSpecs"]
    ]
    return head + workers


def dockerfile_args(path: Path) -> dict[str, str]:
    return dict(re.findall(r"^ARG (\w+)=(\S*)", path.read_text(), flags=re.M))


@pytest.fixture(scope="module")
def pyproject() -> dict:
    return tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())


@pytest.fixture(scope="module")
def project_pins(pyproject) -> dict[str, Requirement]:
    return {Requirement(dep).name: Requirement(dep) for dep in pyproject["project"]["dependencies"]}


def exact_pin(requirement: Requirement) -> str:
    (spec,) = requirement.specifier
    assert spec.operator == "==", f"{requirement} is not an exact pin"
    return spec.version


def dev_torch_pins() -> dict[str, str]:
    """The pair `./dev` installs before the project (its default TORCH_SPEC)."""
    match = re.search(r'TORCH_SPEC=\$\{TORCH_SPEC:-"([^"]+)"\}', (REPO_ROOT / "dev").read_text())
    assert match, "./dev no longer sets a default TORCH_SPEC"
    return dict(item.split("==") for item in match.group(1).split())


def ray_containers(spec: dict) -> list[dict]:
    return [c for _, pod in ray_pod_specs(spec) for c in pod["containers"]]


# --------------------------------------------------------------------------------------------
# Every file parses; Kubernetes objects have their required fields
# --------------------------------------------------------------------------------------------
def test_every_yaml_file_in_cluster_parses():
    files = sorted(CLUSTER_DIR.rglob("*.yaml")) + sorted(CLUSTER_DIR.rglob("*.yml"))
    assert len(files) >= 7, files
    for path in files:
        docs = yaml_documents(path)
        assert docs, f"{path} is empty"
        assert all(isinstance(doc, dict) for doc in docs), path


def test_kubernetes_objects_have_required_fields():
    objects = kube_objects()
    kinds = {obj.get("kind") for obj in objects}
    assert {"RayCluster", "RayJob", "PersistentVolumeClaim", "Deployment", "StatefulSet"} <= kinds
    for obj in objects:
        where = f"{obj.get('kind')}/{obj.get('metadata', {}).get('name')}"
        assert obj.get("apiVersion") and obj.get("kind"), where
        assert obj.get("metadata", {}).get("name"), where
        if obj["kind"] != "Namespace":
            assert isinstance(obj.get("spec"), dict) and obj["spec"], f"{where}: no spec"
        if obj["kind"] not in CLUSTER_SCOPED:
            assert obj["metadata"].get("namespace") == "ldm-frontier", where
        if obj["kind"] in ("RayCluster", "RayJob"):
            assert obj["apiVersion"] == "ray.io/v1", where


def test_no_secret_values_are_committed():
    """Secrets are referenced by name and created by hand (cluster/README.md)."""
    for obj in kube_objects():
        assert obj["kind"] != "Secret", f"a Secret object is committed: {obj['metadata']['name']}"
    text = "\n".join(p.read_text() for p in sorted(CLUSTER_DIR.rglob("*.yaml")))
    assert not re.search(r"(?i)password\s*[:=]\s*['\"]?[A-Za-z0-9]{6,}", text)


def test_every_referenced_secret_has_a_documented_create_command():
    wanted: dict[str, set[str]] = {}

    def walk(node):
        if isinstance(node, dict):
            ref = node.get("secretKeyRef")
            if isinstance(ref, dict):
                wanted.setdefault(ref["name"], set()).add(ref["key"])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    objects = kube_objects()
    walk(objects)
    auth = the("RayCluster")["spec"]["authOptions"]
    # KubeRay reads the token from the key `auth_token` of this Secret.
    wanted.setdefault(auth["secretName"], set()).add("auth_token")

    readme = README.read_text()
    for name, keys in wanted.items():
        commands = re.findall(rf"create secret generic {re.escape(name)} [^\n`]+", readme)
        assert commands, f"cluster/README.md never creates Secret {name}"
        for key in keys:
            assert any(
                re.search(rf"--from-(literal|file)={re.escape(key)}=", c) for c in commands
            ), f"Secret {name} lacks key {key} in cluster/README.md"


# --------------------------------------------------------------------------------------------
# RayCluster
# --------------------------------------------------------------------------------------------
def test_raycluster_head_and_worker_groups(project_pins):
    cluster = the("RayCluster")
    spec = cluster["spec"]
    assert spec["rayVersion"] == exact_pin(project_pins["ray"])
    assert spec["enableInTreeAutoscaling"] is True
    assert spec["authOptions"]["mode"] == "token"

    head = spec["headGroupSpec"]
    assert isinstance(head["rayStartParams"], dict)
    # The head runs the driver, Tune and the GCS; Ray tasks and actors go to workers.
    assert head["rayStartParams"]["num-cpus"] == "0"
    assert head.get("serviceType", "ClusterIP") == "ClusterIP"

    assert spec["workerGroupSpecs"], "no worker group"
    for group in spec["workerGroupSpecs"]:
        assert group["groupName"]
        assert isinstance(group["rayStartParams"], dict)
        assert 0 <= group["minReplicas"] <= group["replicas"] <= group["maxReplicas"], group
        assert group["maxReplicas"] >= 1

    for role, pod in ray_pod_specs(spec):
        assert pod["containers"], role
        for container in pod["containers"]:
            assert container["image"], role
            resources = container["resources"]
            for part in ("requests", "limits"):
                assert {"cpu", "memory"} <= set(resources[part]), f"{role}: {part}"


def test_gpu_workers_ask_for_eight_nvidia_gpus_and_land_on_gpu_nodes():
    spec = the("RayCluster")["spec"]
    head_pod = spec["headGroupSpec"]["template"]["spec"]
    for container in head_pod["containers"]:
        for part in ("requests", "limits"):
            assert GPU_RESOURCE not in container["resources"].get(part, {}), "GPU on the CPU head"

    gpu_groups = [
        g
        for g in spec["workerGroupSpecs"]
        if GPU_RESOURCE in g["template"]["spec"]["containers"][0]["resources"]["limits"]
    ]
    assert gpu_groups, "no GPU worker group"
    for group in gpu_groups:
        pod = group["template"]["spec"]
        (container,) = pod["containers"]
        limits, requests = container["resources"]["limits"], container["resources"]["requests"]
        # Kubernetes requires requests == limits for extended resources.
        assert limits[GPU_RESOURCE] == requests[GPU_RESOURCE] == GPUS_PER_NODE
        assert group["rayStartParams"].get("num-gpus", str(GPUS_PER_NODE)) == str(GPUS_PER_NODE)
        assert pod.get("nodeSelector"), "GPU pods without a node selector"
        assert any(t.get("key") == GPU_RESOURCE for t in pod.get("tolerations", []))

    # Any resource name that mentions a GPU must be the device plugin's exact name.
    for container in ray_containers(spec):
        for part in ("requests", "limits"):
            for name in container["resources"].get(part, {}):
                if "gpu" in name.lower():
                    assert name == GPU_RESOURCE, name


def test_every_ray_pod_has_dev_shm_the_shared_volume_and_mlflow():
    spec = the("RayCluster")["spec"]
    claims = {pvc["metadata"]["name"]: pvc for pvc in objects_of("PersistentVolumeClaim")}
    for role, pod in ray_pod_specs(spec):
        volumes = {v["name"]: v for v in pod["volumes"]}
        for container in pod["containers"]:
            mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
            shm = volumes[mounts["/dev/shm"]]
            assert shm["emptyDir"]["medium"] == "Memory", role
            shared = volumes[mounts[SHARED_MOUNT]]
            claim = claims[shared["persistentVolumeClaim"]["claimName"]]
            # Train workers on different nodes write one checkpoint directory.
            assert "ReadWriteMany" in claim["spec"]["accessModes"], role
            env = {e["name"]: e for e in container["env"]}
            assert env["MLFLOW_TRACKING_URI"]["value"].startswith("http://"), role


def test_mlflow_is_a_cluster_internal_service_that_admits_the_ray_pods():
    from mlflow.server.security_utils import is_allowed_host_header

    container = ray_containers(the("RayCluster")["spec"])[0]
    uri = next(e["value"] for e in container["env"] if e["name"] == "MLFLOW_TRACKING_URI")
    parsed = urlparse(uri)
    service_name, namespace = parsed.hostname.split(".")[:2]
    service = next(s for s in objects_of("Service") if s["metadata"]["name"] == service_name)
    assert service["metadata"]["namespace"] == namespace
    assert service["spec"]["type"] == "ClusterIP"
    assert parsed.port in {p["port"] for p in service["spec"]["ports"]}

    deployment = next(
        d
        for d in objects_of("Deployment")
        if d["spec"]["selector"]["matchLabels"] == service["spec"]["selector"]
    )
    pod = deployment["spec"]["template"]["spec"]
    (server,) = pod["containers"]
    args = " ".join(server["args"])
    assert "--backend-store-uri=postgresql://" in args
    assert re.search(r"--workers=\d+", args)
    artifacts = re.search(r"--artifacts-destination=(\S+)", args).group(1)
    assert artifacts.startswith(SHARED_MOUNT + "/")
    assert server["readinessProbe"]["httpGet"]["path"] == "/health"

    # MLflow 3's Host check must admit the name the Ray pods use, and localhost for
    # `kubectl port-forward`; checked with MLflow's own matcher.
    env = {e["name"]: e.get("value") for e in server["env"]}
    allowed = [h.strip() for h in env["MLFLOW_SERVER_ALLOWED_HOSTS"].split(",")]
    assert is_allowed_host_header(allowed, parsed.netloc)
    assert is_allowed_host_header(allowed, "localhost:5000")
    assert not is_allowed_host_header(allowed, "evil.example.com")

    # Only Ray pods may call it.
    policies = [
        p
        for p in objects_of("NetworkPolicy")
        if p["spec"]["podSelector"]["matchLabels"] == service["spec"]["selector"]
    ]
    assert policies, "MLflow has no NetworkPolicy"
    sources = [
        src["podSelector"]["matchLabels"]
        for p in policies
        for r in p["spec"]["ingress"]
        for src in r["from"]
    ]
    assert {"ray.io/is-ray-node": "yes"} in sources

    # Nothing in the deployment is published outside the cluster.
    assert not objects_of("Ingress")
    for svc in objects_of("Service"):
        assert svc["spec"].get("type", "ClusterIP") == "ClusterIP", svc["metadata"]["name"]


def test_postgres_backs_mlflow_on_its_own_volume():
    postgres = next(s for s in objects_of("StatefulSet") if "postgres" in s["metadata"]["name"])
    (container,) = postgres["spec"]["template"]["spec"]["containers"]
    assert container["image"].startswith("postgres:")
    assert container["readinessProbe"]
    assert postgres["spec"]["volumeClaimTemplates"], "PostgreSQL data would die with its pod"
    service = next(
        s for s in objects_of("Service") if s["metadata"]["name"] == postgres["spec"]["serviceName"]
    )
    assert 5432 in {p["port"] for p in service["spec"]["ports"]}


# --------------------------------------------------------------------------------------------
# RayJob and the entry commands
# --------------------------------------------------------------------------------------------
def test_rayjob_targets_the_cluster_with_the_shared_runtime_env():
    from ray.runtime_env import RuntimeEnv

    job = the("RayJob")
    spec = job["spec"]
    cluster = the("RayCluster")
    assert spec["entrypoint"].startswith("python -m orchestrator.frontier ")
    if "clusterSelector" in spec:
        assert spec["clusterSelector"] == {"ray.io/cluster": cluster["metadata"]["name"]}
    else:
        assert spec["rayClusterSpec"]["headGroupSpec"]

    job_env = yaml.safe_load(spec["runtimeEnvYAML"])
    assert set(job_env) <= RUNTIME_ENV_FIELDS, set(job_env)
    # Ray's own validation of the fields; it wants the working dir to exist, and the image's
    # /opt/ldm-frontier is this checkout.
    RuntimeEnv(**dict(job_env, working_dir=str(REPO_ROOT)))
    file_env = yaml.safe_load((CLUSTER_DIR / "runtime_env.yaml").read_text())
    assert job_env["env_vars"] == file_env["env_vars"]
    assert job_env["excludes"] == file_env["excludes"]
    # The RayJob's working dir is the checkout baked into the image.
    workdir = re.search(r"^WORKDIR (\S+)", DOCKERFILE.read_text(), flags=re.M).group(1)
    assert job_env["working_dir"] == workdir


def test_rayjob_command_line_validates_with_the_cli(tmp_path, capsys):
    """The RayJob's exact arguments, with its cluster paths mapped into tmp, pass `--dry-run`."""
    from orchestrator.frontier import main

    argv = shlex.split(the("RayJob")["spec"]["entrypoint"])[3:]
    # The preflight wants the dataset's layout (a class folder with an image in each split), as
    # it will be on the cluster.
    imagenet = tmp_path / "imagenet"
    for split in ("train", "val"):
        (imagenet / split / "n01440764").mkdir(parents=True)
        (imagenet / split / "n01440764" / "img.JPEG").write_bytes(b"not decoded by a dry run")
    mapped = []
    for arg in argv:
        if arg.startswith(SHARED_MOUNT + "/imagenet"):
            arg = str(imagenet)
        elif arg.startswith(SHARED_MOUNT):
            arg = str(tmp_path / "storage")
        mapped.append(arg)
    assert str(imagenet) in mapped and str(tmp_path / "storage") in mapped, argv

    code = main([*mapped, "--dry-run"])
    out = capsys.readouterr()
    assert code == 0, out.err
    assert "sweep `paper_table2`" in out.out
    # A dry run writes nothing, not even the storage root.
    assert not (tmp_path / "storage").exists()


def cluster_text_files() -> list[Path]:
    files = [p for p in CLUSTER_DIR.rglob("*") if p.is_file() and "__pycache__" not in p.parts]
    return [p for p in files if p.suffix != ".py"]


def test_every_python_module_entry_command_exists():
    found = set()
    for path in cluster_text_files():
        found |= set(re.findall(r"python3? -m ([A-Za-z_][\w.]*)", path.read_text()))
    assert "orchestrator.frontier" in found
    for module in found:
        assert importlib.util.find_spec(module) is not None, f"no module {module}"


def test_every_space_named_in_cluster_files_exists():
    from search_spaces import space_path

    spaces = set()
    for path in cluster_text_files():
        spaces |= set(re.findall(r"--space[ =]([\w./-]+)(?=[\s`'\"]|$)", path.read_text()))
    assert "search_spaces/paper_table2.yaml" in spaces
    for space in spaces:
        resolved = space_path(space)
        resolved = resolved if resolved.is_absolute() else REPO_ROOT / resolved
        assert resolved.is_file(), space


def test_readme_has_two_short_step_lists_and_the_gpu_spaces():
    readme = README.read_text()
    sections = re.split(r"^## ", readme, flags=re.M)
    step_lists = [s for s in sections if s.startswith("From zero to a sweep")]
    assert len(step_lists) == 2, "expected a KubeRay and a cluster-launcher walkthrough"
    for section in step_lists:
        steps = [int(n) for n in re.findall(r"^(\d+)\. ", section, flags=re.M)]
        assert steps == list(range(1, len(steps) + 1)) and 3 <= len(steps) <= 10, steps
    for space in ("paper_table2", "margins", "paper_release"):
        assert space in readme
        assert (REPO_ROOT / "search_spaces" / f"{space}.yaml").is_file()
    assert "port-forward svc/mlflow" in readme


# --------------------------------------------------------------------------------------------
# Images
# --------------------------------------------------------------------------------------------
def test_node_image_pins_match_the_project(pyproject, project_pins):
    args = dockerfile_args(DOCKERFILE)
    text = DOCKERFILE.read_text()

    # Python: what the project allows, and the minor version the venv here was validated on.
    python = args["PYTHON_VERSION"]
    assert SpecifierSet(pyproject["project"]["requires-python"]).contains(f"{python}.0")
    assert python == f"{sys.version_info.major}.{sys.version_info.minor}"

    # torch/torchvision: the pair ./dev installs, inside pyproject's ranges.
    dev = dev_torch_pins()
    assert args["TORCH_VERSION"] == dev["torch"]
    assert args["TORCHVISION_VERSION"] == dev["torchvision"]
    assert project_pins["torch"].specifier.contains(args["TORCH_VERSION"])
    assert project_pins["torchvision"].specifier.contains(args["TORCHVISION_VERSION"])

    # ray, mlflow and the rest come from pyproject.toml through `pip install .`; any pin the
    # Dockerfile states itself must agree with it.
    assert re.search(r"pip install \. ", text) and "pip install --no-deps ." in text
    for name, version in re.findall(r'"([A-Za-z0-9_.\[\],-]+)==([\w.]+)"', text):
        base = Requirement(name).name
        if base in project_pins:
            assert project_pins[base].specifier.contains(version), f"{name}=={version}"

    # A CUDA runtime base whose major matches the CUDA of the torch wheel it installs.
    base = args["CUDA_BASE_IMAGE"]
    assert base.startswith("nvidia/cuda:") and "runtime" in base
    cuda_major = re.match(r"nvidia/cuda:(\d+)\.", base).group(1)
    if importlib.metadata.version("torch") == args["TORCH_VERSION"]:
        runtime = [
            r
            for r in importlib.metadata.requires("torch") or []
            if r.startswith("nvidia-cuda-runtime")
        ]
        if runtime:
            assert exact_pin(Requirement(runtime[0])).split(".")[0] == cuda_major, runtime


def test_mlflow_server_image_matches_the_clients(project_pins):
    text = MLFLOW_DOCKERFILE.read_text()
    (version,) = re.findall(r'"mlflow==([\w.]+)"', text)
    assert version == exact_pin(project_pins["mlflow"])
    base_python = re.search(r"^FROM python:(\d+\.\d+)", text, flags=re.M).group(1)
    assert base_python == dockerfile_args(DOCKERFILE)["PYTHON_VERSION"]
    for deployment in objects_of("Deployment"):
        for container in deployment["spec"]["template"]["spec"]["containers"]:
            if container["name"] == "mlflow":
                assert container["image"].endswith(f":{version}")


def test_one_image_for_every_ray_node():
    images = {c["image"] for c in ray_containers(the("RayCluster")["spec"])}
    images.add(yaml.safe_load(LAUNCHER.read_text())["docker"]["image"])
    assert len(images) == 1, images


def test_build_context_filter_keeps_code_and_drops_data():
    lines = {
        line.strip()
        for line in (CLUSTER_DIR / "Dockerfile.dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    assert {".git", ".venv", "runs", "mlruns", "data", "checkpoints", "caches"} <= lines
    for needed in ("pyproject.toml", "README.md", ".rayignore", "orchestrator", "workloads"):
        assert needed not in lines


# --------------------------------------------------------------------------------------------
# Cluster launcher
# --------------------------------------------------------------------------------------------
def launcher_config() -> dict:
    return yaml.safe_load(LAUNCHER.read_text())


def test_launcher_config_passes_rays_own_schema():
    import jsonschema
    import ray.autoscaler
    from ray.autoscaler._private.util import prepare_config, validate_config

    schema_path = Path(ray.autoscaler.__file__).parent / "ray-schema.json"
    schema = json.loads(schema_path.read_text())
    raw = launcher_config()
    # The file as written (the schema's references are local "#/definitions/..." ones).
    jsonschema.validate(raw, schema)
    # And as `ray up` sees it: merged with the AWS defaults, then Ray's full validation.
    prepared = prepare_config(copy.deepcopy(raw))
    validate_config(prepared)
    assert prepared["head_node_type"] in prepared["available_node_types"]

    # The validator is live: a misspelt top-level key fails.
    broken = dict(raw, max_worker=raw["max_workers"])
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(broken, schema)


def test_launcher_node_types_and_minimal_setup():
    config = launcher_config()
    types = config["available_node_types"]
    head = types[config["head_node_type"]]
    assert head["resources"].get("CPU") == 0
    assert head["node_config"]["InstanceType"].startswith("m5.")

    gpu_types = {name: t for name, t in types.items() if t["resources"].get("GPU")}
    instance_types = {t["node_config"]["InstanceType"] for t in gpu_types.values()}
    assert {"p4d.24xlarge", "p5.48xlarge"} <= instance_types
    for name, node_type in gpu_types.items():
        assert node_type["resources"]["GPU"] == GPUS_PER_NODE, name
        assert 0 <= node_type["min_workers"] <= node_type["max_workers"], name
    assert sum(t.get("min_workers", 0) for t in types.values()) <= config["max_workers"]
    assert any(t["max_workers"] >= 1 for t in gpu_types.values())

    # The image carries the dependencies.
    for key in ("setup_commands", "head_setup_commands", "worker_setup_commands"):
        assert config[key] == [], key
    options = " ".join(config["docker"]["run_options"])
    assert f"-v {SHARED_MOUNT}:{SHARED_MOUNT}" in options
    assert "RAY_AUTH_MODE=token" in options
    # Secrets come from the user's machine, never from the repository.
    for local in config["file_mounts"].values():
        assert local.startswith("~/"), local


# --------------------------------------------------------------------------------------------
# Upload filters and the runtime env
# --------------------------------------------------------------------------------------------
CODE = [
    "orchestrator/frontier.py",
    "workloads/datasets/embedded.py",
    "search_spaces/smoke.yaml",
    "cluster/runtime_env.yaml",
    "README.md",
    "pyproject.toml",
]
JUNK = [
    ".git/HEAD",
    ".venv/bin/python",
    "orchestrator/__pycache__/frontier.cpython-311.pyc",
    "ldm_frontier.egg-info/PKG-INFO",
    ".cache/torch/hub/x.bin",
    ".ruff_cache/0.1/x",
    "runs/tokenizers/abc/checkpoint_0/model.pt",
    "runs/caches/abc/part-0.bin",
    "mlruns/0/meta.yaml",
    "mlflow.db",
    "mlartifacts/1/grid.png",
    "ray_results/exp/result.json",
    "data/imagenet/train/n01/a.JPEG",
    "datasets/val/n01/b.JPEG",
    "imagenet/train/n01/c.JPEG",
    "checkpoints/step_1000/state.bin",
    "caches/shard-0.bin",
    "latents/x.bin",
    "vavae.ckpt",
    "weights.safetensors",
    "latents-0.parquet",
    "auth_token",
    "mlflow.env",
]


def packaged(root: Path, excludes: list[str], tmp_path: Path) -> set[str]:
    """The file list Ray's own working-dir packaging produces for `root`."""
    from ray._private.runtime_env.packaging import _zip_files

    out = tmp_path / f"pkg-{len(list(tmp_path.glob('pkg-*')))}.zip"
    _zip_files(str(root), excludes, str(out), include_gitignore=False)
    with ZipFile(out) as archive:
        return {name for name in archive.namelist() if not name.endswith("/")}


def make_tree(root: Path, with_rayignore: bool) -> None:
    for rel in CODE + JUNK:
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("x")
    if with_rayignore:
        (root / ".rayignore").write_text((REPO_ROOT / ".rayignore").read_text())


@pytest.mark.parametrize("source", [".rayignore", "runtime_env excludes"])
def test_upload_filter_keeps_code_and_drops_data_caches_and_trackers(tmp_path, source):
    """Each filter on its own (no .gitignore either) keeps the job upload to code."""
    root = tmp_path / "checkout"
    make_tree(root, with_rayignore=source == ".rayignore")
    excludes = load_runtime_env()["excludes"] if source != ".rayignore" else []

    files = packaged(root, excludes, tmp_path) - {".rayignore"}

    assert files == set(CODE), {"leaked": files - set(CODE), "lost": set(CODE) - files}


def test_the_real_checkout_uploads_small_and_complete(tmp_path):
    env = load_runtime_env()
    files = packaged(Path(env["working_dir"]), env["excludes"], tmp_path)
    assert {"orchestrator/frontier.py", "cluster/kuberay/30-raycluster.yaml"} <= files
    assert not [f for f in files if f.startswith((".venv/", ".git/", "runs/", "mlruns/"))]
    archive = next(tmp_path.glob("pkg-*.zip"))
    assert archive.stat().st_size < 20 * 2**20, archive.stat().st_size


def test_load_runtime_env_resolves_and_validates(tmp_path):
    from ray.runtime_env import RuntimeEnv

    env = load_runtime_env()
    assert set(env) <= RUNTIME_ENV_FIELDS, set(env)
    assert Path(env["working_dir"]) == REPO_ROOT
    assert all(isinstance(v, str) for v in env["env_vars"].values())
    assert env["env_vars"]["RAY_TRAIN_ENABLE_V2_MIGRATION_WARNINGS"] == "0"
    assert "HF_HUB_OFFLINE" not in env["env_vars"]  # left to the cluster (internet or not)
    RuntimeEnv(**env)

    merged = load_runtime_env(env_vars={"HF_HUB_OFFLINE": "1"})
    assert merged["env_vars"]["HF_HUB_OFFLINE"] == "1"
    assert merged["env_vars"]["MLFLOW_ENABLE_SYSTEM_METRICS_LOGGING"] == "true"
    assert (
        load_runtime_env(working_dir="s3://bucket/pkg.zip")["working_dir"] == "s3://bucket/pkg.zip"
    )

    with pytest.raises(TypeError):
        load_runtime_env(env_vars={"WORKERS": 8})
    with pytest.raises(ValueError, match="orchestrator"):
        load_runtime_env(working_dir=tmp_path)
