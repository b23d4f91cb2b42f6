# logagent sidecar image: tails the log files an application writes to a shared
# volume and ships them, with the container's view of host metrics, to Kafka.
#
#   docker build -t logagent .                     # a machine that reaches Docker Hub and PyPI
#   make image                                     # no registry: Debian-made base, offline wheels
#   docker run --rm -v app-logs:/var/log/app:ro -v logagent-data:/var/lib/logagent \
#     --read-only --tmpfs /tmp \
#     -e LOGAGENT_KAFKA_ADDRESS=kafka:9092 -e LOGAGENT_ETCD_ADDRESS=etcd:2379 \
#     --stop-timeout 40 logagent
#
# Configuration: /etc/logagent/config.ini is the repository's config.ini (every key has
# a default); override any key with LOGAGENT_<SECTION>_<KEY> environment variables, or
# mount your own file over /etc/logagent/config.ini. See docs/deploy-container.md.
#
# BASE_IMAGE: any image with Python 3.11 as python3 and the venv module. `make image`
# passes one made with debootstrap from Debian bookworm's packages (deploy/docker/image.py).
ARG BASE_IMAGE=python:3.11-slim

FROM ${BASE_IMAGE} AS build
# The label lets `make image` prune its own old build layers, and nothing else.
LABEL org.opencontainers.image.title=logagent
WORKDIR /src
# wheelhouse/ is optional. `make image` puts every wheel the agent needs in it, and this
# stage then installs with no network at all (it is built with --network none). Without
# it pip fetches from PyPI. The glob copies the folder's wheels, or nothing when it is absent.
COPY pyproject.toml README.md wheelhouse* ./
COPY logagent/ logagent/
# pip lives in a throwaway venv of this stage: the agent's venv gets no pip, setuptools or
# wheel, and no bytecode caches (--no-compile; the root filesystem is read-only at run
# time, so none would be written there either). All dependencies ship manylinux wheels:
# no compiler needed. The agent's own C modules (the batch producer, the message builder, the reader) are in
# the wheel `make image` builds on the host; a build without that wheel and without gcc leaves
# them out, and the agent runs the same paths in Python (docs/sizing.md). No test extras.
ENV PYTHONDONTWRITEBYTECODE=1
RUN python3 -m venv /opt/pip \
    && python3 -m venv --without-pip /opt/logagent \
    && if [ -n "$(find . -maxdepth 1 -name 'logagent-*.whl')" ]; then \
         /opt/pip/bin/pip --python /opt/logagent/bin/python install --no-cache-dir --no-compile \
           --no-index --find-links . ./logagent-*.whl; \
       else \
         /opt/pip/bin/pip --python /opt/logagent/bin/python install --no-cache-dir --no-compile .; \
       fi \
    && /opt/logagent/bin/logagent --version \
    && find /opt/logagent -name __pycache__ -prune -exec rm -rf {} + \
    && rm -f /opt/logagent/bin/Activate.ps1 /opt/logagent/bin/activate*

FROM ${BASE_IMAGE}
LABEL org.opencontainers.image.title=logagent
# Fixed non-root uid/gid, so Kubernetes' runAsNonRoot can check it and volumes can be
# prepared for it (fsGroup 10001).
RUN groupadd --system --gid 10001 logagent \
    && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /var/lib/logagent \
       --shell /usr/sbin/nologin logagent \
    && install -d -o 10001 -g 10001 -m 0700 /var/lib/logagent
COPY --from=build /opt/logagent /opt/logagent
COPY config.ini /etc/logagent/config.ini
COPY deploy/docker/healthcheck.py /opt/logagent/healthcheck.py

# The offset registry and last good etcd config live in data_dir: keep it on a volume
# so a restarted container resumes where it stopped instead of re-reading or skipping.
# /healthz, /readyz and /metrics listen on all interfaces: in a container the probes come
# from outside it (the kubelet, Docker's HEALTHCHECK, Prometheus).
ENV PATH=/opt/logagent/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    LOGAGENT_AGENT_DATA_DIR=/var/lib/logagent \
    LOGAGENT_AGENT_HTTP_LISTEN=0.0.0.0:9798
VOLUME ["/var/lib/logagent"]
EXPOSE 9798
USER 10001:10001

# GET /healthz on the port the agent really listens on: healthcheck.py reads
# LOGAGENT_AGENT_HTTP_LISTEN (set above, and it wins over the config file), so `-e
# LOGAGENT_AGENT_HTTP_LISTEN=127.0.0.1:9900` is checked on 9900. Standard library only: no
# curl in the image. The 30 s interval is for production; `docker run --health-interval 1s`
# keeps this command and checks more often.
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
    CMD ["/opt/logagent/bin/python", "-I", "/opt/logagent/healthcheck.py"]

# SIGTERM (Docker's and Kubernetes' default) makes the agent drain its queue to Kafka for
# up to [agent] shutdown_timeout (30 s): give the container more than that to stop
# (`docker stop -t 40`, terminationGracePeriodSeconds: 45).
STOPSIGNAL SIGTERM
ENTRYPOINT ["logagent", "run"]
CMD ["-c", "/etc/logagent/config.ini"]
