# A stand-in for the official apache/airflow:3.3.2-python3.11 image, for machines that cannot pull
# from a registry (docker/standin/airflow-base.sh builds it). Users never need it. It has what
# docker/airflow/Dockerfile and docker-compose.yaml rely on: the python stand-in underneath, the
# `airflow` user (uid 50000, group 0, home /home/airflow), AIRFLOW_HOME=/opt/airflow with its
# dags/, logs/ and plugins/ (the compose file's volumes take their ownership from them), pip
# installing into the user's site (PIP_USER) with ~/.local/bin on PATH, AIRFLOW_VERSION, curl for
# the health checks, and Airflow with the providers this project uses (the official image ships
# them too: google, slack, docker, postgres, standard) at the versions of the project's lock, so
# that docker/airflow/Dockerfile finds them installed as it does on the official image.
# uv installs them (in parallel: pip took 4 minutes here) and is removed again.
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
    && mkdir -p /opt/airflow/dags /opt/airflow/logs /opt/airflow/plugins \
    && chown -R airflow:0 /opt/airflow \
    && chmod -R g+rwX /opt/airflow

USER airflow
WORKDIR /opt/airflow
ARG UV_VERSION=0.13.8
COPY requirements.lock /tmp/requirements.lock
RUN pip install -q "uv==${UV_VERSION}" \
    && ~/.local/bin/uv pip install -q --no-cache --compile-bytecode --python /usr/local/bin/python3.11 \
        --prefix /home/airflow/.local --no-deps -r /tmp/requirements.lock \
    && pip uninstall -q -y uv
