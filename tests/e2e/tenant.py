"""A tenant of the cluster as the attacks of issue 15 need one: a ServiceAccount of its own
namespace, bound by a Role of the test's own making (by default only ``create,patch events``),
speaking to the real API server with its own token."""

from __future__ import annotations

import datetime
import json
import os
import sys
import uuid
from pathlib import Path
from typing import Any

import harness

HUNTER = "aquasec/kube-hunter:0.6.8"


class Tenant:
    def __init__(
        self, cluster: harness.Cluster, prefix: str = "tenant", rules: list[dict] | None = None
    ):
        self.cluster = cluster
        self.ns = cluster.namespace(prefix)
        self.name = "ci"
        rules = rules or [
            {"apiGroups": [""], "resources": ["events"], "verbs": ["create", "patch"]}
        ]
        for doc in (
            {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": self.name}},
            {
                "apiVersion": "rbac.authorization.k8s.io/v1",
                "kind": "Role",
                "metadata": {"name": "tenant"},
                "rules": rules,
            },
            {
                "apiVersion": "rbac.authorization.k8s.io/v1",
                "kind": "RoleBinding",
                "metadata": {"name": "tenant"},
                "roleRef": {
                    "apiGroup": "rbac.authorization.k8s.io",
                    "kind": "Role",
                    "name": "tenant",
                },
                "subjects": [{"kind": "ServiceAccount", "name": self.name, "namespace": self.ns}],
            },
        ):
            cluster.kubectl("apply", "-n", self.ns, "-f", "-", input=json.dumps(doc))
        self.token = cluster.kubectl(
            "create", "token", self.name, "-n", self.ns, "--duration=2h"
        ).stdout.strip()
        self.seq = 0

    def request(self, method: str, path: str, body: Any = None, **kw: Any) -> tuple[int, Any]:
        return self.cluster.local.request(method, path, body, token=self.token, **kw)

    def can(self, verb: str, resource: str, namespace: str) -> bool:
        review = {
            "apiVersion": "authorization.k8s.io/v1",
            "kind": "SelfSubjectAccessReview",
            "spec": {
                "resourceAttributes": {"verb": verb, "resource": resource, "namespace": namespace}
            },
        }
        status, rsp = self.request(
            "POST", "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews", review
        )
        assert status == 201, (status, rsp)
        return bool(rsp["status"].get("allowed"))

    def event(self, body: dict[str, Any]) -> dict[str, Any]:
        """Create an Event in the tenant's namespace; the stored object."""
        body = {"apiVersion": "v1", "kind": "Event", **body}
        body.setdefault("metadata", {})["namespace"] = self.ns
        body["metadata"].setdefault("name", f"ev-{uuid.uuid4().hex[:10]}")
        status, stored = self.request("POST", f"/api/v1/namespaces/{self.ns}/events", body)
        assert status == 201, (status, str(stored)[:500])
        return stored

    def events(self, bodies: list[dict[str, Any]], workers: int = 6) -> list[dict[str, Any]]:
        """Create many Events in the tenant's namespace at once, on ``workers`` connections."""
        calls = []
        for body in bodies:
            body = {"apiVersion": "v1", "kind": "Event", **body}
            body.setdefault("metadata", {})["namespace"] = self.ns
            body["metadata"].setdefault("name", f"ev-{uuid.uuid4().hex[:10]}")
            calls.append(("POST", f"/api/v1/namespaces/{self.ns}/events", body))
        answers = self.cluster.local.requests(calls, workers, token=self.token)
        failed = [(status, str(stored)[:300]) for status, stored in answers if status != 201]
        assert not failed, failed[:3]
        return [stored for _, stored in answers]

    def pull(self, pod: str, image: str = HUNTER, claim: str | None = None) -> dict[str, Any]:
        """A pull Event that reads like a kubelet's. ``claim``: the namespace its involvedObject
        names (the events/v1 shape - eventTime set - lets it name any)."""
        now = datetime.datetime.now(datetime.UTC)
        self.seq += 1
        body: dict[str, Any] = {
            "involvedObject": {
                "kind": "Pod",
                "name": pod,
                "namespace": claim or self.ns,
                "uid": str(uuid.uuid5(uuid.NAMESPACE_DNS, f"{claim}/{pod}")),
                "fieldPath": "spec.containers{app}",
            },
            "reason": "Pulling",
            "message": f'Pulling image "{image}"',
            "source": {"component": "kubelet", "host": "node-1"},
            "type": "Normal",
        }
        if claim is not None and claim != self.ns:
            body.update(
                eventTime=now.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
                reportingComponent="kubelet",
                reportingInstance="node-1",
                action="Pulling",
            )
        else:
            stamp = now.strftime("%Y-%m-%dT%H:%M:%SZ")
            body.update(firstTimestamp=stamp, lastTimestamp=stamp, count=1)
        return self.event(body)


def operator_from_source() -> None:
    """``PULLWATCH_SOURCE=<tree>/operator``: the operators of these tests run that source tree
    (an older commit, to see a test fail without its fix) with this venv's packages."""
    source = os.environ.get("PULLWATCH_SOURCE")
    if not source:
        return
    wrapper = Path(os.environ.get("TMPDIR", "/tmp")) / f"pullwatch-{uuid.uuid4().hex[:6]}"
    wrapper.write_text(
        f"#!{sys.executable}\nimport sys\nsys.path.insert(0, {source!r})\n"
        "from pullwatch.cli import main\nsys.exit(main())\n"
    )
    wrapper.chmod(0o755)
    harness.PULLWATCH = str(wrapper)
