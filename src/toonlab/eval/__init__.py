"""Evaluation: `evaluate` (metrics of trained runs), `metrics` and `inception` (FID/KID,
landmark and identity preservation, PSNR/SSIM), `ablations` (named variants) and
`report` (the HTML report). Light on import: the modules load torch only when used."""
