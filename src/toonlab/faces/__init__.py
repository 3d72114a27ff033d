"""Face pipeline: detection and landmarks, background removal, alignment, per domain."""
