"""Backend: tiling, weight-stationary mapping, weight streaming, bounds (and later emission)."""
