# syntax=docker/dockerfile:1
# wxkf in a container: `docker build -t wxkf .`, then `docker compose up` (compose.yaml) or
#   docker run -e DATABASE_URL=postgresql://… -p 8000:8000 wxkf
# Every command here is one the test suite runs (tests/unit/test_deployment_files.py checks them).

# --- build: the wheels of wxkf and its dependencies ---------------------------------------------
FROM python:3.11-slim-bookworm AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY src ./src
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

# --- run: the wheels installed, nothing to build with, a user of its own -----------------------
FROM python:3.11-slim-bookworm
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    WXKF_DATA_DIR=/var/lib/wxkf
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    pip install --no-cache-dir --no-index --find-links=/wheels wxkf \
 && groupadd --system --gid 10001 wxkf \
 && useradd --system --uid 10001 --gid wxkf --home-dir /var/lib/wxkf --create-home wxkf
USER wxkf
WORKDIR /var/lib/wxkf
EXPOSE 8000
# /ready: the database answers, a job worker is alive, the WeCom token can be had (wxkf.ops.health).
HEALTHCHECK --interval=30s --timeout=10s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/ready', timeout=8)"]
# SIGTERM stops the processes gracefully (in-flight requests and jobs finish, within a bound).
STOPSIGNAL SIGTERM
ENTRYPOINT ["wxkf"]
CMD ["serve", "--host", "0.0.0.0", "--port", "8000"]
