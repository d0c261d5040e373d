"""A trained model out of MLflow: export to a folder, predict Hodge numbers from it."""
