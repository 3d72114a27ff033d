"""The face pipeline, one module per stage: `detect` -> `matte` -> `align` -> `curate` ->
`pack`. The backends they use live beside them (`detectors`, `mattes`, `anime_matte`)."""
