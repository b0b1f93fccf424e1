"""The audit webhook as the third witness, on the real API server: started with the shipped audit
policy (examples/audit/policy.yaml) and a webhook configuration that posts to the operator on
loopback, authenticated with a client certificate (the test makes the CA), batches at most a
second old.

One control plane and one operator of this module's own (the shared cluster's API server has no
webhook): who created a Deployment is named in its Findings with the address the request came
from; a pull Event written by the node is verified, one a tenant forges is flagged with its real
author; a pull seen by both the Event watch and the webhook counts once; a POST without
credentials is 401 and an oversized one 413, both counted.
"""

from __future__ import annotations

import http.client
import json
import ssl
import uuid
from typing import Any

import pytest
from harness import ROOT, SCANNER, SUSPICIOUS, Cluster, Operator, wait_for
from tenant import HUNTER, Tenant

from certs import CA, webhook_config
from kubelet import for_create, image_event
from localcluster import LocalCluster, free_port

TOKEN = "audit-" + uuid.uuid4().hex


class AuditEnv:
    def __init__(self, cluster: Cluster, operator: Operator, port: int, ca: CA):
        self.cluster, self.operator, self.port, self.ca = cluster, operator, port, ca

    def post(self, body: bytes, token: str | None, length: int | None = None) -> int:
        """POST ``body`` to the receiver (``length``: the Content-Length claimed); its status."""
        ctx = ssl.create_default_context(cafile=str(self.ca.pair.cert))
        conn = http.client.HTTPSConnection("127.0.0.1", self.port, context=ctx, timeout=30)
        try:
            conn.putrequest("POST", "/audit?timeout=30s")
            conn.putheader("Content-Type", "application/json")
            conn.putheader("Content-Length", str(len(body) if length is None else length))
            if token is not None:
                conn.putheader("Authorization", f"Bearer {token}")
            conn.endheaders()
            try:
                conn.send(body)
            except OSError:
                pass  # refused before the whole body was read: the answer is still there
            return conn.getresponse().status
        finally:
            conn.close()

    def requests(self, outcome: str) -> float:
        return self.operator.metric("pullwatch_audit_requests_total", outcome=outcome)


@pytest.fixture(scope="module")
def audit(tmp_path_factory) -> AuditEnv:
    work = tmp_path_factory.mktemp("audit-cluster")
    ca = CA(work / "pki")
    server = ca.issue("server", "pullwatch-audit-webhook", server=True)
    client = ca.issue("client", "kube-apiserver-audit", server=False)
    (work / "token").write_text(TOKEN)
    port = free_port()
    webhook_config(work / "webhook.kubeconfig", port, ca, client)
    local = LocalCluster(work / "cluster")
    local.extra_api_args = [
        f"--audit-policy-file={ROOT / 'examples' / 'audit' / 'policy.yaml'}",  # the last one wins
        f"--audit-webhook-config-file={work / 'webhook.kubeconfig'}",
        "--audit-webhook-batch-max-wait=1s",
        "--audit-webhook-initial-backoff=1s",  # batches sent before the operator listens
    ]
    operator = None
    try:
        local.start()
        local.kubectl("apply", "-k", str(ROOT / "manifests"))
        local.kubectl(
            "wait",
            "--for=condition=established",
            "--timeout=60s",
            "crd/findings.pullwatch.dev",
            "crd/clusterkopfpeerings.kopf.dev",
        )
        cluster = Cluster(local)
        operator = Operator(
            cluster,
            work,
            f"--audit-webhook-address=127.0.0.1:{port}",
            f"--audit-webhook-cert={server.cert}",
            f"--audit-webhook-key={server.key}",
            f"--audit-webhook-client-ca={ca.pair.cert}",
            f"--audit-webhook-token-file={work / 'token'}",
            "--audit-webhook-max-body=1Mi",
        ).start()
        env = AuditEnv(cluster, operator, port, ca)
        # The API server's own POSTs arrive (its client certificate is accepted): an Event
        # create (logged by the policy) until one has come; what it sent before the operator
        # listened may have run out of retries
        ns = cluster.namespace("warmup")

        def delivered() -> bool:
            if env.requests("ok") > 0:
                return True
            cluster.create_event(image_event("Pulling", ns, "x-1", "nginx:1", seq=free_port()))
            return False

        wait_for(
            delivered,
            60,
            interval=1.0,
            what=lambda: f"a POST from the API server; operator log:\n{operator.logs()[-2000:]}",
        )
        yield env
    finally:
        if operator is not None and operator.stop(timeout=30) is None:
            operator.kill()
        local.stop()


def person(cluster: Cluster, ns: str, name: str, rules: list[dict[str, Any]]) -> str:
    """A ServiceAccount of ``ns`` allowed ``rules`` there: its token."""
    for doc in (
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": name}},
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "Role",
            "metadata": {"name": name},
            "rules": rules,
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": {"name": name},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
            "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": ns}],
        },
    ):
        cluster.kubectl("apply", "-n", ns, "-f", "-", input=json.dumps(doc))
    return cluster.kubectl("create", "token", name, "-n", ns, "--duration=1h").stdout.strip()


def controller(cluster: Cluster, name: str) -> str:
    """The token of a kube-system controller's ServiceAccount (no controller-manager runs here:
    the test acts as the controllers, with their identities)."""
    if cluster.kubectl("get", "sa", name, "-n", "kube-system", check=False).returncode != 0:
        cluster.kubectl("create", "sa", name, "-n", "kube-system")
        cluster.kubectl(
            "create",
            "clusterrolebinding",
            f"test-{name}",
            "--clusterrole=cluster-admin",
            f"--serviceaccount=kube-system:{name}",
        )
    return cluster.kubectl(
        "create", "token", name, "-n", "kube-system", "--duration=1h"
    ).stdout.strip()


def owner(kind: str, api: str, obj: dict[str, Any]) -> list[dict[str, Any]]:
    meta = obj["metadata"]
    return [
        {
            "apiVersion": api,
            "kind": kind,
            "name": meta["name"],
            "uid": meta["uid"],
            "controller": True,
        }
    ]


def create(cluster: Cluster, token: str, path: str, body: dict[str, Any]) -> dict[str, Any]:
    status, stored = cluster.local.request("POST", path, body, token=token)
    assert status == 201, (status, stored)
    return stored  # type: ignore[return-value]


def scanner_finding(cluster: Cluster, ns: str, workload: str) -> dict[str, Any] | None:
    return cluster.by_workload(ns).get((SCANNER, workload))


def test_a_deployment_by_a_person_is_named_and_a_nodes_pull_verified_and_counted_once(audit):
    cluster = audit.cluster
    ns = cluster.namespace("who")
    deployer = person(
        cluster,
        ns,
        "deployer",
        [{"apiGroups": ["apps"], "resources": ["deployments"], "verbs": ["create"]}],
    )
    labels = {"app": "web"}
    template = {
        "metadata": {"labels": labels},
        "spec": {
            "automountServiceAccountToken": False,
            "containers": [{"name": "web", "image": HUNTER}],
        },
    }
    dep = create(
        cluster,
        deployer,
        f"/apis/apps/v1/namespaces/{ns}/deployments",
        {
            "metadata": {"name": "web"},
            "spec": {"selector": {"matchLabels": labels}, "template": template},
        },
    )
    rs_labels = {**labels, "pod-template-hash": "7d9f8b6c5d"}
    rs = create(
        cluster,
        controller(cluster, "deployment-controller"),
        f"/apis/apps/v1/namespaces/{ns}/replicasets",
        {
            "metadata": {
                "name": "web-7d9f8b6c5d",
                "labels": rs_labels,
                "ownerReferences": owner("Deployment", "apps/v1", dep),
            },
            "spec": {
                "selector": {"matchLabels": rs_labels},
                "template": {**template, "metadata": {"labels": rs_labels}},
            },
        },
    )
    create(
        cluster,
        controller(cluster, "default"),
        f"/api/v1/namespaces/{ns}/serviceaccounts",
        {"metadata": {"name": "default"}, "automountServiceAccountToken": False},
    )
    pod = "web-7d9f8b6c5d-x7k2p"
    create(
        cluster,
        controller(cluster, "replicaset-controller"),
        f"/api/v1/namespaces/{ns}/pods",
        {
            "metadata": {
                "name": pod,
                "labels": rs_labels,
                "ownerReferences": owner("ReplicaSet", "apps/v1", rs),
            },
            "spec": template["spec"],
        },
    )
    # The kubelet of the node writes the pull, as system:node:<its node>
    node = LocalCluster.NODE
    event = for_create(image_event("Pulling", ns, pod, HUNTER, node=node))
    status, stored = cluster.local.request(
        "POST", f"/api/v1/namespaces/{ns}/events", event, token=cluster.local.node_token
    )
    assert status == 201, stored
    user = f"system:serviceaccount:{ns}:deployer"

    def named() -> dict[str, Any] | None:
        f = scanner_finding(cluster, ns, "web")
        if f is None:
            return None
        spec, st = f["spec"], f.get("status") or {}
        reporters = st.get("reporters") or {}
        if (spec.get("actor") or {}).get("user") == user and reporters.get("verified") == 1:
            return f
        return None

    finding = wait_for(
        named,
        30,
        what=lambda: f"{scanner_finding(cluster, ns, 'web')}\n{audit.operator.logs()[-2000:]}",
    )
    spec, st = finding["spec"], finding["status"]
    assert "127.0.0.1" in spec["actor"]["sourceIPs"]
    assert spec["actor"]["action"] == "create deployments"
    assert spec["reportedBy"]["verified"] is True
    assert spec["reportedBy"]["user"] == f"system:node:{node}"
    # The Suspicious rule fires too (this cluster allows no image): the seed's message, with
    # who and from where
    suspicious = cluster.by_workload(ns)[(SUSPICIOUS, "web")]
    message = suspicious["spec"]["message"]
    assert f"from ip 127.0.0.1 by user {user}" in message, message
    assert suspicious["spec"]["actor"]["user"] == user
    assert st["count"] == 1  # the Event watch and the webhook saw the same pull: once
    assert set(st["witnesses"]) >= {"events", "audit"}
    assert (st.get("intent") or {}).get("pods") == 1  # the pod was created with the scanner

    # The kubelet's recorder patches the count of a repeat: counted once more, not twice more
    status, _ = cluster.local.request(
        "PATCH",
        f"/api/v1/namespaces/{ns}/events/{stored['metadata']['name']}",
        {"count": 2},
        content_type="application/merge-patch+json",
        token=cluster.local.node_token,
    )
    assert status == 200
    wait_for(lambda: cluster.counts(ns).get(finding["metadata"]["name"]) == 2, 20)
    wait_for(lambda: audit.operator.settled(), 20)
    assert cluster.counts(ns)[finding["metadata"]["name"]] == 2
    assert (cluster.findings(ns)[finding["metadata"]["name"]]["status"].get("reporters") or {}).get(
        "forged", 0
    ) == 0


def test_a_pull_event_forged_by_a_tenant_is_flagged_with_its_real_author(audit):
    tenant = Tenant(audit.cluster, "forger")
    before = audit.operator.metric("pullwatch_forged_pulls_total", reason="author")
    tenant.pull("scan-7d9f8b6c5d-abcde")  # reads like node-1's kubelet
    author = f"system:serviceaccount:{tenant.ns}:{tenant.name}"

    def flagged() -> dict[str, Any] | None:
        for f in audit.cluster.findings(tenant.ns).values():
            forged = f["spec"]["reportedBy"].get("verified") is False
            if f["spec"]["rule"] == SCANNER and forged and (f.get("status") or {}).get("forgedBy"):
                return f
        return None

    finding = wait_for(flagged, 30, what=lambda: str(audit.cluster.findings(tenant.ns)))
    assert finding["spec"]["reportedBy"]["user"] == author, finding
    assert finding["status"]["forgedBy"] == author, finding
    assert finding["status"]["count"] == 1, finding
    wait_for(
        lambda: audit.operator.metric("pullwatch_forged_pulls_total", reason="author") > before,
        10,
    )


def test_no_credentials_401_and_an_oversized_body_413_both_counted(audit):
    unauthenticated, too_large = audit.requests("unauthenticated"), audit.requests("too_large")
    body = json.dumps({"kind": "EventList", "apiVersion": "audit.k8s.io/v1", "items": []})
    assert audit.post(body.encode(), token=None) == 401
    assert audit.post(body.encode(), token="not-the-token") == 401
    # 2 MiB claimed, over the operator's 1 MiB bound: refused on its Content-Length
    assert audit.post(b"{" + b" " * (64 << 10), token=TOKEN, length=2 << 20) == 413
    # and one really sent in full
    big = json.dumps(
        {"kind": "EventList", "apiVersion": "audit.k8s.io/v1", "items": [{"x": "y" * (2 << 20)}]}
    ).encode()
    assert audit.post(big, token=TOKEN) == 413
    assert audit.post(body.encode(), token=TOKEN) == 200
    wait_for(lambda: audit.requests("unauthenticated") == unauthenticated + 2, 10)
    assert audit.requests("too_large") == too_large + 2
    assert audit.operator.said("refused an audit webhook POST over")
