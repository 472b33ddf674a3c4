# A stand-in for the official postgres:16 image (the Airflow metadata DB of docker-compose.yaml),
# for machines that cannot pull from a registry; docker/standin/service-image.sh builds it. Users
# never need it. It is PostgreSQL 15, Debian bookworm's own (bookworm packages no 16; Airflow 3
# supports both), with what the compose file relies on from the official image: POSTGRES_USER,
# POSTGRES_PASSWORD and POSTGRES_DB create the role and database on first start, the data in
# /var/lib/postgresql/data (a volume), password authentication from other containers, and
# pg_isready for the health check.
ARG PYTHON_BASE=recsys-standin/python:3.11-slim
FROM ${PYTHON_BASE}

# No default cluster: the entry point creates its own in PGDATA, as the official image does.
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends postgresql-common \
    && sed -ri 's/#?\s*create_main_cluster\s*=.*/create_main_cluster = false/' \
        /etc/postgresql-common/createcluster.conf \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends postgresql-15 \
    && rm -rf /var/lib/apt/lists/* \
    && mkdir -p /var/lib/postgresql/data /var/run/postgresql \
    && chown -R postgres:postgres /var/lib/postgresql /var/run/postgresql \
    && chmod 700 /var/lib/postgresql/data

ENV PATH=/usr/lib/postgresql/15/bin:$PATH \
    PGDATA=/var/lib/postgresql/data
COPY postgres-entrypoint.sh /usr/local/bin/postgres-entrypoint.sh
USER postgres
VOLUME /var/lib/postgresql/data
EXPOSE 5432
ENTRYPOINT ["/usr/local/bin/postgres-entrypoint.sh"]
CMD ["postgres"]
