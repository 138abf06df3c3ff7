"""The training application: face-model builder and the Lightning trainer of the regressor."""
