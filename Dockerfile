# logagent sidecar image: tails the log files an application writes to a shared
# volume and ships them, with the container's view of host metrics, to Kafka.
#
#   docker build -t logagent .
#   docker run --rm -v app-logs:/var/log/app:ro \
#     -e LOGAGENT_KAFKA_ADDRESS=kafka:9092 -e LOGAGENT_ETCD_ADDRESS=etcd:2379 \
#     --stop-timeout 40 logagent
#
# Configuration: /etc/logagent/config.ini is the repository's config.ini (every key has
# a default); override any key with LOGAGENT_<SECTION>_<KEY> environment variables, or
# mount your own file over /etc/logagent/config.ini. See README.md, "Run as a sidecar".

FROM python:3.11-slim AS build
WORKDIR /src
# Only what the package needs: pyproject.toml reads README.md as its long description.
COPY pyproject.toml README.md ./
COPY logagent/ logagent/
# All dependencies ship manylinux wheels: no compiler needed. No test extras.
RUN python -m venv /opt/logagent \
    && /opt/logagent/bin/pip install --no-cache-dir . \
    && /opt/logagent/bin/logagent --version

FROM python:3.11-slim
# Fixed non-root uid/gid, so Kubernetes' runAsNonRoot can check it and volumes can be
# prepared for it (fsGroup 10001).
RUN groupadd --system --gid 10001 logagent \
    && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /var/lib/logagent \
       --shell /usr/sbin/nologin logagent \
    && install -d -o 10001 -g 10001 -m 0700 /var/lib/logagent
COPY --from=build /opt/logagent /opt/logagent
COPY config.ini /etc/logagent/config.ini

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

# No curl in the slim image: ask /healthz with the interpreter that is there.
# (If you change LOGAGENT_AGENT_HTTP_LISTEN, change the port here too.)
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import sys, urllib.request; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:9798/healthz', timeout=4).status == 200 else 1)"]

# SIGTERM (Docker's and Kubernetes' default) makes the agent drain its queue to Kafka for
# up to [agent] shutdown_timeout (30 s): give the container more than that to stop
# (`docker stop -t 40`, terminationGracePeriodSeconds: 45).
STOPSIGNAL SIGTERM
ENTRYPOINT ["logagent", "run"]
CMD ["-c", "/etc/logagent/config.ini"]
