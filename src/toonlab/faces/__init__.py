"""The face pipeline, one module per stage: `detect` -> `matte` -> `align` -> `curate` ->
`pack` (+ `curate_report`, `review_decisions`: the human review file). The backends they
use live beside them: `detectors` (detect), `matte_backends` and `matte_floodfill` (matte)."""
