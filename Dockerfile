# One image for the web process and the workers; compose.yaml picks the command.
FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 VAR_DIR=/data
WORKDIR /app
COPY pyproject.toml README.md ./
COPY webapp webapp
COPY trainer trainer
COPY workers workers
COPY loraworks_cli loraworks_cli
COPY templates templates
COPY manage.py ./
# torch is pinned to 2.13.0 in pyproject.toml; TORCH_INDEX picks its build: the CPU one by default, a CUDA one with
# --build-arg TORCH_INDEX=https://download.pytorch.org/whl/cu128 (compose.yaml passes that to the training workers).
ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu
RUN pip install --extra-index-url "$TORCH_INDEX" . && useradd --create-home loraworks && mkdir -p /data \
    && chown loraworks /data
USER loraworks
EXPOSE 8000
CMD ["gunicorn", "webapp.wsgi", "-c", "python:webapp.gunicorn_conf", "--bind", "0.0.0.0:8000"]
