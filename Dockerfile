# tornado-pubsub: docker build -t tornado-pubsub . && docker run -p 8080:8080 tornado-pubsub
# With nginx and Redis in front of two processes: docker compose up --build (docker-compose.yml).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PUBSUB_ADDRESS=0.0.0.0 \
    PUBSUB_PORT=8080

# Dependencies first, in their own layer: a code change does not reinstall them.
# The ranges come from requirements.txt, the exact versions from constraints.txt
# (the pins CI tests), so an image built today runs what the tests ran.
WORKDIR /src
COPY requirements.txt constraints.txt ./
RUN pip install -c constraints.txt -r requirements.txt

# The package itself, installed: `python -m tornado_pubsub` and the `pubsub`
# command line both work in the container (docker exec ... pubsub topics).
# handlers/ and conf/ reach the package through its symlinks.
COPY pyproject.toml .
COPY tornado_pubsub/ tornado_pubsub/
COPY handlers/ handlers/
COPY conf/ conf/
RUN pip install --no-deps . && pubsub --version && python -m tornado_pubsub --version

# The config file the default command reads; the checkout itself is not needed.
WORKDIR /app
RUN cp -r /src/conf /app/conf && rm -rf /src

# Never run as root: the server needs no privilege (8080 is unprivileged).
RUN useradd --system --uid 10001 --no-create-home pubsub
USER pubsub

EXPOSE 8080

# /health answers 503 while draining, so orchestrators stop routing to us.
# The probe reads the server's own command line, environment and config file
# (PID 1's, from /proc), so it follows the port however it was configured.
HEALTHCHECK --interval=10s --timeout=3s --start-period=5s --retries=3 \
    CMD ["python", "-m", "tornado_pubsub.server.healthcheck"]

# Exec form: the server is PID 1 and handles SIGTERM itself (graceful drain,
# close 1001, exit 0). Give `docker stop -t` more than shutdown_timeout + 1 s.
STOPSIGNAL SIGTERM
ENTRYPOINT ["python", "-m", "tornado_pubsub"]
CMD ["--config=conf/pubsub.conf"]
