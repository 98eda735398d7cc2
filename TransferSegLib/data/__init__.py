"""Cases on disk and their preprocessing: image/labelmap I/O, cases and manifests, recipes, sample data."""
