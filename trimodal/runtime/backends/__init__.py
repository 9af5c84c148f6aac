"""Code behind the Triton Python-backend models (imported by the rendered model.py shims)."""
