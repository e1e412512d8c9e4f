# One image for every process of the stack; docker-compose.yml picks the command (gunicorn by
# default, the Celery worker, beat, the migrations).
FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 \
    STATIC_ROOT=/app/staticfiles MEDIA_ROOT=/data/media
WORKDIR /app
RUN useradd --create-home --uid 10001 app
COPY requirements/ requirements/
RUN pip install --no-cache-dir -r requirements/base.txt "gunicorn>=23"
COPY . .
# Hashed, compressed static files baked into the image, served by WhiteNoise. The throw-away key
# only lets the settings load: DEBUG stays off, so the manifest storage writes staticfiles.json.
RUN DJANGO_SECRET_KEY=collectstatic-only python manage.py collectstatic --noinput \
 && mkdir -p /app/var /data/media && chown app:app /app/var /data/media
USER app
EXPOSE 8000
# One gunicorn process unless WEB_CONCURRENCY says more (gunicorn reads it): the embedded index
# (no QDRANT_URL) serves a single process (similarity.E011); threads serve concurrent requests.
# With the Qdrant server (docker-compose.yml) several processes are fine.
CMD ["gunicorn", "config.wsgi", "--bind", "0.0.0.0:8000", "--threads", "8", "--access-logfile", "-"]
