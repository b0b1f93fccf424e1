# pullwatch operator image. Build: docker build -t pullwatch:0.1.0 .
# Stage 1 builds wheels (the package and its dependencies); stage 2 installs them into a clean
# slim image that runs as an unprivileged user with nothing else in it.
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY operator ./operator
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

FROM python:3.11-slim
RUN groupadd --system --gid 10001 pullwatch \
 && useradd --system --uid 10001 --gid 10001 --no-create-home --shell /usr/sbin/nologin pullwatch
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir --no-index --find-links=/wheels pullwatch \
 && rm -rf /wheels
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
# The manifests run it with readOnlyRootFilesystem: nothing is written outside /tmp.
USER 10001:10001
EXPOSE 8080
ENTRYPOINT ["pullwatch", "run"]
