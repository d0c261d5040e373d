"""The search: space, study files, the Optuna objective and study, the budget loop, storages, workers, keras-tuner."""
