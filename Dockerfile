# The gateway's image for compose.yaml (docs/deploy.md, "With containers"): the exact
# versions of requirements/main.txt, checked against their hashes, and a user of its own.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

RUN useradd --system --uid 10001 --user-group --home-dir /var/lib/b24gate \
        --shell /usr/sbin/nologin b24gate \
    && install -d -m 0700 -o b24gate -g b24gate /var/lib/b24gate

# The lock first, so that a change of the source alone reuses this layer.
COPY requirements/main.txt /opt/b24gate/requirements/main.txt
RUN python -m venv /opt/b24gate/venv \
    && /opt/b24gate/venv/bin/pip install --require-hashes -r /opt/b24gate/requirements/main.txt

# The project itself: nothing unpinned comes in (--no-deps), and the pinned hatchling
# builds it (--no-build-isolation), as in the README.
COPY pyproject.toml README.md LICENSE /opt/b24gate/src/
COPY src /opt/b24gate/src/src
RUN /opt/b24gate/venv/bin/pip install --no-deps --no-build-isolation /opt/b24gate/src

ENV PATH=/opt/b24gate/venv/bin:$PATH \
    B24GATE_DATA_DIR=/var/lib/b24gate
USER b24gate
WORKDIR /var/lib/b24gate
EXPOSE 8080
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8080/healthz', timeout=2)"]
ENTRYPOINT ["b24gate"]
CMD ["serve", "--host", "0.0.0.0", "--port", "8080"]
