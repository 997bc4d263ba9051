"""Tests of the Helm chart deploy/helm/berth, rendered and linted by real Helm (v4, through the
helm-python-sdk library) and checked against the Kubernetes API's types (the official
`kubernetes` Python client's models).

Run: .venv/bin/python -m unittest discover -s deploy/helm/tests -v   (scripts/test does).
Without helm_python or kubernetes the import below fails and so does the run: never a skip.
"""

from __future__ import annotations

import copy
import json
import pathlib
import re
import unittest

import helm_python as helm
import kubernetes.client as k8s
import yaml

ROOT = pathlib.Path(__file__).resolve().parents[3]
CHART = ROOT / "deploy" / "helm" / "berth"
SEED_VALUES = pathlib.Path(__file__).resolve().parent / "fixtures" / "seed-helm-values.yaml"
RELEASE, NAMESPACE = "berth", "karpenter"
SERVICES = ("watcher", "scheduler", "actuator")

# Kinds the kubernetes client has no model for: the fields the chart may set, checked by hand
# (a key outside these fails like an unknown field of a modelled kind).
CUSTOM_KINDS = {
    ("monitoring.coreos.com/v1", "ServiceMonitor"): {
        "spec": {
            "namespaceSelector": {"matchNames": None},
            "selector": {"matchLabels": None},
            "endpoints": [{"port": None, "path": None, "interval": None, "scrapeTimeout": None}],
        }
    },
    ("cert-manager.io/v1", "Certificate"): {
        "spec": {
            "secretName": None,
            "duration": None,
            "renewBefore": None,
            "privateKey": {"algorithm": None, "size": None, "rotationPolicy": None},
            "usages": None,
            "dnsNames": None,
            "issuerRef": {"name": None, "kind": None, "group": None},
        }
    },
}

_chart = helm.Chart.load(str(CHART))


def render(values: dict | None = None) -> list[dict]:
    """The chart's objects for `values`, as Helm renders them for an install."""
    manifests = _chart.render(values or {}, name=RELEASE, namespace=NAMESPACE, is_install=True)
    objects = []
    for path, text in sorted(manifests.items()):
        if path.endswith("NOTES.txt"):
            continue
        for doc in yaml.safe_load_all(text):
            if doc is not None:
                doc["__template"] = path
                objects.append(doc)
    return objects


def notes(values: dict | None = None) -> str:
    manifests = _chart.render(values or {}, name=RELEASE, namespace=NAMESPACE, is_install=True)
    return manifests[f"{CHART.name}/templates/NOTES.txt"]


def seed_values() -> dict:
    return yaml.safe_load(SEED_VALUES.read_text())


def find(objects, kind, name=None):
    found = [o for o in objects if o["kind"] == kind and (name is None or o["metadata"]["name"] == name)]
    return found


def one(objects, kind, name):
    found = find(objects, kind, name)
    if len(found) != 1:
        raise AssertionError(f"{kind}/{name}: {len(found)} rendered, want 1")
    return found[0]


def deployment(objects, service):
    return one(objects, "Deployment", f"{RELEASE}-{service}")


def container(objects, service):
    (c,) = deployment(objects, service)["spec"]["template"]["spec"]["containers"]
    return c


def env(objects, service) -> dict:
    """The container's env as name -> value, or name -> valueFrom for downward API values."""
    out = {}
    for e in container(objects, service)["env"]:
        if e["name"] in out:
            raise AssertionError(f"{service}: env {e['name']} is set twice")
        out[e["name"]] = e.get("value", e.get("valueFrom"))
    return out


def model_name(api_version: str, kind: str) -> str:
    version = api_version.split("/")[-1]
    return version[0].upper() + version[1:] + kind


def check_model(value, type_name: str, path: str) -> None:
    """Walks `value` against the kubernetes client's openapi_types / attribute_map: every key
    must be a field of its type, and scalars must have their type."""
    # The client spells containers list[X] / dict(str, X) (older) or List[X] / Dict[str, X].
    if type_name.startswith(("list[", "List[")):
        if not isinstance(value, list):
            raise AssertionError(f"{path}: want a list ({type_name}), got {value!r}")
        for i, item in enumerate(value):
            check_model(item, type_name[5:-1], f"{path}[{i}]")
        return
    if type_name.startswith(("dict(", "Dict[")):
        if not isinstance(value, dict):
            raise AssertionError(f"{path}: want a map ({type_name}), got {value!r}")
        inner = type_name[5:-1].split(", ", 1)[1]
        for k, v in value.items():
            check_model(v, inner, f"{path}.{k}")
        return
    scalars = {
        "str": (str,),
        "int": (int,),
        "float": (int, float),
        "bool": (bool,),
        "datetime": (str,),
        "date": (str,),
        "bytes": (str,),
    }
    if type_name in scalars:
        ok = isinstance(value, scalars[type_name]) and not (
            type_name in ("int", "float") and isinstance(value, bool)
        )
        if not ok:
            raise AssertionError(f"{path}: want {type_name}, got {value!r}")
        return
    if type_name == "object":  # IntOrString, Quantity, RawExtension, JSON
        return
    model = getattr(k8s, type_name)
    if not isinstance(value, dict):
        raise AssertionError(f"{path}: want an object ({type_name}), got {value!r}")
    fields = {json_key: attr for attr, json_key in model.attribute_map.items()}
    for key, v in value.items():
        if key not in fields:
            raise AssertionError(f"{path}.{key}: not a field of {type_name}")
        check_model(v, model.openapi_types[fields[key]], f"{path}.{key}")


def check_custom(value, shape, path: str) -> None:
    if shape is None:
        return
    if isinstance(shape, list):
        for i, item in enumerate(value):
            check_custom(item, shape[0], f"{path}[{i}]")
        return
    for key, v in value.items():
        if key not in shape:
            raise AssertionError(f"{path}.{key}: not a field the chart may set")
        check_custom(v, shape[key], f"{path}.{key}")


def check_object(obj: dict) -> None:
    """Fails when `obj` is not a valid object of its kind: an unknown field anywhere, a scalar
    of the wrong type, or a required field missing (the client's own validation)."""
    obj = {k: v for k, v in obj.items() if k != "__template"}
    where = f"{obj.get('kind')}/{obj.get('metadata', {}).get('name')}"
    key = (obj["apiVersion"], obj["kind"])
    if key in CUSTOM_KINDS:
        check_model(obj["metadata"], "V1ObjectMeta", f"{where}.metadata")
        check_custom(
            {k: v for k, v in obj.items() if k not in ("apiVersion", "kind", "metadata")},
            CUSTOM_KINDS[key],
            where,
        )
        return
    name = model_name(*key)
    if not hasattr(k8s, name):
        raise AssertionError(f"{where}: no model {name} for {key}")
    check_model(obj, name, where)
    # Required fields and enums, as the client checks them when it builds the model.
    k8s.ApiClient()._ApiClient__deserialize(obj, name)


def all_toggles_on() -> dict:
    values = seed_values()
    values.update(
        {
            "tls": {"enabled": True, "certManager": {"enabled": True, "issuerRef": {"name": "berth-ca"}}},
            "serviceMonitor": {"enabled": True, "additionalLabels": {"release": "prometheus"}},
            "dashboard": {"enabled": True},
            "actuator": {"prices": {"on_demand_discount_percent": 12}},
        }
    )
    for s in SERVICES:
        values.setdefault(s, {})["podDisruptionBudget"] = {"enabled": True}
    return values


class Lint(unittest.TestCase):
    def assert_clean(self, report):
        self.assertEqual(report["errors"], [], report)
        problems = [m for m in report["messages"] if m["severity"] >= 2]
        self.assertEqual(problems, [], report)
        self.assertEqual(report["total_charts_linted"], 1)

    def test_lint_passes_with_defaults(self):
        self.assert_clean(helm.lint(str(CHART), strict=True, namespace=NAMESPACE))

    def test_lint_passes_with_the_seed_values(self):
        self.assert_clean(helm.lint(str(CHART), seed_values(), strict=True, namespace=NAMESPACE))

    def test_lint_reports_a_schema_error(self):
        report = helm.lint(str(CHART), {"watcher": {"replicas": -1}}, namespace=NAMESPACE)
        text = json.dumps(report)
        self.assertIn("/watcher/replicas", text)


class Render(unittest.TestCase):
    def test_defaults(self):
        objects = render()
        for s in SERVICES:
            d = deployment(objects, s)
            self.assertEqual(d["spec"]["replicas"], 2, s)
            self.assertEqual(env(objects, s)["BERTH_LEADER_ELECT"], "true", s)
            self.assertEqual(
                container(objects, s)["image"], f"ghcr.io/berth-dev/berth-{s}:{_chart.metadata['appVersion']}"
            )
            one(objects, "ServiceAccount", f"{RELEASE}-{s}")
            one(objects, "Service", f"{RELEASE}-{s}-metrics")
            one(objects, "Role", f"{RELEASE}-{s}-leader-election")
        for s in ("scheduler", "actuator"):
            one(objects, "Service", f"{RELEASE}-{s}")
        self.assertEqual(find(objects, "Service", f"{RELEASE}-watcher"), [])
        for kind in ("PodDisruptionBudget", "ServiceMonitor", "Certificate"):
            self.assertEqual(find(objects, kind), [], kind)
        self.assertEqual(env(objects, "actuator")["BERTH_PROVIDER"], "ec2")

    def test_seed_values_are_accepted_as_they_are(self):
        values = seed_values()
        objects = render(values)
        sa = one(objects, "ServiceAccount", f"{RELEASE}-actuator")
        self.assertEqual(
            sa["metadata"]["annotations"]["eks.amazonaws.com/role-arn"],
            values["serviceAccount"]["annotations"]["eks.amazonaws.com/role-arn"],
        )
        # The actuator's pods run as that ServiceAccount; nothing else carries the role.
        self.assertEqual(
            deployment(objects, "actuator")["spec"]["template"]["spec"]["serviceAccountName"], f"{RELEASE}-actuator"
        )
        for s in ("watcher", "scheduler"):
            other = one(objects, "ServiceAccount", f"{RELEASE}-{s}")
            self.assertNotIn("annotations", other["metadata"], s)
        e = env(objects, "actuator")
        self.assertEqual(e["BERTH_CLUSTER_NAME"], values["settings"]["clusterName"])
        self.assertEqual(e["BERTH_CLUSTER_ENDPOINT"], values["settings"]["clusterEndpoint"])

    def test_settings_map_onto_the_services_env(self):
        objects = render(
            {
                "settings": {
                    "clusterName": "prod",
                    "clusterEndpoint": "https://ABCD.gr7.eu-west-1.eks.amazonaws.com",
                    "clusterCABundle": "LS0tLS1CRUdJTg==",
                    "interruptionQueue": "prod-interruptions",
                    "isolatedVPC": True,
                    "featureGates": {"spotToSpotConsolidation": True},
                    "batchIdleDuration": "2s",
                    "batchMaxDuration": "30s",
                },
                "scheduler": {"disruption": False},
            }
        )
        a = env(objects, "actuator")
        self.assertEqual(a["BERTH_CLUSTER_NAME"], "prod")
        self.assertEqual(a["BERTH_CLUSTER_CA_BUNDLE"], "LS0tLS1CRUdJTg==")
        self.assertEqual(a["BERTH_INTERRUPTION_QUEUE"], "prod-interruptions")
        self.assertEqual(a["BERTH_ISOLATED_VPC"], "true")
        self.assertEqual(a["BERTH_REGION"], "eu-west-1")  # from the EKS endpoint
        s = env(objects, "scheduler")
        self.assertEqual(s["BERTH_BATCH_IDLE"], "2s")
        self.assertEqual(s["BERTH_BATCH_MAX"], "30s")
        self.assertEqual(s["BERTH_DISRUPTION"], "false")
        gates = dict(g.split("=") for g in s["BERTH_FEATURE_GATES"].split(","))
        self.assertEqual(gates["SpotToSpotConsolidation"], "true")
        self.assertEqual(gates["NodeRepair"], "false")
        # Settings go only where they are read.
        for other in ("watcher", "scheduler"):
            self.assertNotIn("BERTH_CLUSTER_NAME", env(objects, other))
        self.assertNotIn("BERTH_FEATURE_GATES", a)

    def test_an_explicit_region_wins(self):
        objects = render(
            {"settings": {"clusterEndpoint": "https://X.gr7.eu-west-1.eks.amazonaws.com"}, "actuator": {"region": "us-west-2"}}
        )
        self.assertEqual(env(objects, "actuator")["BERTH_REGION"], "us-west-2")
        self.assertNotIn("BERTH_REGION", env(render(), "actuator"))
        self.assertIn("us-east-1", notes())

    def test_services_listen_on_all_addresses_and_find_each_other(self):
        objects = render()
        ports = {"watcher": {"admin": 9090}, "scheduler": {"grpc": 50051, "admin": 9091}, "actuator": {"grpc": 50052, "admin": 9092}}
        for s, p in ports.items():
            e = env(objects, s)
            self.assertEqual(e["BERTH_ADMIN_ADDR"], f"0.0.0.0:{p['admin']}", s)
            if "grpc" in p:
                self.assertEqual(e["BERTH_GRPC_ADDR"], f"0.0.0.0:{p['grpc']}", s)
            else:
                self.assertNotIn("BERTH_GRPC_ADDR", e)
        for client, server, var in (("watcher", "scheduler", "BERTH_SCHEDULER_URL"), ("scheduler", "actuator", "BERTH_ACTUATOR_URL")):
            url = env(objects, client)[var]
            m = re.fullmatch(r"http://([^.]+)\.([^.]+)\.svc:(\d+)", url)
            self.assertIsNotNone(m, url)
            svc = one(objects, "Service", m.group(1))
            self.assertEqual(m.group(2), NAMESPACE)
            (port,) = svc["spec"]["ports"]
            self.assertEqual(port["port"], int(m.group(3)))
            self.assertEqual(port["targetPort"], "grpc")
            pod_labels = deployment(objects, server)["spec"]["template"]["metadata"]["labels"]
            self.assertLessEqual(svc["spec"]["selector"].items(), pod_labels.items())
        self.assertEqual(env(objects, "watcher")["BERTH_WATCHER_ID"], "$(POD_NAME)")

    def test_leader_election_env_and_lease_rbac(self):
        objects = render()
        for s in SERVICES:
            e = env(objects, s)
            self.assertEqual(e["BERTH_LEADER_ELECT"], "true")
            self.assertEqual(e["BERTH_LEADER_ELECTION_NAMESPACE"], {"fieldRef": {"fieldPath": "metadata.namespace"}})
            self.assertEqual(e["BERTH_LEADER_ELECTION_LEASE"], f"berth-{s}")
            self.assertEqual(e["POD_NAME"], {"fieldRef": {"fieldPath": "metadata.name"}})
            # POD_NAME comes before anything that refers to it with $(POD_NAME).
            names = [x["name"] for x in container(objects, s)["env"]]
            self.assertEqual(names[0], "POD_NAME")
        off = render({"leaderElection": {"enabled": False}})
        for s in SERVICES:
            self.assertEqual(env(off, s)["BERTH_LEADER_ELECT"], "false")
        self.assertEqual(find(off, "Role", f"{RELEASE}-scheduler-leader-election"), [])

    def test_replicas_and_scheduling_are_per_service(self):
        objects = render(
            {
                "watcher": {"replicas": 3, "nodeSelector": {"pool": "system"}, "priorityClassName": "high"},
                "scheduler": {"replicas": 1, "tolerations": [{"key": "CriticalAddonsOnly", "operator": "Exists"}]},
                "actuator": {
                    "replicas": 0,
                    "topologySpreadConstraints": [{"maxSkew": 2, "topologyKey": "zone", "whenUnsatisfiable": "DoNotSchedule"}],
                },
            }
        )
        self.assertEqual([deployment(objects, s)["spec"]["replicas"] for s in SERVICES], [3, 1, 0])
        w = deployment(objects, "watcher")["spec"]["template"]["spec"]
        # Maps merge with the defaults (kubernetes.io/os: linux stays unless set to null).
        self.assertEqual(w["nodeSelector"], {"kubernetes.io/os": "linux", "pool": "system"})
        self.assertEqual(w["priorityClassName"], "high")
        self.assertEqual(deployment(objects, "scheduler")["spec"]["template"]["spec"]["tolerations"][0]["key"], "CriticalAddonsOnly")
        (tsc,) = deployment(objects, "actuator")["spec"]["template"]["spec"]["topologySpreadConstraints"]
        self.assertEqual(tsc["maxSkew"], 2)
        self.assertEqual(tsc["labelSelector"]["matchLabels"]["app.kubernetes.io/component"], "actuator")
        # The default affinity keeps Berth off the nodes it manages.
        terms = deployment(render(), "scheduler")["spec"]["template"]["spec"]["affinity"]["nodeAffinity"]
        expr = terms["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"][0]["matchExpressions"][0]
        self.assertEqual((expr["key"], expr["operator"]), ("karpenter.sh/nodepool", "DoesNotExist"))


class BadValues(unittest.TestCase):
    CASES = [
        ({"watcher": {"replicas": "two"}}, "/watcher/replicas"),
        ({"scheduler": {"replicas": -1}}, "/scheduler/replicas"),
        ({"settings": {"clusterNmae": "prod"}}, "clusterNmae"),
        ({"actuator": {"provider": "gcp"}}, "/actuator/provider"),
        ({"settings": {"batchIdleDuration": "1 second"}}, "/settings/batchIdleDuration"),
        ({"settings": {"isolatedVPC": "yes"}}, "/settings/isolatedVPC"),
        ({"serviceAccount": {"annotations": {"eks.amazonaws.com/role-arn": 7}}}, "/serviceAccount/annotations"),
        ({"watcher": {"ports": {"admin": 70000}}}, "/watcher/ports/admin"),
        ({"scheduler": {"resources": {"requests": {"memory": "lots"}}}}, "/scheduler/resources/requests/memory"),
        ({"actuator": {"securityContext": {"readOnlyRootFilesytem": True}}}, "readOnlyRootFilesytem"),
        ({"settings": {"featureGates": {"spotToSpot": True}}}, "spotToSpot"),
        ({"replicas": 2}, "replicas"),
    ]

    def test_bad_values_fail_naming_the_key(self):
        for values, key in self.CASES:
            with self.subTest(values=values):
                with self.assertRaises(helm.HelmValuesError) as caught:
                    render(values)
                self.assertIn(key, str(caught.exception))

    def test_tls_without_a_certificate_source_fails(self):
        with self.assertRaises(helm.HelmError) as caught:
            render({"tls": {"enabled": True}})
        self.assertIn("tls.secretName", str(caught.exception))

    def test_the_actuator_needs_a_service_account_name_when_not_created(self):
        with self.assertRaises(helm.HelmError) as caught:
            render({"serviceAccount": {"create": False}})
        self.assertIn("actuator", str(caught.exception))
        objects = render({"serviceAccount": {"create": False, "name": "existing"}})
        self.assertEqual(deployment(objects, "actuator")["spec"]["template"]["spec"]["serviceAccountName"], "existing")
        self.assertEqual(find(objects, "ServiceAccount", "existing"), [])


class Schema(unittest.TestCase):
    """Every rendered object is a valid object of its kind for the Kubernetes API."""

    def test_every_object_matches_its_kind(self):
        for label, values in (("defaults", {}), ("seed", seed_values()), ("all toggles", all_toggles_on())):
            for obj in render(values):
                with self.subTest(values=label, template=obj["__template"], kind=obj["kind"]):
                    check_object(obj)

    def test_the_crds_match_their_kind(self):
        for crd in _chart.crds:
            with self.subTest(crd=crd["filename"]):
                for doc in yaml.safe_load_all(crd["data"]):
                    if doc:
                        check_object(doc)

    def test_a_typo_fails_the_check(self):
        # The check above can fail: a misspelled field anywhere in a Deployment is caught.
        d = copy.deepcopy(deployment(render(), "watcher"))
        d["spec"]["template"]["spec"]["containers"][0]["imagePullPolcy"] = "Always"
        with self.assertRaisesRegex(AssertionError, "imagePullPolcy"):
            check_object(d)
        d = copy.deepcopy(deployment(render(), "actuator"))
        d["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["periodSeconds"] = "2"
        with self.assertRaisesRegex(AssertionError, "want int"):
            check_object(d)
        del d["spec"]["template"]["spec"]["containers"][0]["name"]
        d["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["periodSeconds"] = 2
        with self.assertRaises(ValueError):
            check_object(d)
        sm = copy.deepcopy(one(render(all_toggles_on()), "ServiceMonitor", RELEASE))
        sm["spec"]["endpoints"][0]["intervall"] = "1m"
        with self.assertRaisesRegex(AssertionError, "intervall"):
            check_object(sm)


class Security(unittest.TestCase):
    def test_security_context(self):
        for label, values in (("defaults", {}), ("seed", seed_values()), ("all toggles", all_toggles_on())):
            objects = render(values)
            for s in SERVICES:
                with self.subTest(values=label, service=s):
                    pod = deployment(objects, s)["spec"]["template"]["spec"]
                    self.assertIs(pod["securityContext"]["runAsNonRoot"], True)
                    self.assertEqual(pod["securityContext"]["seccompProfile"], {"type": "RuntimeDefault"})
                    sc = container(objects, s)["securityContext"]
                    self.assertIs(sc["runAsNonRoot"], True)
                    self.assertIs(sc["readOnlyRootFilesystem"], True)
                    self.assertIs(sc["allowPrivilegeEscalation"], False)
                    self.assertEqual(sc["capabilities"]["drop"], ["ALL"])
                    self.assertEqual(sc["seccompProfile"], {"type": "RuntimeDefault"})
                    self.assertNotIn("hostNetwork", pod)
                    mounts = {m["mountPath"] for m in container(objects, s)["volumeMounts"]}
                    self.assertIn("/tmp", mounts)  # writable, the root filesystem is not

    def test_probes(self):
        objects = render()
        for s in SERVICES:
            c = container(objects, s)
            ports = {p["name"]: p["containerPort"] for p in c["ports"]}
            self.assertEqual(c["livenessProbe"]["httpGet"], {"path": "/healthz", "port": "admin"}, s)
            # A standby is ready but listens on no gRPC port: readiness is /readyz, never gRPC.
            self.assertEqual(c["readinessProbe"]["httpGet"], {"path": "/readyz", "port": "admin"}, s)
            self.assertNotIn("grpc", c["readinessProbe"], s)
            if s == "watcher":
                self.assertNotIn("grpc", ports)
        tls = render({"tls": {"enabled": True, "secretName": "berth-certs"}})
        for s in ("scheduler", "actuator"):
            probe = container(tls, s)["readinessProbe"]
            self.assertEqual(probe["httpGet"], {"path": "/readyz", "port": "admin"})


# What each binary calls in Kubernetes, measured: integration-tests/tests/rbac.rs runs the three
# binaries through a NodeClaim's whole life against the simulated API server, each with its own
# token, and fails unless the API server's audit of their calls is exactly this file. Here the
# chart must grant exactly these, no more, no less, each where the code makes it: Leases in the
# release namespace, the actuator's Events in "default" (events.rs writes the Events of Nodes and
# NodeClaims there), everything else cluster-wide (the watcher's Events go to each pod's own
# namespace, any namespace).
KUBE_CALLS = json.loads((pathlib.Path(__file__).resolve().parent / "fixtures" / "kube-calls.json").read_text())


def scope(service: str, group: str, resource: str) -> str:
    if resource == "leases":
        return "release"
    if service == "actuator" and resource == "events":
        return "default"
    return "cluster"


USES = {
    service: [(g, r, v, scope(service, g, r)) for g, r, v in calls] for service, calls in KUBE_CALLS.items()
}
LEASES = [("coordination.k8s.io", "leases", v, "release") for v in ("create", "get", "patch")]


def granted(objects, service) -> set:
    """(apiGroup, resource, verb, scope) the chart grants `service`'s ServiceAccount."""
    sa = f"{RELEASE}-{service}"
    roles = {(o["kind"], o["metadata"].get("namespace"), o["metadata"]["name"]): o for o in objects if o["kind"] in ("Role", "ClusterRole")}
    out = set()
    for b in objects:
        if b["kind"] not in ("RoleBinding", "ClusterRoleBinding"):
            continue
        if not any(s["kind"] == "ServiceAccount" and s["name"] == sa and s["namespace"] == NAMESPACE for s in b["subjects"]):
            continue
        ref = b["roleRef"]
        ns = b["metadata"].get("namespace") if b["kind"] == "RoleBinding" else None
        role = roles[(ref["kind"], ns if ref["kind"] == "Role" else None, ref["name"])]
        scope = "cluster" if b["kind"] == "ClusterRoleBinding" else ("release" if ns == NAMESPACE else ns)
        for rule in role["rules"]:
            for g in rule["apiGroups"]:
                for r in rule["resources"]:
                    for v in rule["verbs"]:
                        out.add((g, r, v, scope))
    return out


class Rbac(unittest.TestCase):
    def test_each_service_is_granted_exactly_what_its_code_calls(self):
        objects = render()
        for s in SERVICES:
            want = set(USES[s])
            with self.subTest(service=s):
                got = granted(objects, s)
                self.assertEqual(sorted(got - want), [], f"{s}: granted but not called")
                self.assertEqual(sorted(want - got), [], f"{s}: called but not granted")

    def test_the_watcher_writes_only_events_and_nodepool_status(self):
        writes = {"create", "update", "patch", "delete", "deletecollection"}
        got = {(g, r, v) for g, r, v, scope in granted(render(), "watcher") if v in writes and r != "leases"}
        self.assertEqual(got, {("", "events", "create"), ("karpenter.sh", "nodepools/status", "patch")})

    def test_the_scheduler_has_only_its_lease(self):
        got = granted(render(), "scheduler")
        self.assertEqual(got, set(LEASES))
        (role,) = [r for r in find(render(), "Role") if r["metadata"]["name"] == f"{RELEASE}-scheduler-leader-election"]
        named = [rule for rule in role["rules"] if "resourceNames" in rule]
        self.assertEqual(named, [{"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "resourceNames": ["berth-scheduler"], "verbs": ["get", "patch"]}])

    def test_no_wildcards(self):
        for o in render(all_toggles_on()):
            for rule in o.get("rules", []):
                for field in ("apiGroups", "resources", "verbs"):
                    self.assertNotIn("*", rule[field], o["metadata"]["name"])


class Toggles(unittest.TestCase):
    def test_mtls_from_an_existing_secret(self):
        objects = render({"tls": {"enabled": True, "secretName": "berth-certs"}})
        self.assertEqual(find(objects, "Certificate"), [])
        self.assertTrue(env(objects, "watcher")["BERTH_SCHEDULER_URL"].startswith("https://"))
        self.assertTrue(env(objects, "scheduler")["BERTH_ACTUATOR_URL"].startswith("https://"))
        for s in ("scheduler", "actuator"):
            e = env(objects, s)
            self.assertEqual((e["BERTH_TLS_CERT"], e["BERTH_TLS_KEY"], e["BERTH_TLS_CLIENT_CA"]),
                             ("/etc/berth/tls/tls.crt", "/etc/berth/tls/tls.key", "/etc/berth/tls/ca.crt"))
        for s in ("watcher", "scheduler"):
            e = env(objects, s)
            self.assertEqual((e["BERTH_TLS_CA"], e["BERTH_TLS_CLIENT_CERT"], e["BERTH_TLS_CLIENT_KEY"]),
                             ("/etc/berth/tls/ca.crt", "/etc/berth/tls/tls.crt", "/etc/berth/tls/tls.key"))
        self.assertNotIn("BERTH_TLS_CERT", env(objects, "watcher"))  # serves no gRPC
        self.assertNotIn("BERTH_TLS_CA", env(objects, "actuator"))  # calls no Berth service
        for s in SERVICES:
            volumes = {v["name"]: v for v in deployment(objects, s)["spec"]["template"]["spec"]["volumes"]}
            self.assertEqual(volumes["tls"]["secret"]["secretName"], "berth-certs")
        # Not mutual: the servers do not ask for client certificates.
        one_way = render({"tls": {"enabled": True, "mutual": False, "secretName": "berth-certs"}})
        self.assertNotIn("BERTH_TLS_CLIENT_CA", env(one_way, "actuator"))
        # Off: plaintext, no TLS env at all.
        plain = render()
        for s in SERVICES:
            self.assertFalse([k for k in env(plain, s) if k.startswith("BERTH_TLS")], s)

    def test_mtls_with_cert_manager(self):
        objects = render({"tls": {"enabled": True, "certManager": {"enabled": True, "issuerRef": {"name": "berth-ca", "kind": "ClusterIssuer"}}}})
        cert = one(objects, "Certificate", f"{RELEASE}-tls")
        self.assertEqual(cert["spec"]["issuerRef"], {"name": "berth-ca", "kind": "ClusterIssuer", "group": "cert-manager.io"})
        self.assertEqual(set(cert["spec"]["usages"]), {"server auth", "client auth"})
        # The certificate is valid for the host of every URL a client dials.
        for client, var in (("watcher", "BERTH_SCHEDULER_URL"), ("scheduler", "BERTH_ACTUATOR_URL")):
            host = re.match(r"https://([^:]+):", env(objects, client)[var]).group(1)
            self.assertIn(host, cert["spec"]["dnsNames"])
        volumes = deployment(objects, "actuator")["spec"]["template"]["spec"]["volumes"]
        self.assertIn(cert["spec"]["secretName"], [v.get("secret", {}).get("secretName") for v in volumes])

    def test_service_monitor(self):
        objects = render({"serviceMonitor": {"enabled": True, "additionalLabels": {"release": "prometheus"}, "interval": "15s"}})
        sm = one(objects, "ServiceMonitor", RELEASE)
        self.assertEqual(sm["metadata"]["labels"]["release"], "prometheus")
        selected = [o for o in find(objects, "Service") if sm["spec"]["selector"]["matchLabels"].items() <= o["metadata"]["labels"].items()]
        self.assertEqual(sorted(o["metadata"]["name"] for o in selected), [f"{RELEASE}-{s}-metrics" for s in sorted(SERVICES)])
        (endpoint,) = sm["spec"]["endpoints"]
        self.assertEqual(endpoint["interval"], "15s")
        for svc in selected:
            self.assertIn(endpoint["port"], [p["name"] for p in svc["spec"]["ports"]])
            self.assertIs(svc["spec"]["publishNotReadyAddresses"], True)  # standbys are scraped too

    def test_pod_disruption_budgets(self):
        values = {s: {"podDisruptionBudget": {"enabled": True}} for s in SERVICES}
        values["actuator"]["podDisruptionBudget"]["minAvailable"] = 1
        objects = render(values)
        for s in SERVICES:
            pdb = one(objects, "PodDisruptionBudget", f"{RELEASE}-{s}")
            labels = deployment(objects, s)["spec"]["template"]["metadata"]["labels"]
            self.assertLessEqual(pdb["spec"]["selector"]["matchLabels"].items(), labels.items())
            self.assertEqual(pdb["spec"]["unhealthyPodEvictionPolicy"], "AlwaysAllow")
        self.assertEqual(one(objects, "PodDisruptionBudget", f"{RELEASE}-actuator")["spec"], {
            "minAvailable": 1, "unhealthyPodEvictionPolicy": "AlwaysAllow",
            "selector": one(objects, "PodDisruptionBudget", f"{RELEASE}-actuator")["spec"]["selector"]})
        self.assertEqual(one(objects, "PodDisruptionBudget", f"{RELEASE}-watcher")["spec"]["maxUnavailable"], 1)

    def test_dashboard_uses_only_metrics_berth_exports(self):
        objects = render({"dashboard": {"enabled": True, "namespace": "monitoring"}})
        cm = one(objects, "ConfigMap", f"{RELEASE}-dashboard")
        self.assertEqual(cm["metadata"]["namespace"], "monitoring")
        self.assertEqual(cm["metadata"]["labels"]["grafana_dashboard"], "1")
        dash = json.loads(cm["data"]["berth.json"])
        documented = set(re.findall(r"`(berth_[a-z_]+)`", (ROOT / "docs" / "metrics.md").read_text()))
        used = set()
        for panel in dash["panels"]:
            for target in panel.get("targets", []):
                for name in re.findall(r"\b(berth_[a-z_]+)", target["expr"]):
                    used.add(re.sub(r"_(bucket|sum|count)$", "", name))
        self.assertTrue(used)
        self.assertEqual(sorted(used - documented), [], "the dashboard queries metrics docs/metrics.md does not list")
        titles = " ".join(p["title"].lower() for p in dash["panels"])
        for topic in ("pending pods", "launch failures", "nodeclaims", "disruption"):
            self.assertIn(topic, titles)

    def test_prices_configmap(self):
        prices = {"on_demand_discount_percent": 12, "instance_types": {"m5.large": {"on_demand": 0.081, "spot": 0.031}}}
        objects = render({"actuator": {"prices": prices}})
        cm = one(objects, "ConfigMap", f"{RELEASE}-actuator-prices")
        self.assertEqual(json.loads(cm["data"]["prices.json"]), prices)
        self.assertEqual(env(objects, "actuator")["BERTH_PRICE_FILE"], "/etc/berth/prices/prices.json")


class Crds(unittest.TestCase):
    def test_the_chart_crds_are_deploy_crds(self):
        # deploy/crds is the one source (generated from berth-api); the chart carries a copy.
        # After regenerating: cp deploy/crds/*.yaml deploy/helm/berth/crds/
        source = {p.name: p.read_bytes() for p in (ROOT / "deploy" / "crds").glob("*.yaml")}
        copy_ = {p.name: p.read_bytes() for p in (CHART / "crds").iterdir()}
        self.assertEqual(sorted(copy_), sorted(source))
        for name, data in source.items():
            self.assertEqual(copy_[name], data, f"deploy/helm/berth/crds/{name} differs from deploy/crds/{name}")
        kinds = sorted(yaml.safe_load(c["data"].split("---", 1)[1])["spec"]["names"]["kind"] for c in _chart.crds)
        self.assertEqual(kinds, ["EC2NodeClass", "NodeClaim", "NodePool"])


if __name__ == "__main__":
    unittest.main()
