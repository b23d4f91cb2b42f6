"""Packaging: the container image (docker/), the systemd unit (systemd/) and Kubernetes manifests
(kubernetes/). Python only where a build needs it (docker/image.py)."""
