"""cimc: a compiler from transformer models to a digital SRAM compute-in-memory accelerator."""

__version__ = "0.1.0"
