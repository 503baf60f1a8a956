"""mmkit's internal modules: no stability promise; import the public API from `mmkit`."""
