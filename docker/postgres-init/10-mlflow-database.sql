-- The MLflow server's own database, next to the Optuna one (POSTGRES_DB); both belong to POSTGRES_USER.
CREATE DATABASE mlflow;
