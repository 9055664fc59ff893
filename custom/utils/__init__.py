from .io import atomic_path, check_output_path

__all__ = ["atomic_path", "check_output_path"]
