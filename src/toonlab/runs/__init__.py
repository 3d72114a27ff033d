"""Trained runs: what training leaves behind, read back for everything that uses it.

`load`: find a run (a name under `train.out_dir`, a run folder or a checkpoint file),
read its checkpoint and rebuild its family's inference networks; `discover`: the runs a
folder holds and their families; `inference`: the `Inference` contract that a family's
`inference(params, nets)` returns; `precision`: the
inference precision of those networks on CPU (`runtime.cpu_precision`); `generate`:
images from an unconditional run (`toonlab generate`). `toonlab.train` writes runs;
`toonlab.eval` and `toonlab.apps` read them through this package only. Light to import:
torch is loaded by the functions that need it."""
