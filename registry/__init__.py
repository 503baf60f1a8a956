"""The model registry: named, versioned model cards (TOML) shipped with mmkit."""
