"""Where base models come from: the catalog, downloads, checkpoints, MONAI bundles, model folders."""
