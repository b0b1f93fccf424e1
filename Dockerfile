# pullwatch operator image.
#   docker build -t pullwatch:0.1.0 .                                  # on the official Python base
#   bash hack/build-image.sh                                           # podman, on a Debian-built base
# Stage 1 installs the package and its dependencies into a virtual environment (Debian's Python
# refuses pip outside one, PEP 668; the official image does not mind); stage 2 copies that venv
# into a clean image of the same base, which runs as an unprivileged user with nothing else in it.
ARG BASE=python:3.11-slim

FROM ${BASE} AS build
WORKDIR /src
# The dependencies first, in a layer of their own: it is built again only when pyproject.toml
# changes, not on every change to the source (tomllib: Python >= 3.11, as both bases have).
COPY pyproject.toml ./
RUN python3 -m venv /opt/pullwatch \
 && python3 -c "import tomllib; print(*tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies'], sep='\n')" > /tmp/requirements.txt \
 && /opt/pullwatch/bin/pip install --no-cache-dir --disable-pip-version-check -r /tmp/requirements.txt
COPY README.md ./
COPY operator ./operator
RUN /opt/pullwatch/bin/pip install --no-cache-dir --disable-pip-version-check --no-deps . \
 && find /opt/pullwatch -name '__pycache__' -prune -exec rm -rf {} +

FROM ${BASE}
RUN groupadd --system --gid 10001 pullwatch \
 && useradd --system --uid 10001 --gid 10001 --no-create-home --shell /usr/sbin/nologin pullwatch
COPY --from=build /opt/pullwatch /opt/pullwatch
ENV PATH=/opt/pullwatch/bin:$PATH PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
# The manifests run it with readOnlyRootFilesystem: nothing is written outside /tmp.
USER 10001:10001
EXPOSE 8080 9090
ENTRYPOINT ["pullwatch", "run"]
