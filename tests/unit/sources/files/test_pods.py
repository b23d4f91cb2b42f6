"""A pod's identity from its log's path, and topic templates over it."""

from __future__ import annotations

import pytest

from logagent.sources.files.pods import (
    PodIdentity,
    expand_topic,
    identity_fields,
    is_template,
    pod_identity,
    template_problem,
)

UID = "5c0e1d2f-3a4b-4c5d-8e9f-0a1b2c3d4e5f"


def test_the_kubelets_layout_gives_the_identity():
    got = pod_identity(f"/var/log/pods/shop_web-7d9f-x2k_{UID}/nginx/3.log")
    assert got == PodIdentity("shop", "web-7d9f-x2k", UID, "nginx", 3)
    # Mounted elsewhere (the tree of a node seen from a container), or a static pod's hash for a uid.
    assert pod_identity(f"/host/var/log/pods/kube-system_etcd-node-1_{'a' * 32}/etcd/0.log") == \
        PodIdentity("kube-system", "etcd-node-1", "a" * 32, "etcd", 0)


@pytest.mark.parametrize("path", [
    "/var/log/app.log",
    f"/var/log/pods/shop_web_{UID}/nginx/0.log.20261206-100000",  # a rotated name: found by identity, not path
    f"/var/log/pods/shop_web_{UID}/nginx/x.log",
    f"/var/log/pods/shop_web_extra_{UID}/nginx/0.log",
    f"/var/log/pods/shopweb{UID}/nginx/0.log",
    f"/var/log/pods/shop_web_{UID}/0.log",
])
def test_other_paths_have_none(path: str):
    assert pod_identity(path) is None


def test_fields_of_the_message():
    identity = PodIdentity("shop", "web", UID, "nginx", 1)
    assert identity_fields(identity) == {"namespace": "shop", "pod": "web", "pod_uid": UID, "container": "nginx",
                                         "restart_count": 1}
    assert identity_fields(identity, {"app": "web"}, {"a": "b"})["labels"] == {"app": "web"}


def test_templates():
    identity = PodIdentity("shop", "web", UID, "nginx", 0)
    assert expand_topic("k8s.{namespace}.{container}", identity) == "k8s.shop.nginx"
    assert expand_topic("plain", identity) == "plain"
    assert is_template("k8s.{pod}") and not is_template("k8s.pod")
    assert template_problem("k8s.{namespace}_{pod}-{pod_uid}") is None
    assert "unknown name {labels}" in (template_problem("k8s.{labels}") or "")
    assert "a brace" in (template_problem("k8s.{namespace") or "")
    assert "a brace" in (template_problem("k8s.}{namespace}") or "")
