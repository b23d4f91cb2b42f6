#!/usr/bin/env bash
# gcc and Python's headers build the agent's batch producer (a C module; without them the install
# leaves it out and the agent runs on confluent-kafka's produce()). Debian tools the tests drive for real: logrotate, setpriv (util-linux) to run an agent as an
# unprivileged user, openssl to make the certificates of the TLS tests, a Docker engine (docker.io;
# dockerd lives in /usr/sbin) and debootstrap to build and run the sidecar image. Installed with
# apt-get when missing and we are root.
set -euo pipefail
missing=()
command -v gcc >/dev/null 2>&1 || missing+=(gcc)
[ -f "$(python3 -c 'import sysconfig; print(sysconfig.get_paths()["include"])' 2>/dev/null)/Python.h" ] \
    || missing+=(python3-dev)
command -v logrotate >/dev/null 2>&1 || missing+=(logrotate)
command -v setpriv >/dev/null 2>&1 || missing+=(util-linux)
command -v openssl >/dev/null 2>&1 || missing+=(openssl)
command -v dockerd >/dev/null 2>&1 || [ -x /usr/sbin/dockerd ] || missing+=(docker.io)
command -v debootstrap >/dev/null 2>&1 || [ -x /usr/sbin/debootstrap ] || missing+=(debootstrap)
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "system-deps: installing ${missing[*]}" >&2
    apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
else
    echo "system-deps: missing ${missing[*]} (apt-get install ${missing[*]}); the tests that need them will say so" >&2
fi
