"""What people run on trained models: `cartoonize` (photos to cartoons), `export`
(ONNX with a parity check) and `serve` (the local web page)."""
