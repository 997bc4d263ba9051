"""`helm install` of the chart into Berth's sandbox (the simulated Kubernetes API server of
`berth sandbox`), by real Helm v4 through helm-python-sdk, as a user would try it:

- the install with the seed's values creates every object of the release, each readable at
  the path discovery gives for its kind, and the sandbox's controllers act on them (each
  Deployment gets its ReplicaSet);
- a value the schema refuses fails the install with the key named, and nothing is created;
- `helm uninstall` removes every object it created.

Helm's release records use the `memory` storage driver here. Helm keeps them in Secrets through
client-go's typed clientset, which sends `application/vnd.kubernetes.protobuf`, and the
sandbox does not decode protobuf bodies yet (issue 18); the chart's own objects go through
Helm's unstructured client as JSON, and those are what this test checks.

Needs the `berth` binary (target/debug/berth, or BERTH_BIN): scripts/test builds it first.
Without it the test fails, never skips.
"""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import tempfile
import time
import unittest
import urllib.error
import urllib.request

import helm_python as helm
import yaml

ROOT = pathlib.Path(__file__).resolve().parents[3]
CHART = ROOT / "deploy" / "helm" / "berth"
SEED_VALUES = pathlib.Path(__file__).resolve().parent / "fixtures" / "seed-helm-values.yaml"
NAMESPACE = "karpenter"


def berth_binary() -> pathlib.Path:
    path = pathlib.Path(os.environ.get("BERTH_BIN", ROOT / "target" / "debug" / "berth"))
    if not path.is_file():
        raise AssertionError(f"{path} is missing: build it with `cargo build -p berth-cli` (scripts/test does)")
    return path


class Sandbox:
    """`berth sandbox` on 127.0.0.1, port 0, stopped on close."""

    def __init__(self) -> None:
        self.dir = tempfile.TemporaryDirectory(prefix="berth-helm-")
        self.kubeconfig = pathlib.Path(self.dir.name) / "kubeconfig"
        self.log = open(pathlib.Path(self.dir.name) / "sandbox.log", "w+")
        self.proc = subprocess.Popen(
            [str(berth_binary()), "sandbox", "--listen", "127.0.0.1:0", "--kubeconfig-out", str(self.kubeconfig)],
            stdout=self.log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "BERTH_LOG": "warn"},
        )
        deadline = time.monotonic() + 60
        while True:
            self.log.seek(0)
            if "sandbox ready" in self.log.read():
                break
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.log.seek(0)
                raise AssertionError(f"berth sandbox did not get ready:\n{self.log.read()}")
            time.sleep(0.2)
        self.server = yaml.safe_load(self.kubeconfig.read_text())["clusters"][0]["cluster"]["server"]
        self._plurals: dict[tuple[str, str], tuple[str, bool]] = {}

    def close(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()
        self.dir.cleanup()

    def get(self, path: str) -> dict | None:
        """The object at `path`, or None on 404."""
        try:
            with urllib.request.urlopen(self.server + path, timeout=10) as resp:
                return json.load(resp)
        except urllib.error.HTTPError as e:
            if e.code == 404:
                return None
            raise

    def path(self, obj: dict, namespace: str) -> str:
        """The object's path, from the server's discovery of its group version."""
        api_version, kind = obj["apiVersion"], obj["kind"]
        if (api_version, kind) not in self._plurals:
            base = "/api/v1" if api_version == "v1" else f"/apis/{api_version}"
            listing = self.get(base)
            if listing is None:
                raise AssertionError(f"the sandbox does not serve {api_version}")
            for r in listing["resources"]:
                if "/" not in r["name"]:
                    self._plurals[(api_version, r["kind"])] = (r["name"], r["namespaced"])
        if (api_version, kind) not in self._plurals:
            raise AssertionError(f"the sandbox's discovery of {api_version} has no {kind}")
        plural, namespaced = self._plurals[(api_version, kind)]
        base = "/api/v1" if api_version == "v1" else f"/apis/{api_version}"
        name = obj["metadata"]["name"]
        if namespaced:
            return f"{base}/namespaces/{obj['metadata'].get('namespace', namespace)}/{plural}/{name}"
        return f"{base}/{plural}/{name}"


def manifest_objects(release: dict) -> list[dict]:
    return [d for d in yaml.safe_load_all(release["manifest"]) if d]


class SandboxInstallTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls) -> None:
        cls.sandbox = Sandbox()
        cls.helm = helm.Config(kubeconfig_path=cls.sandbox.kubeconfig, namespace=NAMESPACE, storage_driver="memory")
        cls.chart = helm.Chart.load(str(CHART))

    @classmethod
    def tearDownClass(cls) -> None:
        cls.helm.close()
        cls.sandbox.close()

    def wait_for(self, what: str, check, timeout: float = 20.0):
        deadline = time.monotonic() + timeout
        while True:
            got = check()
            if got:
                return got
            if time.monotonic() > deadline:
                self.fail(f"timed out waiting for {what}")
            time.sleep(0.2)

    def test_install_with_seed_values_creates_every_object_and_uninstall_removes_them(self) -> None:
        values = yaml.safe_load(SEED_VALUES.read_text())
        release = self.helm.install(
            self.chart, "berth", values, namespace=NAMESPACE, create_namespace=True, timeout=60
        )
        self.assertEqual(release["status"], "deployed")
        objects = manifest_objects(release)
        kinds = {o["kind"] for o in objects}
        for kind in ("Deployment", "Service", "ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding"):
            self.assertIn(kind, kinds, f"the release has no {kind}")
        self.assertIsNotNone(self.sandbox.get(f"/api/v1/namespaces/{NAMESPACE}"), "create_namespace made no namespace")
        for obj in objects:
            path = self.sandbox.path(obj, NAMESPACE)
            stored = self.sandbox.get(path)
            self.assertIsNotNone(stored, f"{obj['kind']}/{obj['metadata']['name']} is not at {path}")
            self.assertEqual(stored["metadata"].get("labels", {}).get("app.kubernetes.io/managed-by"), "Helm", path)
        # The sandbox's controllers act on what Helm created: each Deployment gets a ReplicaSet.
        for dep in (o for o in objects if o["kind"] == "Deployment"):
            name = dep["metadata"]["name"]

            def owned() -> bool:
                rs = self.sandbox.get(f"/apis/apps/v1/namespaces/{NAMESPACE}/replicasets")["items"]
                return any(r["metadata"].get("ownerReferences", [{}])[0].get("name") == name for r in rs)

            self.wait_for(f"a ReplicaSet of {name}", owned)

        self.helm.uninstall("berth", timeout=60)
        for obj in objects:
            path = self.sandbox.path(obj, NAMESPACE)
            self.wait_for(f"{path} to be deleted", lambda p=path: self.sandbox.get(p) is None)

    def test_a_value_the_schema_refuses_fails_the_install_naming_the_key_and_creates_nothing(self) -> None:
        with self.assertRaises(helm.HelmError) as err:
            self.helm.install(
                self.chart, "refused", {"scheduler": {"replicas": "two"}}, namespace=NAMESPACE, create_namespace=True, timeout=30
            )
        self.assertIn("replicas", str(err.exception))
        deployments = self.sandbox.get(f"/apis/apps/v1/namespaces/{NAMESPACE}/deployments")["items"]
        self.assertEqual([d["metadata"]["name"] for d in deployments if d["metadata"]["name"].startswith("refused")], [])


if __name__ == "__main__":
    unittest.main()
