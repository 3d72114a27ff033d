"""Model families, one package each (`<name>/params.py`: its params.yaml section;
`<name>/model.py`: networks, losses, the training recipe and inference), listed once in
`registry.FAMILIES`. Shared pieces: `common` (init, Adam, the recipes' base), `losses`,
`data_params` (the data sections' pieces). Importing this package loads nothing heavy."""
