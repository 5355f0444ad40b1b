"""What comes in and goes out: photos (decoding, bounds, geometry), models (sources, weights, the default
layer) and files (atomic writes)."""
