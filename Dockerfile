# syntax=docker/dockerfile:1
# One image for every cityhall service: `cityhall serve <service>`, `cityhall migrate <service>`.

FROM python:3.11-slim-bookworm AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
RUN python -m venv /opt/venv && /opt/venv/bin/pip install "uv==0.13.8"
WORKDIR /src
# What production runs and nothing more: no test tools, no embedded NATS or PostgreSQL (those
# are the local stack's, requirements.lock); docs/deploy.md has the sizes.
COPY requirements-runtime.lock pyproject.toml README.md ./
RUN /opt/venv/bin/uv pip install --python /opt/venv/bin/python --require-hashes \
        -r requirements-runtime.lock
COPY contracts ./contracts
COPY services ./services
COPY cityhall ./cityhall
RUN /opt/venv/bin/uv pip install --python /opt/venv/bin/python --no-deps . \
    && /opt/venv/bin/pip uninstall --yes uv pip

FROM python:3.11-slim-bookworm
LABEL org.opencontainers.image.title="cityhall" \
      org.opencontainers.image.description="Koriyama digital city hall services"
# A fixed, unprivileged user; the file system can be mounted read-only (nothing is written).
RUN groupadd --system --gid 10001 cityhall \
    && useradd --system --uid 10001 --gid cityhall --no-create-home --shell /usr/sbin/nologin cityhall
COPY --from=build /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HTTP_HOST=0.0.0.0 \
    LOG_FORMAT=json
USER 10001:10001
EXPOSE 8000
ENTRYPOINT ["cityhall"]
CMD ["serve", "applications"]
