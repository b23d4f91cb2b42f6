"""A pod's identity from its container log's path, and topics by template (pure, no API call).

The kubelet keeps each container's log at
`/var/log/pods/<namespace>_<pod>_<pod uid>/<container>/<restart count>.log`: the path alone says
whose lines they are. Namespaces, pod and container names are DNS names (no `_`), so the folder
name splits on `_` in three. Only the last three components are looked at, so the tree may be
mounted anywhere (`/host/var/log/pods/...`).

The messages of such a file carry a `kubernetes` object (`identity_fields`); an entry's topic may
be a template over its names (`"topic": "k8s.{namespace}"`), checked when the entry is parsed
(with sample names) and again per file after expansion: a file whose topic Kafka would refuse
is refused alone.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

POD_PATH = re.compile(r"(?:^|/)([^/_]+)_([^/_]+)_([^/_]+)/([^/]+)/(\d+)\.log\Z")
TEMPLATE_NAMES = ("namespace", "pod", "pod_uid", "container")
_PLACEHOLDER = re.compile(r"\{([^{}]*)\}")


@dataclass(frozen=True)
class PodIdentity:
    namespace: str
    pod: str
    pod_uid: str
    container: str
    restart_count: int

    def names(self) -> dict[str, str]:
        """The values a topic template can use."""
        return {"namespace": self.namespace, "pod": self.pod, "pod_uid": self.pod_uid, "container": self.container}


def pod_identity(path: str) -> PodIdentity | None:
    """The identity a kubelet's log path gives; None for any other path."""
    found = POD_PATH.search(path)
    if found is None:
        return None
    namespace, pod, uid, container, restart = found.groups()
    return PodIdentity(namespace, pod, uid, container, int(restart))


def identity_fields(identity: PodIdentity, labels: dict[str, str] | None = None,
                    annotations: dict[str, str] | None = None) -> dict[str, Any]:
    """The message's `kubernetes` object: the identity, and the pod's labels and annotations when known."""
    out: dict[str, Any] = {"namespace": identity.namespace, "pod": identity.pod, "pod_uid": identity.pod_uid,
                           "container": identity.container, "restart_count": identity.restart_count}
    if labels is not None:
        out["labels"] = labels
    if annotations is not None:
        out["annotations"] = annotations
    return out


def is_template(topic: str) -> bool:
    return "{" in topic or "}" in topic


def template_problem(topic: str) -> str | None:
    """Why `topic` is not a template over TEMPLATE_NAMES (unknown name, stray brace), or None."""
    names = _PLACEHOLDER.findall(topic)
    unknown = [n for n in names if n not in TEMPLATE_NAMES]
    if unknown:
        return f"unknown name {{{unknown[0]}}} (one of {', '.join('{' + n + '}' for n in TEMPLATE_NAMES)})"
    if is_template(_PLACEHOLDER.sub("", topic)):
        return "a brace that opens or closes no {name}"
    return None


def expand_topic(template: str, identity: PodIdentity) -> str:
    """The template with its {names} filled in from the identity (a plain topic as it is)."""
    names = identity.names()
    return _PLACEHOLDER.sub(lambda m: names[m.group(1)], template)


SAMPLE = PodIdentity("default", "pod-0", "0a1b2c3d-4e5f-6789-abcd-ef0123456789", "app", 0)
