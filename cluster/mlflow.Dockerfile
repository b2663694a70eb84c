# syntax=docker/dockerfile:1
#
# A small image for the MLflow tracking server of cluster/kuberay/20-mlflow.yaml (the server needs
# no torch or Ray; the 8 GB node image would only slow its start).
#
#   docker build -f cluster/mlflow.Dockerfile -t <registry>/ldm-frontier-mlflow:3.17.2 cluster/
#
# The server version must match the clients in the node image (pyproject.toml pins mlflow 3.17.2;
# 3.18.0 is not installable because its mlflow-skinny is missing on PyPI).
FROM python:3.11-slim

ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONUNBUFFERED=1

# psycopg2-binary: the PostgreSQL backend store; boto3: an s3:// --artifacts-destination.
RUN pip install "mlflow==3.17.2" "psycopg2-binary==2.9.13" "boto3==1.44.8" \
 && useradd --create-home --uid 1000 mlflow

# Not root: the server only needs its port and the artifact directory on the shared volume.
USER 1000
EXPOSE 5000
ENTRYPOINT ["mlflow", "server"]
