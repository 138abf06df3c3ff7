"""Loaders of third-party face-model formats; each module registers its format on import."""
