"""The ugatit family: `params` (its params.yaml section, light) and `model` (networks, recipe, inference)."""
