"""Shared plumbing: atomic files and hashing (`fileio`), the image codec (`codec`),
parquet tables (`tables`) and the per-content result cache (`cache`)."""
