"""HTTP: one router package per API dialect, sharing auth, errors and streams."""
