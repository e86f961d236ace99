# tornado-pubsub: docker build -t tornado-pubsub . && docker run -p 8080:8080 tornado-pubsub
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PUBSUB_ADDRESS=0.0.0.0 \
    PUBSUB_PORT=8080

WORKDIR /app
COPY requirements.txt .
RUN pip install -r requirements.txt

COPY tornado_pubsub/ tornado_pubsub/
COPY handlers/ handlers/
COPY conf/ conf/

# Never run as root: the server needs no privilege (8080 is unprivileged).
RUN useradd --system --uid 10001 --no-create-home pubsub
USER pubsub

EXPOSE 8080

# /health answers 503 while draining, so orchestrators stop routing to us.
HEALTHCHECK --interval=10s --timeout=3s --start-period=5s --retries=3 \
    CMD python -c "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/health' % os.environ.get('PUBSUB_PORT', '8080'), timeout=2)" || exit 1

# Exec form: the server is PID 1 and handles SIGTERM itself (graceful drain,
# close 1001, exit 0). Give `docker stop -t` more than shutdown_timeout + 1 s.
STOPSIGNAL SIGTERM
ENTRYPOINT ["python", "-m", "tornado_pubsub"]
CMD ["--config=conf/pubsub.conf"]
