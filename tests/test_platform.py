"""platform/: the cluster deployment is checked against the schemas it will meet.

- every Kubernetes object of platform/kuberay/ against Kubernetes' own schemas
  (`kubernetes-validate`, strict: an unknown field is an error), including the pod templates
  inside the RayCluster;
- the RayCluster and RayJob against the project's schema of KubeRay's ray.io/v1 fields
  (tests/data/kuberay/, with `check-jsonschema`), and that a misspelled field or a wrong type
  is rejected, since the API server would prune or refuse them only at apply time;
- the Ray autoscaler config against Ray's own schema;
- the manifests against each other and the Dockerfile (image, services, secrets, volumes);
- a server a job starts for its env runners on a two-node Ray cluster binds an address the
  other node reaches, not 127.0.0.1.
"""

from __future__ import annotations

import copy
import re
import subprocess
import sys
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
KUBERAY = ROOT / "platform" / "kuberay"
SCHEMA = Path(__file__).parent / "data" / "kuberay" / "kuberay.schema.json"
K8S_VERSION = "1.33"  # a release kubernetes-validate ships schemas for
CHECK_JSONSCHEMA = str(Path(sys.executable).with_name("check-jsonschema"))
RAY_KINDS = {"RayCluster", "RayJob"}


def _documents() -> list[tuple[str, dict]]:
    docs = []
    for path in sorted(KUBERAY.glob("*.yaml")):
        docs += [(path.name, d) for d in yaml.safe_load_all(path.read_text()) if d is not None]
    return docs


def _one(kind: str, name: str | None = None) -> dict:
    (doc,) = [d for _, d in _documents() if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)]
    return doc


def _pod_templates(doc: dict) -> list[dict]:
    spec = doc.get("spec", {})
    if doc["kind"] in RAY_KINDS:
        spec = spec.get("rayClusterSpec", spec)  # a RayJob may carry its own cluster
        groups = [spec["headGroupSpec"], *spec.get("workerGroupSpecs", [])] if "headGroupSpec" in spec else []
        return [g["template"] for g in groups]
    return [spec["template"]] if "template" in spec else []


def _containers(doc: dict) -> list[dict]:
    return [c for t in _pod_templates(doc) for c in t["spec"]["containers"]]


def _check_jsonschema(*files: Path) -> subprocess.CompletedProcess:
    return subprocess.run([CHECK_JSONSCHEMA, "--schemafile", str(SCHEMA), *map(str, files)],
                          capture_output=True, text=True, timeout=60)


def test_the_deployment_has_every_part():
    kinds = {(d["kind"], d["metadata"]["name"]) for _, d in _documents()}
    assert {("Namespace", "mem1"), ("Secret", "mem1-postgres"), ("StatefulSet", "postgres"), ("Service", "postgres"),
            ("Deployment", "mlflow"), ("Service", "mlflow"), ("PersistentVolumeClaim", "mlflow-artifacts"),
            ("PersistentVolumeClaim", "mem1-data"), ("RayCluster", "mem1"), ("RayJob", "mem1-train-grpo")} <= kinds


@pytest.mark.parametrize("name,doc", _documents(), ids=lambda v: v if isinstance(v, str) else v["kind"])
def test_kubernetes_objects_and_pod_templates_validate_strictly(name, doc):
    if doc["kind"] not in RAY_KINDS:
        assert kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
    for template in _pod_templates(doc):  # a CRD's pod template is a core PodTemplateSpec
        kubernetes_validate.validate({"apiVersion": "v1", "kind": "PodTemplate", "metadata": {"name": "t"}, "template": template},
                                     K8S_VERSION, strict=True)


def test_a_misspelled_kubernetes_field_is_rejected():
    deployment = copy.deepcopy(_one("Deployment", "mlflow"))
    deployment["spec"]["template"]["spec"]["containers"][0]["imagePullPolicyy"] = "Always"
    with pytest.raises(kubernetes_validate.ValidationError, match="imagePullPolicyy"):
        kubernetes_validate.validate(deployment, K8S_VERSION, strict=True)


def test_raycluster_and_rayjob_validate_against_the_kuberay_schema():
    result = _check_jsonschema(KUBERAY / "30-raycluster.yaml", KUBERAY / "40-rayjob.yaml")
    assert result.returncode == 0, result.stdout + result.stderr


# (kind, an edit of its spec, what check-jsonschema must say): typos and wrong types the API
# server would prune or refuse, and RayJobs KubeRay's controller would refuse at start
REJECTED = {
    "cluster-misspelled": ("RayCluster", lambda s: s["headGroupSpec"].__setitem__("rayStartParam", s["headGroupSpec"].pop("rayStartParams")), "rayStartParam"),
    "cluster-replicas-string": ("RayCluster", lambda s: s["workerGroupSpecs"][0].__setitem__("replicas", "1"), "'1' is not of type 'integer'"),
    "cluster-start-param-number": ("RayCluster", lambda s: s["headGroupSpec"]["rayStartParams"].__setitem__("num-gpus", 0), "0 is not of type 'string'"),
    "cluster-auth-mode": ("RayCluster", lambda s: s.__setitem__("authOptions", {"mode": "tokens"}), "'tokens' is not one of"),
    "cluster-missing-max": ("RayCluster", lambda s: s["workerGroupSpecs"][0].pop("maxReplicas"), "'maxReplicas' is a required property"),
    "cluster-token-without-version": ("RayCluster", lambda s: s.pop("rayVersion"), "'rayVersion' is a required property"),
    "job-misspelled": ("RayJob", lambda s: s.__setitem__("entryPoint", s.pop("entrypoint")), "entryPoint"),
    "job-ttl-without-shutdown": ("RayJob", lambda s: s.__setitem__("ttlSecondsAfterFinished", 3600), "3600 is greater than the maximum of 0"),
    "job-retries-on-a-selected-cluster": ("RayJob", lambda s: s.__setitem__("backoffLimit", 2), "2 is greater than the maximum of 0"),
    "job-no-cluster": ("RayJob", lambda s: s.pop("clusterSelector"), "is not valid under any of the given schemas"),
}


@pytest.mark.parametrize("kind,edit,message", REJECTED.values(), ids=REJECTED.keys())
def test_the_kuberay_schema_rejects_typos_wrong_types_and_refused_specs(tmp_path, kind, edit, message):
    doc = copy.deepcopy(_one(kind))
    edit(doc["spec"])
    path = tmp_path / f"{kind.lower()}.yaml"
    path.write_text(yaml.safe_dump(doc))
    result = _check_jsonschema(path)
    assert result.returncode == 1 and message in result.stdout, result.stdout + result.stderr


def test_the_ray_autoscaler_config_validates_and_activates_its_env_first():
    import ray.autoscaler

    ray_schema = Path(ray.autoscaler.__file__).parent / "ray-schema.json"
    path = ROOT / "platform" / "ray-cluster.yaml"
    result = subprocess.run([CHECK_JSONSCHEMA, "--schemafile", str(ray_schema), str(path)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    config = yaml.safe_load(path.read_text())
    for key in ("head_start_ray_commands", "worker_start_ray_commands"):
        for command in config[key]:
            if re.search(r"\bray (stop|start)\b", command):  # the env's ray, not whatever is on PATH
                assert "conda activate mem1 &&" in command.split("ray ")[0], f"{key}: {command}"
    head = " ".join(config["head_start_ray_commands"])
    assert "--dashboard-host=0.0.0.0" in head  # `ray job submit` from another host needs it


def test_the_manifests_agree_with_the_dockerfile_and_each_other():
    dockerfile = (ROOT / "Dockerfile").read_text()
    (tag,) = re.findall(r"docker build -t (\S+) \.", dockerfile)
    assert tag in (ROOT / "platform" / "README.md").read_text()
    assert "COPY environment.yml /tmp/environment.yml" in dockerfile and "-f /tmp/environment.yml" in dockerfile
    users = re.findall(r"^USER (\S+)", dockerfile, re.M)
    assert users and users[-1] not in ("root", "0")
    # the install steps environment.yml's header gives, each in the image
    header = [line.split("#")[1].strip() for line in (ROOT / "environment.yml").read_text().splitlines() if line.startswith("#")]
    steps = [line for line in header if line.startswith("pip install")]
    assert any("-e ." in s for s in steps)
    for step in steps:
        assert step in dockerfile, f"environment.yml's step {step!r} is not in the Dockerfile"

    cluster, job, mlflow = _one("RayCluster"), _one("RayJob"), _one("Deployment", "mlflow")
    for doc in (cluster, mlflow):
        assert {c["image"] for c in _containers(doc)} == {tag}
        for template in _pod_templates(doc):
            assert template["spec"]["securityContext"]["runAsNonRoot"] is True
    assert cluster["spec"]["headGroupSpec"]["rayStartParams"]["dashboard-host"] == "0.0.0.0"
    assert job["spec"]["clusterSelector"] == {"ray.io/cluster": cluster["metadata"]["name"]}
    config = job["spec"]["entrypoint"].split()[2]
    assert (ROOT / config).is_file()
    assert yaml.safe_load((ROOT / config).read_text())["retriever"]["mode"] == "ray"  # reachable from every node

    services = {d["metadata"]["name"]: d for _, d in _documents() if d["kind"] == "Service"}
    namespace = _one("Namespace")["metadata"]["name"]
    assert {d["metadata"].get("namespace") for _, d in _documents() if d["kind"] != "Namespace"} == {namespace}
    for container in _containers(cluster):
        env = {e["name"]: e["value"] for e in container["env"]}
        host, port = re.fullmatch(r"http://([^:]+):(\d+)", env["MLFLOW_TRACKING_URI"]).groups()
        assert host == f"mlflow.{namespace}.svc.cluster.local" and int(port) == services["mlflow"]["spec"]["ports"][0]["port"]
    # each Service selects pods of its workload
    for service, workload in (("mlflow", mlflow), ("postgres", _one("StatefulSet", "postgres"))):
        assert services[service]["spec"]["selector"].items() <= workload["spec"]["template"]["metadata"]["labels"].items()

    (server,) = _containers(mlflow)
    args = " ".join(server["command"])
    assert re.search(rf"--backend-store-uri=postgresql://\S+@postgres\.{namespace}\.svc\.cluster\.local:5432/", args)
    assert "--serve-artifacts" in args and "--artifacts-destination=/mlartifacts" in args
    assert {"mountPath": "/mlartifacts", "name": "artifacts"} in server["volumeMounts"]
    # every Secret and claim a pod names exists
    secrets = {d["metadata"]["name"] for _, d in _documents() if d["kind"] == "Secret"}
    claims = {d["metadata"]["name"] for _, d in _documents() if d["kind"] == "PersistentVolumeClaim"}
    for _, doc in _documents():
        for template in _pod_templates(doc):
            for volume in template["spec"].get("volumes", []):
                if "persistentVolumeClaim" in volume:
                    assert volume["persistentVolumeClaim"]["claimName"] in claims
            for container in template["spec"]["containers"]:
                for source in container.get("envFrom", []):
                    assert source["secretRef"]["name"] in secrets
    assert "change-me" in _one("Secret")["stringData"]["POSTGRES_PASSWORD"]


@pytest.fixture
def two_node_ray(monkeypatch):
    """A real Ray cluster of two nodes on this machine, on loopback addresses other than
    127.0.0.1 (so an address bound to 127.0.0.1 is told apart from the node's), with this
    process as its driver on the head. Ray's own multi-node test cluster: it stops only its
    own processes."""
    import ray
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "node_ip_address": "127.0.0.2", "include_dashboard": False})
    try:
        ray.init(address=cluster.address, _node_ip_address="127.0.0.2", log_to_driver=False, configure_logging=False)
        yield cluster
    finally:
        ray.shutdown()
        cluster.shutdown()


def test_on_two_nodes_the_retriever_for_env_runners_binds_the_node_address(two_node_ray, tmp_path, monkeypatch):
    import ray
    import requests
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    from experiments.config import TrainConfig, validate
    from experiments.domains import make_domain
    from experiments.components import service_host

    assert service_host() == "127.0.0.1"  # one node so far: loopback, as on a laptop
    two_node_ray.add_node(num_cpus=1, node_ip_address="127.0.0.3")
    two_node_ray.wait_for_nodes()
    assert service_host() == "127.0.0.2"

    data = {"data": {"world_size": "small"}, "retriever": {"mode": "http"}, "output_dir": str(tmp_path)}
    with make_domain(validate(data, TrainConfig)) as domain:  # no env runner actors: the driver alone searches
        assert re.fullmatch(r"http://127\.0\.0\.1:\d+/retrieve", domain.worker_overrides()["retriever.url"])
    config = validate({**data, "training": {"num_env_runners": 1}}, TrainConfig)
    with make_domain(config) as domain:
        url = domain.worker_overrides()["retriever.url"]
        assert re.fullmatch(r"http://127\.0\.0\.2:\d+/retrieve", url)
        (other,) = [n["NodeID"] for n in ray.nodes() if n["Alive"] and n["NodeManagerAddress"] == "127.0.0.3"]

        @ray.remote(num_cpus=0, scheduling_strategy=NodeAffinitySchedulingStrategy(other, soft=False))
        def search_from_the_other_node(url: str) -> tuple[str, list]:
            reply = requests.post(url, json={"queries": ["born"], "topk": 2}, timeout=30)
            reply.raise_for_status()
            return ray.util.get_node_ip_address(), reply.json()["result"]

        node_ip, result = ray.get(search_from_the_other_node.remote(url), timeout=120)
    assert node_ip == "127.0.0.3" and len(result) == 1 and len(result[0]) == 2


def test_two_agents_on_two_nodes_with_an_env_runner_on_each(two_node_ray, tiny_model_dir, tmp_path):
    """The multi-agent run on a two-node cluster: one env runner per node, both reaching the
    driver's retriever at the head node's address, both agents' episodes from both runners."""
    import ray

    from experiments.algorithm import build_algorithm_config, iteration_metrics
    from experiments.config import TrainConfig, validate
    from experiments.domains import make_domain

    two_node_ray.add_node(num_cpus=1, node_ip_address="127.0.0.3")
    two_node_ray.wait_for_nodes()
    config = validate({
        "output_dir": str(tmp_path), "model": {"name": tiny_model_dir},
        "sampler": {"backend": "transformers", "max_new_tokens": 8},
        "data": {"world_size": "small", "n_values": [2], "tasks_per_n": 4}, "env": {"max_turns": 2, "few_shot": False},
        "agents": {"mem1": {"memory": "mem1"}, "full": {"memory": "full_context"}},
        "algorithm": {"group_size": 2, "tasks_per_iteration": 2, "kl_coef": 0.0},
        "training": {"num_env_runners": 2, "num_cpus_per_env_runner": 1},
    }, TrainConfig)
    with make_domain(config) as domain:
        assert domain.worker_overrides()["retriever.url"].startswith("http://127.0.0.2:")
        algo = build_algorithm_config(config, domain.worker_overrides()).build_algo()
        try:
            nodes = algo.env_runner_group.foreach_env_runner(lambda r: ray.util.get_node_ip_address(), local_env_runner=False)
            m = iteration_metrics(algo.train())
        finally:
            algo.stop()
    assert sorted(nodes) == ["127.0.0.2", "127.0.0.3"]
    assert m["rollout/env_runners_died"] == 0 and m["rollout/env_runners_timed_out"] == 0
    for agent in ("mem1", "full"):  # one task per runner, G = 2: both runners' episodes for each agent
        assert m[f"agents/{agent}/rollout/episodes"] == 4
        assert m[f"agents/{agent}/rollout/search_error_rate"] == 0.0
