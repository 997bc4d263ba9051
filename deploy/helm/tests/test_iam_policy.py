"""Tests of deploy/iam/berth-actuator-policy.json, the actuator's IAM policy: it allows exactly
the AWS actions the EC2 provider calls (read from actuator/ec2/src/api.rs) plus the ones AWS
checks on their behalf, scopes every write by tags the code sets, and matches the list in
docs/install.md. The same "exactly the calls" check runs in Rust from the calls themselves
(berth-ec2's moto test `the_iam_policy_allows_exactly_the_aws_operations_the_provider_starts`,
an SDK interceptor recording each operation); this one reads the source, so a call on a path
that test does not drive is still caught.
"""

from __future__ import annotations

import json
import pathlib
import re
import string
import unittest

ROOT = pathlib.Path(__file__).resolve().parents[3]
POLICY = ROOT / "deploy" / "iam" / "berth-actuator-policy.json"
API = ROOT / "actuator" / "ec2" / "src" / "api.rs"
PROVIDER = ROOT / "actuator" / "ec2" / "src" / "provider.rs"
NODECLASS = ROOT / "actuator" / "ec2" / "src" / "nodeclass.rs"
INSTALL = ROOT / "docs" / "install.md"

PLACEHOLDERS = {"AWS_PARTITION", "AWS_REGION", "AWS_ACCOUNT_ID", "CLUSTER_NAME", "NODE_ROLE_NAME"}
SERVICE_PREFIX = {"ec2": "ec2", "ssm": "ssm", "iam": "iam", "pricing": "pricing"}

# Actions AWS authorizes on behalf of a call Berth makes, without Berth calling them:
IMPLIED = {
    "ec2:RunInstances": "CreateFleet (type instant) launches through RunInstances",
    "ec2:CreateTags": "tag specifications on CreateFleet and CreateLaunchTemplate",
    "iam:TagInstanceProfile": "CreateInstanceProfile with tags",
    "iam:PassRole": "AddRoleToInstanceProfile, and launching with the node role's instance profile",
}


def called_actions() -> set[str]:
    """`self.<client>.<operation>()` calls of the SDK clients in api.rs, as IAM actions."""
    text = API.read_text()
    calls = re.findall(r"self\s*\.(ec2|ssm|iam|pricing)\s*\.([a-z_]+)\(\)", text)
    return {f"{SERVICE_PREFIX[c]}:{''.join(w.capitalize() for w in op.split('_'))}" for c, op in calls}


def statements() -> list[dict]:
    return json.loads(POLICY.read_text())["Statement"]


def actions_of(stmt) -> list[str]:
    a = stmt["Action"]
    return [a] if isinstance(a, str) else a


def resources_of(stmt) -> list[str]:
    r = stmt["Resource"]
    return [r] if isinstance(r, str) else r


def documented_ec2_actions() -> list[str]:
    """The fenced block after the "### EC2 actions" heading of docs/install.md."""
    text = INSTALL.read_text()
    m = re.search(r"^### EC2 actions\n.*?```text\n(.*?)```", text, re.S | re.M)
    if not m:
        raise AssertionError("docs/install.md has no '### EC2 actions' section with a ```text block")
    return [line.strip() for line in m.group(1).splitlines() if line.strip()]


class Policy(unittest.TestCase):
    def test_is_valid_json_with_known_placeholders(self):
        text = POLICY.read_text()
        self.assertEqual(set(re.findall(r"\$\{([A-Z_]+)\}", text)), PLACEHOLDERS)
        filled = string.Template(text).substitute(
            AWS_PARTITION="aws", AWS_REGION="eu-west-1", AWS_ACCOUNT_ID="123456789012",
            CLUSTER_NAME="prod", NODE_ROLE_NAME="KarpenterNodeRole-prod",
        )
        doc = json.loads(filled)
        self.assertEqual(doc["Version"], "2012-10-17")
        sids = [s["Sid"] for s in doc["Statement"]]
        self.assertEqual(len(sids), len(set(sids)))
        # A managed policy holds at most 6,144 characters without whitespace.
        self.assertLess(len(json.dumps(doc, separators=(",", ":"))), 6144)

    def test_allows_exactly_the_calls_of_the_ec2_provider(self):
        called = called_actions()
        # The parser finds the calls (a wrong regex would find none and pass vacuously).
        for a in ("ec2:CreateFleet", "ec2:DescribeSpotPriceHistory", "ssm:GetParameter",
                  "pricing:GetProducts", "iam:CreateInstanceProfile"):
            self.assertIn(a, called)
        allowed = {a for s in statements() for a in actions_of(s)}
        want = called | set(IMPLIED)
        self.assertEqual(sorted(want - allowed), [], "called but not allowed")
        self.assertEqual(sorted(allowed - want), [], "allowed but never called")

    def test_writes_are_scoped_by_tags(self):
        reads = re.compile(r"^(ec2:Describe|iam:Get|ssm:Get|pricing:Get)")
        for s in statements():
            writes = [a for a in actions_of(s) if not reads.match(a)]
            if not writes:
                continue
            with self.subTest(sid=s["Sid"]):
                self.assertNotIn("*", resources_of(s))
                tagged = [r for r in resources_of(s) if re.search(r":(instance|volume|launch-template|instance-profile)/", r)]
                if tagged and writes != ["iam:PassRole"]:
                    keys = [k for op in s.get("Condition", {}).values() for k in op]
                    self.assertTrue([k for k in keys if k.startswith(("aws:RequestTag/", "aws:ResourceTag/"))], s["Sid"])

    def test_the_tags_in_conditions_are_the_tags_the_code_sets(self):
        code = PROVIDER.read_text() + NODECLASS.read_text() + (ROOT / "scheduler" / "core" / "src" / "labels.rs").read_text()
        for s in statements():
            for op in s.get("Condition", {}).values():
                for key in op:
                    m = re.match(r"aws:(?:Request|Resource)Tag/(.+)", key)
                    if not m:
                        continue
                    tag = m.group(1).replace("${CLUSTER_NAME}", "")
                    with self.subTest(sid=s["Sid"], tag=tag):
                        self.assertIn(tag, code)

    def test_docs_list_the_ec2_actions(self):
        policy_ec2 = sorted({a for s in statements() for a in actions_of(s) if a.startswith("ec2:")})
        self.assertEqual(documented_ec2_actions(), policy_ec2)
        # The policy is printed whole in docs/install.md, and it is this file.
        blocks = re.findall(r"```json\n(.*?)```", INSTALL.read_text(), re.S)
        policies = [json.loads(b) for b in blocks if '"2012-10-17"' in b]
        self.assertEqual(policies, [json.loads(POLICY.read_text())])


if __name__ == "__main__":
    unittest.main()
