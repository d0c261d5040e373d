#!/bin/sh
# Container entry point: build the database URLs from the PostgreSQL password (a secret file or a
# variable), so that no URL holding a password is written anywhere, then run the command:
# `mlflow ...`, `optuna-dashboard ...` and shells as given, anything else as `cicy-search ...`.
set -eu

if [ -n "${POSTGRES_PASSWORD_FILE:-}" ] && [ -r "${POSTGRES_PASSWORD_FILE}" ]; then
    POSTGRES_PASSWORD=$(cat "${POSTGRES_PASSWORD_FILE}")
fi
if [ -n "${POSTGRES_PASSWORD:-}" ]; then
    password=$(POSTGRES_PASSWORD="${POSTGRES_PASSWORD}" python -c \
        'import os, urllib.parse; print(urllib.parse.quote(os.environ["POSTGRES_PASSWORD"], safe=""))')
    server="postgresql+psycopg2://${POSTGRES_USER:-cicy}:${password}@${POSTGRES_HOST:-postgres}:${POSTGRES_PORT:-5432}"
    export CICY_STORAGE="${CICY_STORAGE:-${server}/${POSTGRES_DB:-optuna}}"
    export MLFLOW_BACKEND_STORE_URI="${MLFLOW_BACKEND_STORE_URI:-${server}/${MLFLOW_DB:-mlflow}}"
    unset POSTGRES_PASSWORD password server
fi

case "${1:-}" in
    mlflow | optuna-dashboard | python | sh | bash) exec "$@" ;;
    *) exec cicy-search "$@" ;;
esac
