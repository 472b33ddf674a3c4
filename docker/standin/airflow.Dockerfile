# A stand-in for the official apache/airflow:3.3.2-python3.11 image, for machines that cannot pull
# from a registry (docker/standin/airflow-base.sh builds it). Users never need it. It has what
# docker/airflow/Dockerfile and docker-compose.yaml rely on: the python stand-in underneath, the
# `airflow` user (uid 50000, group 0, home /home/airflow), AIRFLOW_HOME=/opt/airflow, pip
# installing into the user's site (PIP_USER) with ~/.local/bin on PATH, AIRFLOW_VERSION, and curl
# for the health checks. Airflow itself comes from the project's lock in docker/airflow/Dockerfile.
ARG PYTHON_BASE=recsys-standin/python:3.11-slim
FROM ${PYTHON_BASE}

ENV AIRFLOW_VERSION=3.3.2 \
    AIRFLOW_HOME=/opt/airflow \
    AIRFLOW_USER_HOME_DIR=/home/airflow \
    PIP_USER=true \
    PIP_NO_CACHE_DIR=1 \
    PATH=/home/airflow/.local/bin:/usr/local/bin:/usr/local/sbin:/usr/sbin:/usr/bin:/sbin:/bin

RUN apt-get update \
    && apt-get install -y --no-install-recommends curl libpq5 \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --uid 50000 --gid 0 --home-dir /home/airflow --create-home --shell /bin/bash airflow \
    && mkdir -p /opt/airflow \
    && chown -R airflow:0 /opt/airflow \
    && chmod -R g+rwX /opt/airflow

USER airflow
WORKDIR /opt/airflow
